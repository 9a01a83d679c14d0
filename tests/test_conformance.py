"""Every registered estimator passes mi_probe.testing.check_estimator; broken ones do not."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings

import mi_probe
from mi_probe.errors import InputError
from mi_probe.estimator import Estimate, Estimator
from mi_probe.params import Param
from mi_probe.testing import CHECKS, check_estimator, dependent_pairs, independent_pairs

# Parameter overrides that keep slow estimators fast here (their own defaults are tested
# by their authors). Estimators missing from this dict run with their defaults.
FAST_PARAMS: dict[str, dict] = {
    "mine": {"max_epochs": 6, "hidden": 16, "lr": 1e-2, "batch_size": 64},
}


def registered_names() -> list[str]:
    with warnings.catch_warnings():  # estimators still being written fail to import
        warnings.simplefilter("ignore")
        return [info.name for info in mi_probe.estimators()]


@pytest.mark.parametrize("name", registered_names())
def test_registered_estimator_conforms(name):
    assert check_estimator(name, FAST_PARAMS.get(name, {})) == list(CHECKS)


# -- a small correct estimator and broken variants of it ------------------------------------
def _logdet(m: np.ndarray) -> float:
    return float(np.linalg.slogdet(np.atleast_2d(m))[1])


class GaussianMI(Estimator):
    """I = ½ (log det Σ_x + log det Σ_y − log det Σ); labels are one-hot coded."""

    name = "toy-gaussian"
    description = "Gaussian MI from sample covariances (test fixture)"
    symmetric = True

    def min_samples(self, params):
        return 10

    def y_matrix(self, y):
        if y.kind == "continuous":
            return y.values
        return np.eye(y.n_classes)[y.values][:, :-1]

    def compute(self, x, y, params):
        yv = self.y_matrix(y)
        c = np.cov(np.hstack([x, yv]), rowvar=False)
        d = x.shape[1]
        return Estimate(0.5 * (_logdet(c[:d, :d]) + _logdet(c[d:, d:]) - _logdet(c)))


class OrderDependent(GaussianMI):
    name = "broken-order"

    def compute(self, x, y, params):
        half = x.shape[0] // 2
        return super().compute(x[:half], y.take(np.arange(half)), params)


class IgnoresSeed(GaussianMI):
    name = "broken-seed"
    randomized = True
    params = (Param("seed", int, 0, "ignored"),)

    def compute(self, x, y, params):
        jitter = np.random.default_rng().normal(size=x.shape) * 1e-3  # not seeded
        return super().compute(x + jitter, y, params)


class FalselySymmetric(GaussianMI):
    name = "broken-symmetry"

    def compute(self, x, y, params):
        return Estimate(super().compute(x, y, params).value + 0.01 * x.shape[1])


class PositiveBias(GaussianMI):
    name = "broken-bias"

    def compute(self, x, y, params):
        return Estimate(super().compute(x, y, params).value + 0.2)


class Constant(GaussianMI):
    name = "broken-constant"

    def compute(self, x, y, params):
        return Estimate(0.0)


class MutatesInput(GaussianMI):
    name = "broken-mutates"

    def compute(self, x, y, params):
        x -= x.mean(axis=0)  # in place: the caller's array changes
        return super().compute(x, y, params)


class CrashesOnFewSamples(GaussianMI):
    name = "broken-crash"

    def min_samples(self, params):
        return 3

    def compute(self, x, y, params):
        if x.shape[0] < 10:
            raise np.linalg.LinAlgError("singular matrix")
        return super().compute(x, y, params)


class ShuffledLayers(GaussianMI):
    name = "broken-layers"

    def compute_layers(self, xs, y, params):
        return [self.compute(x, y, params) for x in reversed(xs)]


class SeedlessRandomized(GaussianMI):
    name = "broken-metadata"
    randomized = True


class NotFinite(GaussianMI):
    name = "broken-nan"

    def compute(self, x, y, params):
        return Estimate(float("nan"))


class WrongErrorType(GaussianMI):
    name = "broken-error-type"

    def compute(self, x, y, params):
        if y.kind == "discrete":
            raise TypeError("labels not supported")  # should be InputError or y_kinds
        return super().compute(x, y, params)


def test_correct_estimator_passes_every_check():
    assert check_estimator(GaussianMI) == list(CHECKS)


@pytest.mark.parametrize(
    ("broken", "check"),
    [
        (OrderDependent, "check_permutation_invariance"),
        (IgnoresSeed, "check_determinism"),
        (FalselySymmetric, "check_symmetry"),
        (PositiveBias, "check_independence"),
        (Constant, "check_detects_dependence"),
        (MutatesInput, "check_returns_result"),
        (CrashesOnFewSamples, "check_rejects_bad_input"),
        (ShuffledLayers, "check_layers"),
        (SeedlessRandomized, "check_metadata"),
        (NotFinite, "check_returns_result"),
        (WrongErrorType, "check_returns_result"),
    ],
)
def test_check_estimator_catches_violation(broken, check):
    with pytest.raises(AssertionError, match=check):
        check_estimator(broken, skip=[c for c in CHECKS if c != check])
    # the same check passes on the correct estimator, so the failure is the violation's
    check_estimator(GaussianMI, skip=[c for c in CHECKS if c != check])


def test_wrong_error_type_for_bad_input_is_caught():
    class RaisesValueError(GaussianMI):
        name = "broken-bad-input"

        def check_params(self, params, x, y):
            if x.shape[0] < 10:
                raise ValueError("too small")  # not an MIProbeError

        def min_samples(self, params):
            return 2

    with pytest.raises(AssertionError, match="check_rejects_bad_input.*ValueError"):
        check_estimator(RaisesValueError, skip=[c for c in CHECKS if c !=
                                                "check_rejects_bad_input"])


def test_params_override_reaches_the_estimator():
    class NeedsParam(GaussianMI):
        name = "toy-param"
        params = (Param("shift", float, 1.0, "added to the value"),)

        def compute(self, x, y, params):
            return Estimate(super().compute(x, y, params).value + params["shift"])

    with pytest.raises(AssertionError, match="check_independence"):
        check_estimator(NeedsParam, skip=["check_detects_dependence"])
    check_estimator(NeedsParam, {"shift": 0.0})


def test_unknown_check_name_is_rejected():
    with pytest.raises(ValueError, match="unknown checks"):
        check_estimator(GaussianMI, skip=["check_everything"])


def test_valid_input_errors_from_the_library_are_reported_as_failures():
    class RejectsEverything(GaussianMI):
        name = "broken-rejects"

        def compute(self, x, y, params):
            raise InputError("no")

    with pytest.raises(AssertionError, match="check_returns_result.*InputError"):
        check_estimator(RejectsEverything)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(dependent_pairs(y_kind="discrete"))
def test_dependent_label_pairs(pair):
    assert pair.y.shape == (pair.n,) and pair.y.dtype == np.int64
    assert len(np.unique(pair.y)) == pair.d_y + 1
    assert pair.dependent


@settings(max_examples=10, deadline=None, derandomize=True)
@given(independent_pairs(n=50, y_kind="continuous"))
def test_independent_continuous_pairs(pair):
    assert pair.x.shape[0] == pair.y.shape[0] == 50 and pair.y.shape[1] == pair.d_y
    assert not pair.dependent
