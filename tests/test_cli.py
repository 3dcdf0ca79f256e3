"""Command line end to end on tiny configs in a temporary directory: train (and resume), sample
with two solvers (PNG + npz), likelihood, evaluate; errors for bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from score_sde import cli
from score_sde.config import default_config
from score_sde.data import checkerboard_log_prob
from score_sde.training import read_log

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config.model.hidden=32", "--config.model.num_blocks=1", "--config.model.embedding_dim=16",
        "--config.training.batch_size=64", "--config.training.log_freq=10", "--config.optim.warmup=5",
        "--config.training.snapshot_sampling=false", "--config.sampling.batch_size=100"]


def run(*args):
    return cli.main([str(a) for a in args])


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("cb")
    assert run("train", "--config", "vp/checkerboard", "--workdir", wd, "--no-progress",
               "--config.training.n_iters=20", "--config.training.snapshot_freq=20", *TINY) == 0
    return wd


def test_train_writes_and_resumes(toy_run, capsys):
    wd = toy_run
    cfg = json.loads((wd / "config.json").read_text())
    assert cfg["model"]["hidden"] == 32 and cfg["data"]["dataset"] == "checkerboard"
    assert (wd / "checkpoints" / "checkpoint_00000020.pt").is_file()
    # run again with more steps: resumes at 20 (config read back from WORKDIR/config.json)
    with pytest.warns(UserWarning, match="training.n_iters: 20 -> 30"):
        assert run("train", "--workdir", wd, "--no-progress", "--config.training.n_iters=30") == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["step"] == 30
    events = [(r["event"], r["step"]) for r in read_log(wd / "log.jsonl") if r.get("event") in ("start", "resume")]
    assert events == [("start", 0), ("resume", 20)]


def test_sample_two_solvers(toy_run):
    wd = toy_run
    for method, steps in (("dpmpp_2m", 5), ("euler_maruyama", 10)):
        out = wd / f"s_{method}"
        assert run("sample", "--workdir", wd, "--method", method, "--steps", steps, "--n", 150, "--seed", 3,
                   "--out", out) == 0
        arr = np.load(out.with_suffix(".npz"))["samples"]
        assert arr.shape == (150, 2) and np.isfinite(arr).all()
        assert out.with_suffix(".png").stat().st_size > 1000
        summary = json.loads(out.with_suffix(".json").read_text())
        assert summary["method"] == method and summary["nfe"] == steps + 1    # + the final denoising call
        # the data set's own metric, recomputed from the written samples
        on_board = torch.isfinite(checkerboard_log_prob(torch.from_numpy(arr))).float().mean().item()
        assert summary["fraction_on_board"] == pytest.approx(on_board)
    # same seed, same samples
    run("sample", "--workdir", wd, "--method", "dpmpp_2m", "--steps", 5, "--n", 150, "--seed", 3, "--out", wd / "again")
    assert np.array_equal(np.load(wd / "again.npz")["samples"], np.load(wd / "s_dpmpp_2m.npz")["samples"])


def test_likelihood_and_evaluate(toy_run):
    wd = toy_run
    assert run("likelihood", "--workdir", wd, "--n", 64, "--config.eval.rtol=1e-3", "--config.eval.atol=1e-3") == 0
    res = json.loads((wd / "likelihood_fresh_samples.json").read_text())
    assert res["n"] == 64 and np.isfinite(res["nll_nats"]) and res["nfe_mean"] > 2
    assert res["true_entropy_nats"] == pytest.approx(np.log(8))
    assert res["bits_per_dim"] == pytest.approx(res["nll_nats"] / (2 * np.log(2)))
    assert run("evaluate", "--workdir", wd, "--method", "ddim", "--steps", 5, "--n", 200) == 0
    m = json.loads((wd / "metrics_ddim_5steps.json").read_text())
    assert m["nfe"] == 6 and np.isfinite(m["metrics"]["sliced_wasserstein"])
    # evaluate draws exactly what sample draws with the same method, steps, n and seed
    assert run("sample", "--workdir", wd, "--method", "ddim", "--steps", 5, "--n", 200, "--out", wd / "ev") == 0
    x = torch.from_numpy(np.load(wd / "ev.npz")["samples"])
    assert m["metrics"]["fraction_on_board"] == pytest.approx(
        torch.isfinite(checkerboard_log_prob(x)).float().mean().item())


def test_digits_end_to_end(tmp_path):
    wd = tmp_path / "dg"
    assert run("train", "--config", "vp/digits", "--workdir", wd, "--no-progress", "--config.training.n_iters=10",
               "--config.training.snapshot_freq=10", *TINY) == 0
    assert run("sample", "--workdir", wd, "--method", "ddim", "--steps", 3, "--n", 16) == 0
    png = wd / "samples" / "ddim_3steps_seed0.png"
    from PIL import Image
    with Image.open(png) as im:
        assert im.mode == "L" and im.size[0] > 8 * 4                      # a grid of upscaled 8x8 digits
    levels = np.load(png.with_suffix(".npz"))["levels"]
    assert levels.shape == (16, 1, 8, 8) and levels.min() >= 0 and levels.max() <= 16
    assert run("likelihood", "--workdir", wd, "--split", "test", "--n", 8, "--config.eval.divergence=hutchinson",
               "--config.eval.rtol=1e-3", "--config.eval.atol=1e-3") == 0
    res = json.loads((wd / "likelihood_test.json").read_text())
    assert res["n"] == 8 and res["split"] == "test" and 0 < res["bits_per_dim"] < 50


def test_errors_are_reported(tmp_path, capsys):
    assert run("train", "--config", "vp/checkerboard", "--workdir", tmp_path, "--config.training.batch_sise=3") == 1
    err = capsys.readouterr().err
    assert "unknown config key 'training.batch_sise'" in err and "training.batch_size" in err
    assert run("sample", "--workdir", tmp_path / "nothing") == 1
    assert "config.json not found" in capsys.readouterr().err
    assert run("train", "--workdir", tmp_path / "nothing") == 1
    assert "train needs --config" in capsys.readouterr().err
    cfg_dir = tmp_path / "nockpt"
    cfg_dir.mkdir()
    (cfg_dir / "config.json").write_text(json.dumps(default_config().to_dict()))
    assert run("likelihood", "--workdir", cfg_dir) == 1
    assert "no checkpoint under" in capsys.readouterr().err


def test_python_m_lists_configs():
    out = subprocess.run([sys.executable, "-m", "score_sde", "configs"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "vp/digits" in out.stdout.split()


def test_a_run_is_loaded_once_and_reused(toy_run, monkeypatch):
    """load_trained reads the checkpoint from disk once; the commands reuse a loaded run."""
    from score_sde import experiment as ex
    from score_sde.config import load_run_config

    loads = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    run_ = ex.load_trained(toy_run)
    assert len(loads) == 1 and run_.step == int(run_.checkpoint.stem.split("_")[-1])
    cfg = load_run_config(toy_run)
    s = ex.run_sample(cfg, toy_run, method="ddim", steps=3, n=10, out=str(toy_run / "reuse"), run=run_)
    lik = ex.run_likelihood(cfg, toy_run, n=8, run=run_)
    assert len(loads) == 1                                  # nothing read again
    assert s["nfe"] == 4 and s["checkpoint"] == lik["checkpoint"] == str(run_.checkpoint)
