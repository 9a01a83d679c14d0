"""The core contract: parameters, data validation, units, MIResult, registry, `mi-probe mi`."""

from __future__ import annotations

import importlib.metadata as md
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from mi_probe.cli.app import app
from typer.testing import CliRunner

import mi_probe
from mi_probe.api import prepare
from mi_probe.data import as_matrix, as_target, check_pair
from mi_probe.errors import (
    FileFormatError,
    InputError,
    MIProbeError,
    ParameterError,
    UnknownEstimatorError,
)
from mi_probe.estimator import Estimate, Estimator
from mi_probe.hookspecs import hookimpl
from mi_probe.params import Param, parse_key_values, resolve_params
from mi_probe.registry import (
    PluginWarning,
    Registry,
    get_registry,
    register_plugin,
    unregister_plugin,
)
from mi_probe.result import MIResult, convert_unit


def sample(n=60, d_x=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d_x))
    return x, x[:, :2] + 0.3 * rng.normal(size=(n, 2))


# -- parameters ---------------------------------------------------------------------------
def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(ParameterError) as err:
        mi_probe.estimate(*sample(), "renyi", sigmaa=2.0)
    msg = str(err.value)
    assert "'sigmaa'" in msg and "renyi" in msg
    for name in ("alpha", "kernel", "sigma", "normalize"):
        assert f"{name} (" in msg


@pytest.mark.parametrize(
    ("name", "value"),
    [("alpha", -1.0), ("alpha", 0.0), ("alpha", "abc"), ("alpha", float("nan")),
     ("alpha", True), ("kernel", "cosine"), ("sigma", "mean"), ("degree", 1.5),
     ("degree", True), ("degree", 0), ("normalize", "maybe"), ("normalize", 2),
     ("precision", "float16")],
)
def test_bad_parameter_values_are_rejected(name, value):
    with pytest.raises(ParameterError, match=f"parameter '{name}'"):
        mi_probe.estimate(*sample(), "renyi", **{name: value})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("True", True), ("YES", True), ("on", True), ("1", True), (1, True),
     ("false", False), ("No", False), ("off", False), ("0", False), (False, False)],
)
def test_bool_strings(text, expected):
    assert Param("flag", bool, True, "a switch").coerce(text) is expected


def test_strings_from_the_command_line_are_converted():
    est = mi_probe.get_estimator("renyi")
    got = resolve_params("renyi", est.params, {"alpha": "2", "degree": "3", "sigma": "median",
                                               "y_sigma": "none", "normalize": "off"})
    assert got["alpha"] == 2.0 and got["degree"] == 3 and got["sigma"] == "median"
    assert got["y_sigma"] is None and got["normalize"] is False
    assert got["kernel"] == "gaussian"  # defaults filled in


def test_parse_key_values():
    assert parse_key_values(["k=3", " alpha = 2 ", "path=a=b"]) == {
        "k": "3", "alpha": "2", "path": "a=b"}
    for bad in ("k", "=3"):
        with pytest.raises(ParameterError, match="key=value"):
            parse_key_values([bad])


# -- data validation ----------------------------------------------------------------------
def test_nan_and_inf_are_rejected_with_the_row():
    x, y = sample()
    x[7, 1] = np.nan
    with pytest.raises(InputError, match="row 7"):
        mi_probe.estimate(x, y)
    x, y = sample()
    y[4, 0] = np.inf
    with pytest.raises(InputError, match="y contains NaN or inf"):
        mi_probe.estimate(x, y)


@pytest.mark.parametrize("bad", [np.zeros((4, 3, 2)), np.zeros((0, 3)), np.zeros((5, 0))])
def test_bad_shapes(bad):
    with pytest.raises(InputError):
        as_matrix(bad)


def test_mismatched_n_and_too_few_samples():
    x, y = sample()
    with pytest.raises(InputError, match="x has 60, y has 59"):
        mi_probe.estimate(x, y[:-1])
    with pytest.raises(InputError, match="at least 2 samples"):
        mi_probe.estimate(x[:1], y[:1])


@pytest.mark.parametrize("bad", [np.array([["a", "b"], ["c", "d"]]), [[1, 2], [3]],
                                 np.ones((3, 2)) * 1j])
