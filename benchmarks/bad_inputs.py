"""Bad inputs against the ``score-sde`` command line, as a new user or an attacker would try them.

Runs every case in-process (``score_sde.cli.main``) on a tiny trained run in a temporary
directory and classifies the outcome:

* ``clear``      exit status != 0, exactly one ``error:`` line on stderr, no traceback;
* ``accepted``   exit status 0 where the input is valid (or an edge case that is fine to accept);
* ``traceback``  an exception escaped, or a traceback was printed;
* ``silent``     exit status 0 where the input should have been refused (a silent wrong result);
* ``unclear``    refused, but not with one clear line (several error lines, an empty message).

Usage::

    python benchmarks/bad_inputs.py            # prints one line per case and the counts
    python benchmarks/bad_inputs.py --json out.json

Expectations: ``error`` (must be refused), ``ok`` (must be accepted), ``either`` (a clear
refusal or acceptance are both fine). A case may add a check of what an accepted run wrote.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from score_sde import cli  # noqa: E402
from score_sde.training import RunLock  # noqa: E402

TINY = ["--config.model.hidden=32", "--config.model.num_blocks=1", "--config.model.embedding_dim=16",
        "--config.training.batch_size=64", "--config.training.log_freq=10", "--config.optim.warmup=5",
        "--config.training.snapshot_sampling=false", "--config.sampling.batch_size=100"]


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def run_cli(argv):
    """(exit status, stderr text, traceback text or None)."""
    err = io.StringIO()
    tb = None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as e:
            rc = int(e.code or 0)
        except BaseException:  # noqa: BLE001 - what we measure
            rc, tb = 1, traceback.format_exc()
    return rc, err.getvalue(), tb


def classify(rc, err, tb, expect):
    if tb is not None or "Traceback (most recent call last)" in err:
        return "traceback"
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    if rc != 0:
        if len(errors) == 1 and len(errors[0].split("error:", 1)[1].strip()) > 10:
            return "clear"
        return "unclear"
    return "silent" if expect == "error" else "accepted"


def build(root: Path):
    """The tiny run and the files the cases use; returns a dict of paths."""
    p = {}
    wd = root / "run"
    rc, err, tb = run_cli(["train", "--config", "vp/checkerboard", "--workdir", wd, "--no-progress",
                           "--config.training.n_iters=10", "--config.training.snapshot_freq=10", *TINY])
    assert rc == 0, (err, tb)
    p["wd"] = wd
    ckpt = wd / "checkpoints" / "checkpoint_00000010.pt"
    p["ckpt"] = ckpt
    (root / "notes.pt").write_text("not a checkpoint\n")
    p["text"] = root / "notes.pt"
    (root / "empty.pt").write_bytes(b"")
    p["empty"] = root / "empty.pt"
    p["marker"] = root / "pwned"
    torch.save({"format": "score_sde.training/1", "step": 1, "model": {"w": _Evil(p["marker"])}},
               root / "evil.pt")
    p["evil"] = root / "evil.pt"
    raw = bytearray(ckpt.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 400] = bytes(b ^ 0xFF for b in raw[mid:mid + 400])
    (root / "flipped.pt").write_bytes(bytes(raw))
    p["flipped"] = root / "flipped.pt"
    # run directories with a bad config.json
    for name, text in (("broken", "{not json"), ("listcfg", "[1, 2]"), ("emptycfg", ""),
                       ("unknownkey", None), ("newer", None), ("binary", None)):
        d = root / name
        (d / "checkpoints").mkdir(parents=True)
        (d / "checkpoints" / ckpt.name).write_bytes(ckpt.read_bytes())
        cfg = json.loads((wd / "config.json").read_text())
        if name == "unknownkey":
            cfg["sampling"]["stesp"] = 3
            text = json.dumps(cfg)
        elif name == "newer":
            cfg["schema_version"] = 99
            text = json.dumps(cfg)
        if name == "binary":
            (d / "config.json").write_bytes(b"\xff\xfe\x00\x01")
        else:
            (d / "config.json").write_text(text)
        p[name] = d
    (root / "nockpt").mkdir()
    (root / "nockpt" / "config.json").write_text((wd / "config.json").read_text())
    p["nockpt"] = root / "nockpt"
    (root / "syntax.py").write_text("def get_config(:\n")
    p["syntax"] = root / "syntax.py"
    (root / "noget.py").write_text("x = 1\n")
    p["noget"] = root / "noget.py"
    (root / "wrongtype.py").write_text("def get_config():\n    return {'a': 1}\n")
    p["wrongtype"] = root / "wrongtype.py"
    (root / "afile").write_text("x")
    p["afile"] = root / "afile"
    return p


def cases(p, root):
    wd, S = p["wd"], ["sample", "--workdir", p["wd"]]
    L, E = ["likelihood", "--workdir", wd], ["evaluate", "--workdir", wd]
    T = ["train", "--config", "vp/checkerboard", "--no-progress", "--config.training.n_iters=2", *TINY]
    out = lambda name: ["--out", root / "out" / name]  # noqa: E731
    fast = ["--method", "ddim", "--steps", "2", "--n", "4"]
    return [
        # ---- counts
        ("sample --n 0", S + ["--n", "0"], "error"),
        ("sample --n -4", S + ["--n", "-4"], "error"),
        ("sample --n abc", S + ["--n", "abc"], "error"),
        ("sample --n 1e3", S + ["--n", "1e3"], "error"),
        ("sample --steps -3", S + ["--steps", "-3"], "error"),
        ("sample --steps 0", S + ["--steps", "0"], "error"),
        ("sample --steps 2.5", S + ["--steps", "2.5"], "error"),
        ("sample --seed -1", S + fast + ["--seed", "-1"] + out("seedneg"), "either"),
        # ---- methods
        ("sample --method nope", S + ["--method", "nope", "--n", "4"], "error"),
        ("sample --method ode (adaptive)", S + ["--method", "ode", "--n", "8"] + out("ode"), "ok"),
        ("sample --method ode --steps 5", S + ["--method", "ode", "--steps", "5", "--n", "4"], "error"),
        ("sample --method heun --steps 1", S + ["--method", "heun", "--steps", "1", "--n", "4"] + out("h1"), "ok"),
        ("sample --method pc", S + ["--method", "pc", "--steps", "3", "--n", "4"] + out("pc"), "either"),
        # ---- devices
        ("sample --device cuda (no CUDA)" if not torch.cuda.is_available() else "sample --device cuda:99",
         S + fast + ["--device", "cuda" if not torch.cuda.is_available() else "cuda:99"], "error"),
        ("sample --device gpu", S + fast + ["--device", "gpu"], "error"),
        ("sample --device meta", S + fast + ["--device", "meta"], "error"),
        ("sample --device cpu:0", S + fast + ["--device", "cpu:0"] + out("cpu0"), "either"),
        # ---- checkpoints
        ("sample --checkpoint missing", S + fast + ["--checkpoint", root / "missing.pt"], "error"),
        ("sample --checkpoint text", S + fast + ["--checkpoint", p["text"]], "error"),
        ("sample --checkpoint empty", S + fast + ["--checkpoint", p["empty"]], "error"),
        ("sample --checkpoint code-carrying", S + fast + ["--checkpoint", p["evil"]], "error"),
        ("sample --checkpoint flipped bytes", S + fast + ["--checkpoint", p["flipped"]], "error"),
        ("sample --checkpoint a directory", S + fast + ["--checkpoint", wd], "error"),
        # ---- run directories
        ("sample --workdir missing", ["sample", "--workdir", root / "nowhere"] + fast, "error"),
        ("sample --workdir a file", ["sample", "--workdir", p["afile"]] + fast, "error"),
        ("sample no checkpoint", ["sample", "--workdir", p["nockpt"]] + fast, "error"),
        ("sample config.json broken", ["sample", "--workdir", p["broken"]] + fast, "error"),
        ("sample config.json a list", ["sample", "--workdir", p["listcfg"]] + fast, "error"),
        ("sample config.json empty", ["sample", "--workdir", p["emptycfg"]] + fast, "error"),
        ("sample config.json binary", ["sample", "--workdir", p["binary"]] + fast, "error"),
        ("sample config.json unknown key", ["sample", "--workdir", p["unknownkey"]] + fast, "error"),
        ("sample config.json newer schema", ["sample", "--workdir", p["newer"]] + fast, "error"),
        # ---- config files
        ("sample --config missing.py", S + fast + ["--config", root / "missing.py"], "error"),
        ("sample --config syntax error", S + fast + ["--config", p["syntax"]], "error"),
        ("sample --config no get_config", S + fast + ["--config", p["noget"]], "error"),
        ("sample --config returns a dict", S + fast + ["--config", p["wrongtype"]], "error"),
        ("sample --config run's config.json", S + fast + ["--config", wd / "config.json"] + out("json"), "ok"),
        ("sample --config ve/checkerboard (VP run)", S + fast + ["--config", "ve/checkerboard"], "error"),
        ("sample --config ve/... --allow-config-mismatch", S + fast + TINY[:3] + [
            "--config", "ve/checkerboard", "--allow-config-mismatch"] + out("allowed"), "ok"),
        # ---- overrides
        ("sample --config.sde.beta_max=10", S + fast + ["--config.sde.beta_max=10"], "error"),
        ("sample --config.nope=1", S + fast + ["--config.nope=1"], "error"),
        ("sample --config.sampling.steps=abc", S + fast + ["--config.sampling.steps=abc"], "error"),
        ("sample --config.sampling.eps=-1", S + fast + ["--config.sampling.eps=-1"] + out("epsneg"), "either"),
        ("sample --config.sampling.eps=2", S + fast + ["--config.sampling.eps=2"], "error"),
        ("sample --config.sampling.batch_size=0", S + fast + ["--config.sampling.batch_size=0"], "error"),
        ("sample --config.sampling.batch_size=-1", S + fast + ["--config.sampling.batch_size=-1"], "error"),
        ("sample --config.sampling.n=0", S + ["--method", "ddim", "--steps", "2", "--config.sampling.n=0"],
         "error"),
        ("sample --config.model.hidden=64 (mismatch)", S + fast + ["--config.model.hidden=64"], "error"),
        ("sample --config.sampling.eps=nan", S + fast + ["--config.sampling.eps=nan"], "error"),
        ("sample --config.sde.N=0", S + fast + ["--config.sde.N=0"], "error"),
        ("sample --config.schema_version=1", S + fast + ["--config.schema_version=1"] + out("v1"), "either"),
        ("sample --config.training (no value)", S + fast + ["--config.training"], "error"),
        ("sample --out /proc/x", S + fast + ["--out", "/proc/forbidden/x"], "error"),
        # ---- likelihood / evaluate
        ("likelihood --config.eval.atol=nan", L + ["--n", "4", "--config.eval.atol=nan"], "error"),
        ("likelihood --n 0", L + ["--n", "0"], "error"),
        ("likelihood --split val", L + ["--split", "val"], "error"),
        ("likelihood --config.eval.rtol=0", L + ["--n", "4", "--config.eval.rtol=0"], "error"),
        ("likelihood --config.eval.rtol=-1", L + ["--n", "4", "--config.eval.rtol=-1"], "error"),
        ("likelihood --config.eval.batch_size=0", L + ["--n", "4", "--config.eval.batch_size=0"], "error"),
        ("likelihood --config.eval.divergence=nope", L + ["--n", "4", "--config.eval.divergence=nope"], "error"),
        ("likelihood --config.eval.n_probes=0", L + ["--n", "4", "--config.eval.divergence=hutchinson",
                                                     "--config.eval.n_probes=0"], "error"),
        ("evaluate --n 0", E + ["--n", "0"], "error"),
        ("evaluate --method ode", E + ["--method", "ode", "--n", "16"], "ok"),
        # ---- train
        ("train without --config", ["train", "--workdir", root / "t_none", "--no-progress"], "error"),
        ("train --config.training.batch_size=0", T + ["--workdir", root / "t_b0", "--config.training.batch_size=0"],
         "error"),
        ("train --config.training.n_iters=-5", T + ["--workdir", root / "t_nneg", "--config.training.n_iters=-5"],
         "error"),
        ("train --config.optim.lr=-1", T + ["--workdir", root / "t_lr", "--config.optim.lr=-1"], "error"),
        ("train --config.optim.lr=1e30 (diverges)", T + ["--workdir", root / "t_div", "--config.optim.lr=1e30",
                                                         "--config.optim.warmup=0", "--config.optim.grad_clip=0",
                                                         "--config.training.n_iters=20"], "error"),
        ("train --config.training.mixed_precision=fp16 (CPU)",
         T + ["--workdir", root / "t_fp16", "--config.training.mixed_precision=fp16", "--device", "cpu"], "either"),
        ("train --config.training.mixed_precision=fp8", T + ["--workdir", root / "t_fp8",
                                                             "--config.training.mixed_precision=fp8"], "error"),
        ("train --config.data.dataset=nope", T + ["--workdir", root / "t_ds", "--config.data.dataset=nope"], "error"),
        ("train --config.data.dataset=cifar10 (no files)",
         T + ["--workdir", root / "t_cifar", "--config.data.dataset=cifar10", "--config.data.root", root / "nocifar"],
         "error"),
        ("train cifar10 with a missing root",
         T + ["--workdir", root / "t_cifar2", "--config.data.dataset=cifar10", "--config.data.num_channels=3",
              "--config.data.image_size=32", "--config.data.root", root / "nocifar"], "error"),
        ("train --config.training.eps=0", T + ["--workdir", root / "t_eps", "--config.training.eps=0"], "either"),
        ("train --config.training.eps=2", T + ["--workdir", root / "t_eps2", "--config.training.eps=2"], "error"),
        ("train --config.training.weighting=nope", T + ["--workdir", root / "t_w",
                                                        "--config.training.weighting=nope"], "error"),
        ("train --config.model.output=nope", T + ["--workdir", root / "t_out", "--config.model.output=nope"],
         "error"),
        ("train --config a run's config.json", ["train", "--config", wd / "config.json", "--workdir",
                                                root / "t_json", "--no-progress", "--config.training.n_iters=2"],
         "ok"),
        ("train --config.sde.name=nope", T + ["--workdir", root / "t_sde", "--config.sde.name=nope"], "error"),
        ("train --config.model.name=nope", T + ["--workdir", root / "t_model", "--config.model.name=nope"], "error"),
        ("train --config.model.ema_rate=1.5", T + ["--workdir", root / "t_ema", "--config.model.ema_rate=1.5"],
         "error"),
        ("train --config.training.snapshot_freq=0", T + ["--workdir", root / "t_snap",
                                                         "--config.training.snapshot_freq=0"], "error"),
        ("train --config.training.log_freq=0", T + ["--workdir", root / "t_log", "--config.training.log_freq=0"],
         "error"),
        ("train --config.sde.beta_max=-1", T + ["--workdir", root / "t_beta", "--config.sde.beta_max=-1"], "error"),
        ("train --workdir a file", T + ["--workdir", p["afile"]], "error"),
        ("train resume under VE", ["train", "--workdir", wd, "--no-progress", "--config.sde.name=vesde"], "error"),
        ("train on a locked workdir", ["train", "--workdir", wd, "--no-progress"], "error", "lock"),
        ("train --device cuda (no CUDA)" if not torch.cuda.is_available() else "train --device cuda:99",
         ["train", "--workdir", wd, "--no-progress", "--device",
          "cuda" if not torch.cuda.is_available() else "cuda:99"], "error"),
        # ---- convert, demo, misc
        ("convert missing src", ["convert", root / "missing.pth", root / "dst.pt", "--config", "ddpmpp_cifar10"],
         "error"),
        ("convert text src", ["convert", p["text"], root / "dst.pt", "--config", "ddpmpp_cifar10"], "error"),
        ("convert code-carrying src", ["convert", p["evil"], root / "dst.pt", "--config", "ddpmpp_cifar10"], "error"),
        ("convert unknown config name", ["convert", p["text"], root / "dst.pt", "--config", "nope"], "error"),
        ("demo --config missing", ["demo", "--workdir", root / "demo", "--config", root / "missing.py"], "error"),
        ("no command", [], "error"),
        ("unknown command", ["frobnicate"], "error"),
        ("sample without --workdir", ["sample"], "error"),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None, help="write the per-case results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = build(root)
        for case in cases(paths, root):
            name, argv_, expect = case[:3]
            lock = RunLock(paths["wd"]).acquire() if len(case) > 3 and case[3] == "lock" else None
            try:
                rc, err, tb = run_cli(argv_)
            finally:
                if lock is not None:
                    lock.release()
            outcome = classify(rc, err, tb, expect)
            if expect == "ok" and outcome != "accepted" and outcome != "traceback":
                outcome = "wrongly refused"
            msg = (tb.strip().splitlines()[-1] if tb else next((ln for ln in err.splitlines() if "error:" in ln),
                                                               err.strip().splitlines()[-1] if err.strip() else ""))
            results.append({"case": name, "expect": expect, "outcome": outcome, "exit": rc, "message": msg[:300]})
            print(f"{outcome:15s} {name:55s} {msg[:150]}", flush=True)
        code_ran = paths["marker"].exists()
    counts = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print(json.dumps({"cases": len(results), "counts": counts, "code_executed": code_ran,
                      "seconds": round(time.perf_counter() - t0, 1)}))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "code_executed": code_ran, "results": results},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
