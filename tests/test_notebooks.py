"""The tutorial notebooks run top to bottom (quick mode) and produce their figures and key numbers.

Each notebook is executed with nbclient in a fresh kernel with ``SCORE_SDE_NOTEBOOK_QUICK=1`` (fewer
training steps and samples). Its last cell prints one ``SUMMARY {json}`` line; the checks below read
it. Checks on trained models only ask for finite, well-formed output (a few dozen training steps
make no good model); checks on the exact-score parts compare with closed-form answers, which quick
mode does not weaken.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="install the 'notebooks' extra: pip install -e '.[notebooks]'")
nbclient = pytest.importorskip("nbclient", reason="install the 'notebooks' extra: pip install -e '.[notebooks]'")
pytest.importorskip("ipykernel", reason="install the 'notebooks' extra: pip install -e '.[notebooks]'")
pytest.importorskip("matplotlib", reason="install the 'notebooks' extra: pip install -e '.[notebooks]'")

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ["01_pick_an_sde_and_a_solver.ipynb", "02_discrete_vs_continuous.ipynb",
             "03_likelihoods_through_the_ode.ipynb", "04_controllable_generation.ipynb"]


def _execute(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SCORE_SDE_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")        # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # the kernel runs in tmp_path; the notebooks' shared helpers (notebooks/nb_helpers.py) come from NB_DIR
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(NB_DIR), os.environ.get("PYTHONPATH")) if p))
    nb = nbformat.read(NB_DIR / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()   # raises CellExecutionError naming the failing cell
    images, text = 0, []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                raise AssertionError(f"{name}: {out['ename']}: {out['evalue']}")
            if "image/png" in out.get("data", {}):
                images += 1
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                text.append(out["text"])
    lines = [ln for ln in "".join(text).splitlines() if ln.startswith("SUMMARY ")]
    assert len(lines) == 1, f"{name}: expected one SUMMARY line, got {len(lines)}"
    summary = json.loads(lines[0][len("SUMMARY "):])
    assert summary["quick"] is True
    return images, summary


def _finite(v):
    return isinstance(v, (int, float)) and math.isfinite(v)


def test_notebooks_are_built_from_the_builder_and_have_no_outputs():
    """The committed .ipynb files are exactly what build_notebooks.py writes from the .py sources
    (no outputs, no drift)."""
    r = subprocess.run([sys.executable, str(NB_DIR / "build_notebooks.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    for name in NOTEBOOKS:
        nb = nbformat.read(NB_DIR / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code)
        src = "\n".join(c.source for c in code)
        # quick mode and the SUMMARY line come from the shared helpers, written once
        assert "from nb_helpers import" in src and "print_summary(summary" in src
    helpers = (NB_DIR / "nb_helpers.py").read_text()
    assert "SCORE_SDE_NOTEBOOK_QUICK" in helpers and "SUMMARY " in helpers


def test_notebook_01_pick_an_sde_and_a_solver(tmp_path, monkeypatch):
    images, s = _execute(NOTEBOOKS[0], tmp_path, monkeypatch)
    assert images >= 6   # data, schedules, forward marginals, forward paths, reverse paths, quality vs NFE
    lo, hi = s["floor"]
    assert 0 < lo <= hi < 0.5
    res = s["results"]
    for sde in ("VP", "sub-VP", "VE"):
        for method in ("euler_maruyama", "pc", "ode", "heun", "dpmpp_3m", "unipc"):
            rows = res[f"{sde}/{method}"]
            assert rows and all(isinstance(n, int) and n > 0 and _finite(d) for n, d in rows)
    # exact score, ~20 NFE of DPM-Solver++(3M) on VP: close to exact samples (floor of 400 points ~0.1)
    assert min(d for _, d in res["VP/dpmpp_3m"]) < 0.3
    # NFE accounting: 10 steps of one-call solvers + the final denoising call
    assert [n for n, _ in res["VP/euler_maruyama"]] == [11]
    assert [n for n, _ in res["VP/dpmpp_3m"]] == [11]
    assert set(s["fewest_nfe_inside_band"]) == {"VP", "sub-VP", "VE"}


def test_notebook_02_discrete_vs_continuous(tmp_path, monkeypatch):
    images, s = _execute(NOTEBOOKS[1], tmp_path, monkeypatch)
    assert images >= 3   # training curves, quality vs NFE, sample grid
    loss = s["held_out_loss"]
    assert set(loss) == {"discrete model", "continuous model", "continuous, EDM output", "exact score"}
    # the exact score minimises the denoising loss: no model can beat it on the same (x, t, z)
    assert all(_finite(v) for v in loss.values())
    assert loss["exact score"] < min(v for k, v in loss.items() if k != "exact score")
    for model in ("discrete model", "continuous model", "continuous, EDM output", "exact score"):
        for method in ("ddpm", "euler_maruyama", "dpmpp_3m"):
            rows = s["results"][f"{model}/{method}"]
            assert rows and all(n > 0 and _finite(d) for n, d in rows)
    assert [n for n, _ in s["results"]["exact score/ddpm"]] == [10]    # DDPM: exactly `steps` calls
    errs = s["denoiser_error"]
    assert set(errs) >= {"1.0", "0.01"} and all(_finite(v) for row in errs.values() for v in row.values())
    assert min(d for _, d in s["results"]["exact score/dpmpp_3m"]) < 0.3


def test_notebook_03_likelihoods_through_the_ode(tmp_path, monkeypatch):
    images, s = _execute(NOTEBOOKS[2], tmp_path, monkeypatch)
    assert images >= 3   # Hutchinson errors, tolerance vs NFE, encode/decode
    sweep = s["tolerance_sweep_exact_score"]
    assert len(sweep) >= 2
    # exact score: the ODE log-likelihood matches the closed form, better at tighter tolerance
    assert sweep[-1]["mean_abs_err"] < 0.02
    # ... and, once the prior term log p_T - log N(0, I) is removed, to the solver tolerance
    assert sweep[-1]["solver_err"] < 1e-3 and sweep[-1]["solver_err"] < sweep[0]["solver_err"]
    assert 0 < sweep[-1]["prior_gap"] < 0.01
    assert sweep[-1]["nfe"] > sweep[0]["nfe"]
    h = s["hutchinson"]
    assert h["exact"]["std"] < 0.02
    for k, v in h.items():
        if k != "exact":      # unbiased: the mean error is within 4 standard errors of 0
            assert abs(v["bias"]) < 4 * v["stderr"] + 0.02, (k, v)
    bpd = s["bits_per_dim"]
    assert abs(bpd["ODE, exact score"] - bpd["true density p_eps"]) < 0.02
    assert abs(bpd["true density p_eps"] - bpd["true density p_0"]) < 0.01
    assert _finite(bpd["ODE, trained model"]) and _finite(s["model_error_nats"])
    # decode(encode(x)) returns to x up to the solver tolerance (loose in quick mode: rtol = 1e-3)
    assert s["reconstruction_median"] < 0.1 and _finite(s["reconstruction_max"])


def test_notebook_04_controllable_generation(tmp_path, monkeypatch):
    images, s = _execute(NOTEBOOKS[3], tmp_path, monkeypatch)
    assert images >= 4   # mixture posteriors, inpainting grid, accuracy/FD vs scale, class grids
    for name, errs in s["mixture_posterior_error"].items():
        floor = errs["Monte Carlo floor"]
        # the exact conditional score samples the exact posterior (within the Monte Carlo noise)
        assert errs["exact conditional score"] < 2.5 * floor + 0.05, (name, errs)
        assert all(_finite(v) for v in errs.values())
    assert {"replacement", "RePaint r=4", "DPS zeta=0.2"} <= set(s["mixture_posterior_error"]["inpaint"])
    # scale 1 of either guidance is the class's own exact score, sample for sample
    assert s["max_diff_to_class_score_classifier_guidance"] < 1e-8
    assert s["max_diff_to_class_score_classifier-free"] < 1e-8
    ce = s["mixture_class_error"]
    assert ce["classifier-free, scale 3"] > ce["classifier-free, scale 1"]
    assert s["inpaint"]["max_observed_change"] == 0.0       # replacement keeps the observed pixels exactly
    assert s["inpaint_guided"]["max_observed_change"] == 0.0
    assert 0.0 <= s["inpaint"]["label_accuracy"] <= 1.0
    for kind in ("classifier-free", "classifier"):
        rows = s["guidance"][kind]
        assert len(rows) >= 3 and all(0 <= r["accuracy"] <= 1 and _finite(r["digits_fd"]) for r in rows.values())


def test_a_stale_notebook_is_detected(tmp_path):
    """Editing a source without rebuilding makes ``build_notebooks.py --check`` fail."""
    import shutil
    nb_copy = tmp_path / "notebooks"
    shutil.copytree(NB_DIR, nb_copy, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    src = nb_copy / NOTEBOOKS[0].replace(".ipynb", ".py")
    src.write_text(src.read_text() + "\n# %%\nprint('a new cell')\n")
    r = subprocess.run([sys.executable, str(nb_copy / "build_notebooks.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 1 and NOTEBOOKS[0] in r.stderr