def test_non_numeric_input(bad):
    with pytest.raises(InputError):
        as_matrix(bad)


def test_one_d_x_is_one_feature_and_float32_stays_float32():
    assert as_matrix(np.arange(5)).shape == (5, 1)
    assert as_matrix(np.ones((3, 2), np.float32)).dtype == np.float32
    assert as_matrix(np.ones((3, 2), np.int8)).dtype == np.float64


@pytest.mark.parametrize(
    ("y", "y_kind", "kind"),
    [(np.array([1, 0, 2, 2]), None, "discrete"),
     (np.array([True, False, True, True]), None, "discrete"),
     (np.array([1.0, 0.0, 2.0, 2.0]), None, "continuous"),
     (np.array([[1], [0], [2], [2]]), None, "continuous"),
     (np.array([1.0, 0.0, 2.0, 2.0]), "discrete", "discrete"),
     (np.array([[1], [0], [2], [2]]), "discrete", "discrete"),
     (np.array([1, 0, 2, 2]), "continuous", "continuous")],
)
def test_y_kind_inference(y, y_kind, kind):
    assert as_target(y, y_kind).kind == kind


def test_discrete_target_codes_and_take():
    t = as_target(np.array([10, 30, 10, 20, 30]))
    assert t.n_classes == 3 and t.values.tolist() == [0, 2, 0, 1, 2]
    sub = t.take(np.array([1, 3]))
    assert sub.n_classes == 2 and sub.labels.tolist() == [20, 30]


@pytest.mark.parametrize("y", [np.array([0.5, 1.0, 2.0]), np.array([[1, 2], [3, 4], [5, 6]])])
def test_bad_discrete_y(y):
    with pytest.raises(InputError):
        as_target(y, "discrete")


def test_unknown_y_kind():
    with pytest.raises(InputError, match="y_kind"):
        as_target(np.arange(3), "ordinal")


def test_torch_tensors_give_the_numpy_value():
    x, y = sample()
    labels = (x[:, 0] > 0).astype(np.int64)
    expected = mi_probe.estimate(x, y).value
    assert mi_probe.estimate(torch.as_tensor(x), torch.as_tensor(y)).value == expected
    lab = mi_probe.estimate(torch.as_tensor(x), torch.as_tensor(labels))
    assert lab.y_kind == "discrete"
    assert lab.value == mi_probe.estimate(x, labels).value
    bf16 = torch.as_tensor(x).to(torch.bfloat16)
    assert mi_probe.estimate(bf16, y).value == pytest.approx(expected, abs=0.05)


def test_check_pair_direct():
    x, y = sample()
    check_pair(x, as_target(y), 2, "renyi")
    with pytest.raises(InputError, match="needs at least 100"):
        check_pair(x, as_target(y), 100, "renyi")


# -- units and results --------------------------------------------------------------------
def test_bits_are_nats_over_ln2():
    x, y = sample()
    nats = mi_probe.estimate(x, y)
    bits = mi_probe.estimate(x, y, unit="bits")
    assert bits.unit == "bits"
    assert bits.value == pytest.approx(nats.value / math.log(2), rel=1e-12)
    # entropies in extras are information quantities too
    assert bits.extras["entropy_x"] == pytest.approx(nats.extras["entropy_x"] / math.log(2))
    assert bits.extras["sigma_x"] == nats.extras["sigma_x"]  # a width, not converted
    assert convert_unit(math.log(2), "bits") == pytest.approx(1.0)
    with pytest.raises(ParameterError, match="unknown unit"):
        mi_probe.estimate(x, y, unit="furlongs")


def test_mi_result_fields_and_json():
    x, y = sample()
    res = mi_probe.estimate(x, y, "renyi", alpha=2)
    assert isinstance(res, MIResult)
    assert (res.estimator, res.n, res.d_x, res.d_y, res.y_kind) == ("renyi", 60, 3, 2,
                                                                    "continuous")
    assert res.params["alpha"] == 2.0 and res.params["kernel"] == "gaussian"
    assert res.seconds >= 0 and float(res) == res.value
    back = json.loads(json.dumps(res.to_dict()))
    assert back["value"] == res.value and back["params"] == res.params


