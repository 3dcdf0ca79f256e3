"""``score-sde compare`` end to end on tiny runs: files written, table columns, NFE counted and within
the budgets, the adaptive solver entering once with its own NFE, the floor and the unclipped metric."""
import json
from pathlib import Path

import pytest
import torch

from score_sde import cli
from score_sde.compare import markdown_table, sample_stats, steps_for_budget
from score_sde.data import make_dataset
from score_sde.sde import VESDE, VPSDE

TINY = ["--config.model.hidden=32", "--config.model.num_blocks=1", "--config.model.embedding_dim=16",
        "--config.training.batch_size=64", "--config.training.log_freq=10", "--config.optim.warmup=5",
        "--config.training.snapshot_sampling=false", "--config.sampling.batch_size=100"]


def run(*args):
    return cli.main([str(a) for a in args])


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_steps_for_budget_fit_the_budget(sde, count_calls):
    from score_sde.sampling import sample

    for method in ("ddpm", "euler_maruyama", "pc", "ddim", "heun", "dpmpp_2m"):
        for budget in (10, 21, 50):
            steps = steps_for_budget(sde, method, budget)
            score = count_calls(lambda x, t: -x)
            sample(sde, score, (2, 3), method=method, steps=steps, generator=torch.Generator().manual_seed(0))
            more = count_calls(lambda x, t: -x)
            sample(sde, more, (2, 3), method=method, steps=steps + 1, generator=torch.Generator().manual_seed(0))
            assert score.calls <= budget < more.calls, (method, budget, steps, score.calls, more.calls)
    assert steps_for_budget(sde, "ode", 50) is None        # adaptive: it chooses its own
    assert steps_for_budget(sde, "heun", 2) is None         # one Heun step + the final call is 3 > 2
    with pytest.raises(ValueError, match="unknown method"):
        steps_for_budget(sde, "nope", 10)


def test_sample_stats_out_of_range_is_one_level_beyond():
    ds = make_dataset("digits")
    level = 2.0 / 17.0
    x = torch.zeros(1, 1, 8, 8)
    x.view(-1)[:4] = torch.tensor([1.0 + 0.9 * level, -1.0 - 0.9 * level, 1.0 + 1.1 * level, -1.0 - 2 * level])
    st = sample_stats(x, ds)
    assert st["out_of_range"] == pytest.approx(2 / 64)
    assert st["pixel_std"] == pytest.approx(float(x.double().std()))
    assert sample_stats(torch.randn(10, 2) * 5, make_dataset("checkerboard"))["out_of_range"] is None


def test_compare_toy_end_to_end(tmp_path, capsys):
    wd = tmp_path / "cb"
    assert run("train", "--config", "vp/checkerboard", "--workdir", wd, "--no-progress",
               "--config.training.n_iters=10", "--config.training.snapshot_freq=10", *TINY) == 0
    capsys.readouterr()
    assert run("compare", "--workdir", wd, "--solvers", "ddpm,pc,dpmpp_2m,ode", "--budgets", "10,20", "--n", 200,
               "--no-progress", "--config.sampling.eps=1e-3") == 0
    out = wd / "compare"
    res = json.loads((out / "compare.json").read_text())
    ode_failed = bool(res["rows"][-1].get("error"))     # a 10-step model may make dopri5 diverge: a row, no crash
    for name in ("compare.json", "compare.md", "compare_raw_fd.png", "grid_ddpm.png", "grid_pc.png",
                 "grid_dpmpp_2m.png") + (() if ode_failed else ("grid_ode.png",)):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert res["metric"] == "raw_fd" and res["n"] == 200 and res["floor"]["raw_fd"] > 0
    rows = {(r["solver"], r["budget"]): r for r in res["rows"]}
    assert set(rows) == {("ddpm", 10), ("ddpm", 20), ("pc", 10), ("pc", 20), ("dpmpp_2m", 10), ("dpmpp_2m", 20),
                         ("ode", None)}
    assert rows["ddpm", 10]["nfe"] == 10 and rows["ddpm", 20]["nfe"] == 20
    assert rows["dpmpp_2m", 20] == {**rows["dpmpp_2m", 20], "steps": 19, "nfe": 20}
    assert rows["pc", 20]["nfe"] <= 20 and rows["pc", 10]["nfe"] <= 10
    assert rows["ode", None]["steps"] is None
    assert rows["ode", None]["nfe"] is None if ode_failed else rows["ode", None]["nfe"] > 20     # its own NFE
    for r in res["rows"][:-1]:
        assert set(r) >= {"solver", "steps", "nfe", "metric", "metric_unclipped", "out_of_range", "pixel_std",
                          "seconds"}
        assert r["metric"] > 0 and r["out_of_range"] is None and r["seconds"] >= 0
    md = (out / "compare.md").read_text()
    assert "| solver | steps | NFE | raw_fd | raw_fd unclipped | out of range | pixel std | seconds |" in md
    assert "| ode | adaptive |" in md and md == markdown_table(res)
    assert res["rows"][-1]["metric"] is None if ode_failed else res["rows"][-1]["metric"] > 0
    assert res["eps"] == pytest.approx(1e-3)


