"""Third-party plugins end to end: the example mi-probe-gaussian package and a broken one.

Each package is built and installed with pip into a temporary directory
(``pip install --no-deps --target``), never into the environment itself, and that
directory is put on PYTHONPATH of the real ``mi-probe`` command run as a subprocess. The
plugins are therefore visible only to those subprocesses (and, for the in-process check,
only while ``monkeypatch`` keeps the directory on ``sys.path``): other tests never see
them and nothing needs uninstalling.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mi_probe

PLUGIN_SRC = Path(__file__).resolve().parents[1] / "plugins" / "third_party" / "mi-probe-gaussian"
RHO = 0.75
GAUSS_MI = -0.5 * math.log(1 - RHO**2)  # 0.4133 nats


def pip_install_target(src: Path, target: Path, workdir: Path) -> Path:
    """Build ``src`` (a copy of it, so the source tree stays clean) and install it into
    ``target`` with pip; return ``target``."""
    copy = workdir / src.name
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                             "__pycache__"))
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
           str(target), str(copy)]
    if importlib.util.find_spec("setuptools") is not None:
        # Build with the environment's setuptools: fast and needs no package index.
        cmd[4:4] = ["--no-build-isolation", "--no-index"]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"
    return target


def cli(*args: str, site: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``mi-probe`` console script with ``site`` on PYTHONPATH."""
    script = Path(sys.executable).with_name("mi-probe")
    exe = [str(script)] if script.exists() else [sys.executable, "-m", "mi_probe.cli.app"]
    env = {**os.environ, "COLUMNS": "250", "OMP_NUM_THREADS": "1"}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site),
                                                          env.get("PYTHONPATH", "")]))
    return subprocess.run([*exe, *args], capture_output=True, text=True, env=env, timeout=300)


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def exact_gaussian(n: int, cov: np.ndarray, seed: int) -> np.ndarray:
    """n samples whose *sample* covariance (ddof=1) is exactly ``cov`` (d, d)."""
    z = np.random.default_rng(seed).standard_normal((n, len(cov)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return z @ np.linalg.cholesky(cov).T


def gaussian_mi(cov: np.ndarray, d_x: int) -> float:
    """½ (log det Σ_xx + log det Σ_yy − log det Σ), nats."""
    ld = lambda m: np.linalg.slogdet(m)[1]  # noqa: E731
    return 0.5 * (ld(cov[:d_x, :d_x]) + ld(cov[d_x:, d_x:]) - ld(cov))


@pytest.fixture(scope="module")
def gaussian_site(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("gaussian-plugin")
    return pip_install_target(PLUGIN_SRC, work / "site", work)


def run_mi_json(site: Path, tmp: Path, x: np.ndarray, y: np.ndarray, *extra: str) -> dict:
    np.save(tmp / "x.npy", x)
    np.save(tmp / "y.npy", y)
    proc = cli("mi", str(tmp / "x.npy"), str(tmp / "y.npy"), *extra, "--json", site=site)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cli_gaussian_estimator_is_exact_on_1d_gaussian(gaussian_site, tmp_path):
    cov = np.array([[1.0, RHO], [RHO, 1.0]])
    xy = exact_gaussian(5000, cov, seed=0)
    out = run_mi_json(gaussian_site, tmp_path, xy[:, 0], xy[:, 1], "--estimator", "gaussian")
    assert out["estimator"] == "gaussian"
    assert out["value"] == pytest.approx(GAUSS_MI, rel=0.01)
    assert out["value"] == pytest.approx(GAUSS_MI, rel=1e-9)  # exact, far inside 1 %
    assert out["extras"]["canonical_correlations"] == pytest.approx([RHO], rel=1e-9)
    assert out["diagnostics"] == []


def test_cli_gaussian_estimator_is_exact_on_multivariate_gaussian(gaussian_site, tmp_path):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    cov = a @ a.T + 0.5 * np.eye(5)  # x: 3 dims, y: 2 dims, dense dependence
    xy = exact_gaussian(5000, cov, seed=2)
    out = run_mi_json(gaussian_site, tmp_path, xy[:, :3], xy[:, 3:], "-e", "gaussian",
                      "--unit", "bits")
    truth = gaussian_mi(cov, 3)
    assert truth > 0.3
    assert out["unit"] == "bits"
    assert out["value"] == pytest.approx(truth / math.log(2), rel=0.01)
    assert out["value"] == pytest.approx(truth / math.log(2), rel=1e-9)
    assert len(out["extras"]["canonical_correlations"]) == 2


def test_gaussian_estimator_on_random_gaussian_samples(gaussian_site, monkeypatch):
    # Plain random data: the sample correlation has standard deviation (1 − ρ²)/√n, so the
    # estimate has ρ/√n = 0.0106 nats at n = 5000; 0.045 is about 4 of them (not 1 %).
    monkeypatch.syspath_prepend(str(gaussian_site))
    from mi_probe_gaussian import GaussianEstimator

    rng = np.random.default_rng(3)
    x = rng.standard_normal(5000)
    y = RHO * x + math.sqrt(1 - RHO**2) * rng.standard_normal(5000)
    res = mi_probe.estimate(x, y, GaussianEstimator)
    assert res.value == pytest.approx(GAUSS_MI, abs=0.045)
    assert res.value == pytest.approx(mi_probe.estimate(y, x, GaussianEstimator).value)
    # Collinear features: a clear error, and ridge > 0 fixes it.
    xx = np.column_stack([x, 2 * x])
    with pytest.raises(mi_probe.InputError, match="ridge"):
        mi_probe.estimate(xx, y, GaussianEstimator)
    ridged = mi_probe.estimate(xx, y, GaussianEstimator, ridge=1e-6)
    assert ridged.value == pytest.approx(res.value, rel=1e-3)


def test_gaussian_estimator_passes_the_conformance_kit(gaussian_site, monkeypatch):
    from mi_probe.testing import CHECKS, check_estimator

    monkeypatch.syspath_prepend(str(gaussian_site))
    from mi_probe_gaussian import GaussianEstimator

    assert check_estimator(GaussianEstimator, max_examples=2) == list(CHECKS)


def test_cli_plugins_lists_gaussian_with_version(gaussian_site):
    proc = cli("plugins", site=gaussian_site)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "mi-probe-gaussian" in line]
    assert len(rows) == 1, proc.stdout
    cells = [c.strip() for c in rows[0].split("│")]
    assert cells[:3] == ["gaussian", "mi-probe-gaussian", "0.1.0"]
    assert "estimators: gaussian" in rows[0] and "ok" in cells[-1]
    # Installed into the temporary directory only, not into this environment:
    assert "mi-probe-gaussian" not in {d.metadata["Name"] for d in md.distributions()}


BROKEN_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "mi-probe-broken-example"
version = "0.0.1"

[project.entry-points.mi_probe]
broken-example = "mi_probe_broken_example"

[tool.setuptools]
packages = ["mi_probe_broken_example"]
"""


def test_broken_plugin_warns_once_and_others_still_work(tmp_path):
    src = tmp_path / "mi-probe-broken-example"
    (src / "mi_probe_broken_example").mkdir(parents=True)
    (src / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (src / "mi_probe_broken_example" / "__init__.py").write_text(
        'raise RuntimeError("broken on purpose")\n')
    build = tmp_path / "build"
    build.mkdir()
    site = pip_install_target(src, tmp_path / "site", build)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 2))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", (x[:, 0] > 0).astype(np.int64))
    args = ("mi", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--json")

    baseline = cli(*args, "-e", "linear-probe")
    assert baseline.returncode == 0, baseline.stderr
    proc = cli(*args, "-e", "linear-probe", site=site)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["estimator"] == "linear-probe" and out["value"] > 0.3
    named = [w for w in warning_lines(proc.stderr) if "broken-example" in w]
    assert len(named) == 1, proc.stderr
    assert "could not be imported" in named[0] and "broken on purpose" in named[0]
    others = [w for w in warning_lines(proc.stderr) if "broken-example" not in w]
    assert others == warning_lines(baseline.stderr)
    assert "Traceback" not in proc.stderr

    listing = cli("plugins", site=site)
    assert listing.returncode == 0
    row = [line for line in listing.stdout.splitlines() if "broken-example" in line]
    assert row and "failed" in row[0]