def test_labels_report_d_y_one():
    x, _ = sample()
    res = mi_probe.estimate(x, (x[:, 0] > 0).astype(int))
    assert (res.y_kind, res.d_y) == ("discrete", 1)


def test_estimator_that_does_not_take_a_y_kind():
    class ContinuousOnly(Estimator):
        name = "continuous-only"
        description = "test"
        y_kinds = frozenset({"continuous"})

        def compute(self, x, y, params):
            return Estimate(0.0)

    x, _ = sample()
    with pytest.raises(InputError, match="does not accept discrete y"):
        mi_probe.estimate(x, np.zeros(60, int), ContinuousOnly)
    assert mi_probe.estimate(x, np.zeros(60, int), ContinuousOnly,
                             y_kind="continuous").value == 0.0


def test_estimate_layers_accepts_a_3d_array():
    x, y = sample()
    stack = np.stack([x, x * 2, -x])
    res = mi_probe.estimate_layers(stack, y)
    assert len(res) == 3
    with pytest.raises(InputError, match="at least one"):
        mi_probe.estimate_layers([], y)


# -- registry -----------------------------------------------------------------------------
class ConstantEstimator(Estimator):
    name = "test-constant"
    description = "always 0.25 nats"
    params = (Param("value", float, 0.25, "what to return"),)

    def compute(self, x, y, params):
        return Estimate(params["value"], extras={"echo_nats": params["value"]})


class GoodPlugin:
    @hookimpl
    def register_estimators(self, register):
        register(ConstantEstimator)


class BrokenPlugin:
    @hookimpl
    def register_estimators(self, register):
        raise RuntimeError("boom")


def test_register_and_unregister_a_runtime_plugin():
    info = register_plugin(GoodPlugin(), name="test-good")
    try:
        assert info.estimators == ["test-constant"]
        assert "test-constant" in [e.name for e in mi_probe.estimators()]
        res = mi_probe.estimate(*sample(), "test-constant", value="0.5", unit="bits")
        assert res.value == pytest.approx(0.5 / math.log(2))
        assert res.extras["echo"] == pytest.approx(0.5 / math.log(2))
    finally:
        unregister_plugin("test-good")
    assert "test-constant" not in [e.name for e in mi_probe.estimators()]
    with pytest.raises(UnknownEstimatorError, match="registered estimators: .*renyi"):
        mi_probe.get_estimator("test-constant")


def test_broken_plugin_warns_once_and_the_rest_keeps_working():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        register_plugin(BrokenPlugin(), name="test-broken")
    try:
        ours = [w for w in caught if issubclass(w.category, PluginWarning)]
        assert len(ours) == 1
        assert "test-broken" in str(ours[0].message) and "boom" in str(ours[0].message)
        assert get_registry().plugins["test-broken"].error
        assert mi_probe.estimate(*sample(), "renyi").value > 0
        with pytest.raises(UnknownEstimatorError, match="failed to load: .*test-broken"):
            mi_probe.get_estimator("no-such-estimator")
    finally:
        unregister_plugin("test-broken")


def test_duplicate_estimator_name_is_refused():
    class Clash:
        @hookimpl
        def register_estimators(self, register):
            register(type("Renyi2", (ConstantEstimator,), {"name": "renyi"}))

    with pytest.warns(PluginWarning, match="already registered"):
        register_plugin(Clash(), name="test-clash")
    try:
        assert type(mi_probe.get_estimator("renyi")).__name__ == "RenyiEstimator"
    finally:
        unregister_plugin("test-clash")


def test_entry_point_that_fails_to_import(monkeypatch):
    eps = [md.EntryPoint("renyi", "mi_probe.plugins.renyi", "mi_probe"),
           md.EntryPoint("ghost", "no_such_module_for_mi_probe", "mi_probe")]
    monkeypatch.setattr(md, "entry_points", lambda group: eps)
    reg = Registry()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg.load_entry_points()
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert len(messages) == 1 and "'ghost'" in messages[0]
    assert "ModuleNotFoundError" in messages[0]
    assert "renyi" in reg.estimators