def test_compare_digits_metric_floor_and_unclipped(tmp_path):
    wd = tmp_path / "dg"
    assert run("train", "--config", "vp/digits", "--workdir", wd, "--no-progress", "--config.training.n_iters=5",
               "--config.training.snapshot_freq=5", *TINY) == 0
    assert run("compare", "--workdir", wd, "--solvers", "ddim", "--budgets", "5", "--n", 100, "--no-progress") == 0
    res = json.loads((wd / "compare" / "compare.json").read_text())
    (row,) = res["rows"]
    assert res["metric"] == "digits_fd" and row["nfe"] == 5 and row["steps"] == 4
    assert res["floor"]["n"] == 100 and res["floor"]["split"] == "train" and res["floor"]["digits_fd"] > 0
    assert res["data_pixel_std"] == pytest.approx(0.7, abs=0.05)
    assert row["metric"] > 0 and row["metric_unclipped"] > 0 and 0 <= row["out_of_range"] <= 1
    from PIL import Image
    with Image.open(wd / "compare" / "grid_ddim.png") as im:
        assert im.size[0] > 10 * 8 * 4       # one row of 10 upscaled digits


def test_demo_compares_discrete_with_continuous(tmp_path):
    from score_sde.demo import run_demo

    wd = tmp_path / "demo"
    tiny = [o.replace("--config.", "") for o in TINY] + ["training.n_iters=10", "eval.rtol=1e-3", "eval.atol=1e-3"]
    res = run_demo(wd, quick=True, overrides=tiny, progress=False, solvers=("ddpm", "dpmpp_2m", "ode"),
                   budgets={"ddpm": (10, 20), "dpmpp_2m": (10,)})
    s = res["summary"]
    assert s["steps_trained"] == 10 and s["metric"] == "digits_fd" and s["metric_floor"] > 0
    cmp = json.loads((wd / "compare" / "compare.json").read_text())
    drawn = {"ddpm", "dpmpp_2m"} | (set() if cmp["rows"][3].get("error") else {"ode"})
    assert set(s["samples"]) == drawn and all(Path(p).is_file() for p in s["samples"].values())
    assert [(r["solver"], r["nfe"]) for r in cmp["rows"][:3]] == [("ddpm", 10), ("ddpm", 20), ("dpmpp_2m", 10)]
    assert cmp["rows"][3]["solver"] == "ode" and cmp["n"] == 200
    if cmp["rows"][3].get("error"):    # a 10-step model may make the adaptive solver diverge: reported, not raised
        assert cmp["rows"][3]["nfe"] is None and "non-finite" in cmp["rows"][3]["error"]
        assert "| ode | adaptive | n/a | failed: " in (wd / "compare" / "compare.md").read_text()
    m = json.loads((wd / "metrics.json").read_text())
    assert m["config"]["model"]["output"] == "edm" and m["config"]["training"]["weighting"] == "edm"
    assert 0 < m["likelihood"]["bits_per_dim"] < 50 and (wd / "samples" / "data_test.png").is_file()


def test_unclipped_metric_sees_what_clipping_hides(tmp_path):
    from score_sde.evaluation import evaluate_samples

    ds = make_dataset("digits")
    x = ds.preprocess(ds.raw("train")[:300].float(), train=False, dequantize=False)
    kw = dict(features="digits", data_range=ds.dequantization.centre_range, metrics=("fd",),
              digits_classifier=str(tmp_path / "clf.pt"))
    inside = [evaluate_samples(x, clip=c, **kw)["digits_fd"] for c in (True, False)]
    assert inside[0] == pytest.approx(inside[1])                  # nothing to clip: the same metric
    spilled = x * 1.6                                             # far outside [-1, 1]
    out = [evaluate_samples(spilled, clip=c, **kw)["digits_fd"] for c in (True, False)]
    assert sample_stats(spilled, ds)["out_of_range"] > 0.3
    assert out[1] > out[0] + 1.0                                  # unclipped, the classifier sees the spill