# -- the CLI ------------------------------------------------------------------------------
def save(path, arr):
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, arr)
    elif suffix == ".npz":
        np.savez(path, data=arr)
    elif suffix == ".csv":
        np.savetxt(path, arr, delimiter=",", fmt="%d" if arr.dtype.kind == "i" else "%.17g")
    elif suffix == ".pt":
        torch.save(torch.as_tensor(arr), path)
    return str(path)


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv", ".pt"])
def test_cli_mi_matches_the_python_call(tmp_path, suffix):
    x, y = sample()
    labels = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    for yy, kind in ((y, "continuous"), (labels, "discrete")):
        xf, yf = save(tmp_path / f"x{suffix}", x), save(tmp_path / f"y{suffix}", yy)
        res = run_cli("mi", xf, yf, "--json", "--no-trust", "-p", "alpha=2", "-p",
                      "sigma=median")
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        expected = mi_probe.estimate(x, yy, "renyi", alpha=2, sigma="median")
        assert out["y_kind"] == kind
        assert out["value"] == pytest.approx(expected.value, rel=1e-12)


def test_cli_mi_plain_output_and_bits(tmp_path):
    x, y = sample()
    res = run_cli("mi", save(tmp_path / "x.npy", x), save(tmp_path / "y.npy", y),
                  "--unit", "bits", "--no-trust")
    assert res.exit_code == 0
    value = mi_probe.estimate(x, y, unit="bits").value
    assert f"{value:.6g} bits" in res.stdout


@pytest.mark.parametrize(
    ("case", "message"),
    [("mismatch", "same number of samples"), ("missing", "no such file"),
     ("param", "unknown parameter"), ("value", "bad value"), ("estimator", "unknown estimator"),
     ("npz", "holds 2 arrays"), ("nan", "NaN"), ("unit", "unknown unit")],
)
def test_cli_bad_input_is_one_line_without_traceback(tmp_path, case, message):
    x, y = sample()
    xf, yf = save(tmp_path / "x.npy", x), save(tmp_path / "y.npy", y)
    args = {
        "mismatch": [xf, save(tmp_path / "short.npy", y[:-3])],
        "missing": [xf, tmp_path / "nope.npy"],
        "param": [xf, yf, "-p", "bandwidth=2"],
        "value": [xf, yf, "-p", "alpha=-2"],
        "estimator": [xf, yf, "-e", "no-such"],
        "npz": [xf, tmp_path / "two.npz"],
        "nan": [save(tmp_path / "nan.npy", np.full((60, 2), np.nan)), yf],
        "unit": [xf, yf, "--unit", "furlongs"],
    }[case]
    np.savez(tmp_path / "two.npz", a=y, b=y)
    res = run_cli("mi", *args, "--no-trust")
    assert res.exit_code != 0
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in res.output


def test_real_console_script_errors_without_traceback(tmp_path):
    x, y = sample()
    xf, yf = save(tmp_path / "x.npy", x), save(tmp_path / "y.npy", y[:10])
    proc = subprocess.run(
        [sys.executable, "-c", "from mi_probe.cli.app import main; main()", "mi", xf, yf],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: x and y must have the same number of samples: x has 60, y has 10"]


@pytest.mark.parametrize("header", ["", "label\n"])
def test_csv_integer_column_is_labels_with_or_without_header(tmp_path, header):
    from mi_probe.arrays_io import load_array

    (tmp_path / "y.csv").write_text(header + "1\n0\n2\n")
    (tmp_path / "f.csv").write_text(header + "1.0\n0\n2\n")
    assert load_array(tmp_path / "y.csv").dtype == np.int64
    assert load_array(tmp_path / "f.csv").dtype == np.float64


def test_file_format_errors():
    from mi_probe.arrays_io import load_array

    with pytest.raises(FileFormatError, match="unsupported file type"):
        load_array(__file__)
    assert issubclass(FileFormatError, MIProbeError)


def test_prepare_resolves_everything_up_front():
    est, target, params = prepare("renyi", np.array([0, 1, 1]), {"alpha": "3"})
    assert est.name == "renyi" and target.kind == "discrete" and params["alpha"] == 3.0
