"""Reliability and security (issue 12): loaders run no code from files, one trainer per run
directory, checkpoint digests, checkpoint-vs-config checks, shape/value checks, seeded init,
dedicated errors for divergence and unwritable/full disks."""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from score_sde import DSMLoss, ScoreModel, VESDE, VPSDE
from score_sde.safe_pickle import WeightsFileError
from score_sde.training import (CheckpointError, ConfigMismatchError, RunLock, RunLockedError, TrainingDivergedError,
                                WorkdirWriteError, check_config_compatible, list_checkpoints, load_checkpoint,
                                read_log, save_checkpoint, train)
from score_sde.training import checkpoint as ckpt_mod


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_weight_files(tmp_path):
    """(text file, training checkpoint, code-carrying file, marker the last would create)."""
    from score_sde.training.checkpoint import save_checkpoint
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    ckpt = save_checkpoint(tmp_path / "checkpoint_00000001.pt", model=nn.Linear(2, 2), step=1)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": _Evil(marker)}}, evil)
    return text, ckpt, evil, marker


def _assert_one_sentence(excinfo, path):
    msg = str(excinfo.value)
    assert str(path) in msg and "\n" not in msg and "expected" in msg
    assert excinfo.value.__cause__ is None and excinfo.value.__context__ is None  # no torch traceback chained


def test_inception_loader_refuses_text_checkpoint_and_code(tmp_path):
    from score_sde.evaluation import load_inception
    text, ckpt, evil, marker = _bad_weight_files(tmp_path)
    for p, why in ((text, "text file"), (ckpt, "training checkpoint"), (evil, "pickled code")):
        with pytest.raises(WeightsFileError, match=why) as e:
            load_inception(p)
        _assert_one_sentence(e, p)
    assert not marker.exists()


def test_digits_classifier_loader_refuses_text_checkpoint_and_code(tmp_path):
    from score_sde.evaluation.digits_features import load_digits_classifier
    text, ckpt, evil, marker = _bad_weight_files(tmp_path)
    for p, why in ((text, "text file"), (ckpt, "training checkpoint"), (evil, "pickled code")):
        with pytest.raises(WeightsFileError, match=why) as e:
            load_digits_classifier(p)
        _assert_one_sentence(e, p)
    assert not marker.exists()


def test_reference_converter_refuses_text_and_code(tmp_path):
    from score_sde.interop import load_reference_checkpoint
    text, _, evil, marker = _bad_weight_files(tmp_path)
    for p, why in ((text, "text file"), (evil, "pickled code")):
        with pytest.raises(ValueError, match=why) as e:
            load_reference_checkpoint(p, "ddpmpp_cifar10")
        _assert_one_sentence(e, p)
    assert not marker.exists()


# ----------------------------------------------------------------------------- training helpers

REPO = Path(__file__).resolve().parents[1]

NET_SRC = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, d=2, h=16, out=None):
            super().__init__()
            self.inp = nn.Linear(d, h)
            self.emb = nn.Linear(1, h)
            self.out = nn.Sequential(nn.SiLU(), nn.Linear(h, out or d))

        def forward(self, x, labels):
            return self.out(self.inp(x) + self.emb(labels[:, None]))

    def make_model(seed=0, **kw):
        from score_sde import ScoreModel, VPSDE
        torch.manual_seed(seed)
        return ScoreModel(Net(**kw), VPSDE(), output="eps")

    def make_data(n=256):
        g = torch.Generator().manual_seed(123)
        return torch.randn(n, 2, generator=g) * 0.5
""")
_ns = {}
exec(NET_SRC, _ns)
make_model, make_data = _ns["make_model"], _ns["make_data"]
FAST = dict(lr=2e-3, warmup=5, ema_rate=0.9, progress=False, log_every=5, batch_size=32)
CFG = {"sde": {"name": "vpsde", "beta_min": 0.1, "beta_max": 20.0, "sigma_min": 0.01, "sigma_max": 50.0, "N": 1000},
       "model": {"name": "mlp", "output": "eps", "hidden": 16, "ema_rate": 0.9},
       "data": {"dataset": "checkerboard", "image_size": 2, "num_channels": 0, "centered": True, "root": ""},
       "optim": {"lr": 2e-3}, "training": {"n_iters": 10, "batch_size": 32, "log_freq": 5}}


pytestmark = pytest.mark.usefixtures("one_thread")




def _wait_for(pred, proc, what, timeout=120):
    deadline = time.time() + timeout
    while not pred():
        if proc.poll() is not None:
            pytest.fail(f"child exited before {what}:\n" + proc.stdout.read().decode())
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"child never reached {what}")
        time.sleep(0.05)


# ----------------------------------------------------------------------------- one trainer per run
def test_second_trainer_on_same_workdir_is_refused_naming_the_holder(tmp_path, child_env):
    run = tmp_path / "run"
    started = tmp_path / "started"
    script = NET_SRC + textwrap.dedent(f"""
        import time, torch
        torch.set_num_threads(1)
        from score_sde import DSMLoss, VPSDE
        from score_sde.training import train
        data = make_data()
        def slow(n, generator):
            open({str(started)!r}, "w").close()
            time.sleep(0.1)
            return data[torch.randint(0, len(data), (n,), generator=generator)]
        train(make_model(0), DSMLoss(VPSDE()), slow, workdir={str(run)!r}, n_steps=15, checkpoint_every=5,
              batch_size=32, lr=2e-3, warmup=5, ema_rate=0.9, log_every=5, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=child_env(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(started.exists, proc, "its first step")
        with pytest.raises(RunLockedError) as e:
            train(make_model(1), DSMLoss(VPSDE()), make_data(), workdir=run, n_steps=15, checkpoint_every=5, **FAST)
        msg = str(e.value)
        assert f"PID {proc.pid}" in msg and str(run) in msg and "\n" not in msg
        assert proc.wait(timeout=120) == 0, proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    log = read_log(run / "log.jsonl")
    assert [r["event"] for r in log if r.get("event") in ("start", "resume")] == ["start"]
    assert [r["step"] for r in log if "loss" in r] == [5, 10, 15]     # one run, no interleaving
    assert load_checkpoint(list_checkpoints(run / "checkpoints")[-1])["step"] == 15


def test_lock_is_released_when_the_holder_is_sigkilled(tmp_path, child_env):
    run = tmp_path / "run"
    script = textwrap.dedent(f"""
        import time
        from score_sde.training import RunLock
        held = RunLock({str(run)!r}).acquire()
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=child_env(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: (run / ".lock").is_file() and (run / ".lock").read_text().strip(), proc, "the lock")
        holder = json.loads((run / ".lock").read_text())
        assert holder["pid"] == proc.pid and holder["host"] and holder["started"] > 0
        with pytest.raises(RunLockedError, match=f"PID {proc.pid}"):
            RunLock(run).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunLock(run) as lock:          # the kernel dropped the dead holder's lock
        assert lock.held
    res = train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=run, n_steps=5, **FAST)
    assert res.step == 5


# ----------------------------------------------------------------------------- digests
def _flip_inside_tensor(path, name="ema", n=400):
    """Flip n bytes inside the largest tensor payload of a torch.save zip archive."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        infos = [i for i in z.infolist() if "/data/" in i.filename]
        big = max(infos, key=lambda i: i.file_size)
        offset = big.header_offset + 30 + len(big.filename.encode()) + len(big.extra)
        size = big.file_size
    raw = bytearray(path.read_bytes())
    assert size >= n
    for i in range(n):
        raw[offset + i] ^= 0xFF
    path.write_bytes(bytes(raw))


def _big_model(seed=0):
    return make_model(seed, h=64)


def test_flipped_bytes_are_refused_and_skipped_on_resume(tmp_path):
    run = tmp_path / "run"
    train(_big_model(0), DSMLoss(VPSDE()), make_data(), workdir=run, n_steps=10, checkpoint_every=5, keep=5, **FAST)
    files = list_checkpoints(run / "checkpoints")
    assert [p.name for p in files] == ["checkpoint_00000005.pt", "checkpoint_00000010.pt"]
    newest = files[-1]
    before = load_checkpoint(newest)["step"]
    _flip_inside_tensor(newest)
    torch.load(newest, weights_only=True)           # still readable: only the digest catches it
    with pytest.raises(CheckpointError, match=r"checkpoint_00000010\.pt is corrupt.*digest"):
        load_checkpoint(newest)
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        res = train(_big_model(1), DSMLoss(VPSDE()), make_data(), workdir=run, n_steps=10, checkpoint_every=5,
                    keep=5, **FAST)
    resumed = [r for r in read_log(run / "log.jsonl") if r.get("event") == "resume"]
    assert resumed[-1]["step"] == 5 and before == 10 and res.step == 10


def test_checkpoint_without_digest_loads_with_a_note(tmp_path):
    p = save_checkpoint(tmp_path / "checkpoint_00000001.pt", model=make_model(0), step=1)
    obj = torch.load(p, weights_only=True)
    assert len(obj["digest"]["sha256"]) == 64
    del obj["digest"]                      # what score_sde 0.1.0 wrote
    torch.save(obj, p)
    with pytest.warns(UserWarning, match="no digest"):
        assert load_checkpoint(p)["step"] == 1


# ----------------------------------------------------------------------------- config vs checkpoint
def _ve(cfg):
    c = json.loads(json.dumps(cfg))
    c["sde"]["name"] = "vesde"
    return c


def test_config_check_names_model_defining_keys_and_allows_training_settings():
    changed = json.loads(json.dumps(CFG))
    changed["optim"]["lr"] = 1e-4
    changed["training"]["n_iters"] = 99
    changed["model"]["ema_rate"] = 0.99
    changed["sde"]["sigma_max"] = 80.0        # a VE-only key under VP: irrelevant
    soft = check_config_compatible(CFG, changed)
    assert any(s.startswith("optim.lr") for s in soft) and any(s.startswith("training.n_iters") for s in soft)
    for key, value in (("sde.name", "vesde"), ("sde.beta_max", 10.0), ("model.hidden", 32),
                       ("model.output", "score"), ("data.image_size", 4)):
        bad = json.loads(json.dumps(CFG))
        sec, k = key.split(".")
        bad[sec][k] = value
        with pytest.raises(ConfigMismatchError, match=key.replace(".", r"\.")) as e:
            check_config_compatible(CFG, bad, where="checkpoint X.pt")
        assert e.value.keys == [key] and "X.pt" in str(e.value)
        with pytest.warns(UserWarning, match="override"):
            check_config_compatible(CFG, bad, allow_mismatch=True)
    assert check_config_compatible(None, CFG) == []


def test_resume_under_another_sde_is_refused_and_config_json_kept(tmp_path):
    run = tmp_path / "run"
    train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=run, n_steps=5, config=CFG, **FAST)
    with pytest.raises(ConfigMismatchError, match=r"sde\.name \('vpsde' in the checkpoint, 'vesde' now\)"):
        train(make_model(0), DSMLoss(VESDE()), make_data(), workdir=run, n_steps=10, config=_ve(CFG), **FAST)
    assert json.loads((run / "config.json").read_text())["sde"]["name"] == "vpsde"
    assert RunLock(run).acquire().held      # the refused run released the lock
    # training settings may change, with a warning
    more = json.loads(json.dumps(CFG))
    more["optim"]["lr"] = 1e-3
    with pytest.warns(UserWarning, match="optim.lr"):
        res = train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=tmp_path / "run2", n_steps=5, config=CFG,
                    **FAST) and train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=tmp_path / "run2",
                                      n_steps=10, config=more, **FAST)
    assert res.step == 10


# ----------------------------------------------------------------------------- write errors
@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only")])
def test_full_or_read_only_disk_gives_a_one_line_error(tmp_path, monkeypatch, code, words):
    def failing(*a, **k):
        raise OSError(code, os.strerror(code))

    # a checkpoint write (step 5) fails at torch.save: WorkdirWriteError naming the file, no temp file left
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(ckpt_mod.torch, "save", failing)
        with pytest.raises(WorkdirWriteError) as e:
            train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=run, n_steps=5, config=CFG, **FAST)
    msg = str(e.value)
    assert words in msg and "\n" not in msg and "checkpoint_00000005.pt" in msg and e.value.errno == code
    assert not list((run / "checkpoints").glob(".*.tmp"))
    # config.json: a failure at fsync
    with monkeypatch.context() as m:
        m.setattr(ckpt_mod.os, "fsync", failing)
        with pytest.raises(WorkdirWriteError, match=words):
            ckpt_mod.atomic_save_text(tmp_path / "config.json", {"a": 1})
    # the lock file cannot be created
    with monkeypatch.context() as m:
        m.setattr(os, "open", failing)
        with pytest.raises(WorkdirWriteError, match=r"\.lock: .*" + words):
            RunLock(tmp_path / "other").acquire()
    # the JSON log: a failure at its write
    from score_sde.training import logs
    log = logs.JSONLogger(tmp_path / "log.jsonl", tensorboard=False)

    class Full:
        def write(self, s):
            raise OSError(code, os.strerror(code))

        def close(self):
            pass

    log._f.close()
    log._f = Full()
    with pytest.raises(WorkdirWriteError, match=words):
        log.log({"step": 1})


def test_divergence_raises_a_dedicated_error(tmp_path):
    with pytest.raises(TrainingDivergedError, match=r"training diverged.*lower lr") as e:
        train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=tmp_path, n_steps=20, lr=1e30, warmup=0,
              grad_clip=None, ema_rate=0.9, log_every=5, batch_size=32, progress=False)
    assert "\n" not in str(e.value) and isinstance(e.value, FloatingPointError)


# ----------------------------------------------------------------------------- shapes and values
def test_wrong_shape_network_is_refused_before_the_first_step(tmp_path):
    model = make_model(0, out=1)                  # (B, 1) for (B, 2) data: used to train by broadcasting
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"returned \(4, 1\) for x of shape \(4, 2\)"):
        model(x, torch.full((4,), 0.5))
    with pytest.raises(ValueError, match=r"\(4, 1\) for x of shape \(4, 2\)"):
        DSMLoss(VPSDE())(lambda x, t: x[:, :1], x)          # a plain score_fn, no ScoreModel
    with pytest.raises(ValueError, match="shaped like x"):
        train(model, DSMLoss(VPSDE()), make_data(), workdir=tmp_path, n_steps=5, **FAST)
    assert list_checkpoints(tmp_path / "checkpoints") == []
    with pytest.raises(ValueError, match="int64"):
        DSMLoss(VPSDE())(lambda x, t: torch.zeros_like(x, dtype=torch.int64), x)


def test_non_finite_mixture_parameters_and_label_scale_are_refused():
    from score_sde import Gaussian, GaussianMixture
    means = [[0.0, 0.0], [1.0, 1.0]]
    for w in ([float("nan"), 1.0], [float("inf"), 1.0]):
        with pytest.raises(ValueError, match="weights must be finite"):
            GaussianMixture(means, weights=w)
    with pytest.raises(ValueError, match="means must be finite"):
        GaussianMixture([[0.0, float("nan")], [1.0, 1.0]])
    with pytest.raises(ValueError, match="finite"):
        Gaussian([0.0, 0.0], cov=float("nan"))
    with pytest.raises(ValueError, match="covariances must be finite"):
        GaussianMixture(means, covs=[[1.0, float("inf")], [1.0, 1.0]])
    with pytest.raises(ValueError, match="label_scale"):
        ScoreModel(nn.Linear(2, 2), VPSDE(), time_label="t", label_scale=float("nan"))


# ----------------------------------------------------------------------------- seeding
def test_config_seed_seeds_the_initialisation_and_step_one(tmp_path):
    from score_sde import config, experiment
    cfg = config.load_config("vp/checkerboard", ["--config.model.hidden=16", "--config.model.num_blocks=1",
                                                   "--config.model.embedding_dim=8", "--config.training.n_iters=1",
                                                   "--config.training.batch_size=16",
                                                   "--config.training.snapshot_sampling=false"])
    states = []
    for i, junk in enumerate((1, 2)):
        torch.manual_seed(junk)          # a different global RNG state before each run
        res = experiment.run_train(cfg, tmp_path / f"run{i}", progress=False)
        states.append({k: v.clone() for k, v in res.model.state_dict().items()})
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    other = config.build_model(cfg, seed=cfg.seed + 1).state_dict()
    first = config.build_model(cfg).state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_ddp_ranks_all_learn_that_the_run_directory_is_locked(tmp_path, child_env):
    """2 gloo ranks on a locked workdir: both stop with the holder's message, neither hangs."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "run"
    script = NET_SRC + textwrap.dedent(f"""
        import os, sys, torch
        torch.set_num_threads(1)
        from score_sde import DSMLoss, VPSDE
        from score_sde.training import RunLockedError, train
        try:
            train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir={str(run)!r}, n_steps=5, batch_size=32,
                  progress=False, device="cpu")
        except RunLockedError as e:
            print("REFUSED:", e)
            sys.exit(3)
    """)
    with RunLock(run):
        procs = []
        for rank in range(2):
            env = child_env()
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port))
            procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        try:
            outs = [p.communicate(timeout=180)[0].decode() for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    assert [p.returncode for p in procs] == [3, 3], "\n".join(outs)
    assert all(f"REFUSED: run directory {run} is in use by PID {os.getpid()}" in o for o in outs), "\n".join(outs)
    assert not (run / "log.jsonl").exists()


def test_crafted_checkpoint_runs_no_code_and_resume_skips_it(tmp_path):
    run = tmp_path / "run"
    train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=run, n_steps=5, **FAST)
    marker = tmp_path / "pwned"
    evil = run / "checkpoints" / "checkpoint_00000010.pt"
    torch.save({"format": "score_sde.training/1", "step": 10, "model": {"w": _Evil(marker)}}, evil)
    with pytest.raises(CheckpointError, match="pickled code") as e:
        load_checkpoint(evil)
    assert "\n" not in str(e.value) and e.value.__context__ is None
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        res = train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=run, n_steps=8, **FAST)
    assert res.step == 8 and not marker.exists()


def test_load_model_checks_the_config_when_given(tmp_path):
    from score_sde.training import load_model
    res = train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=tmp_path, n_steps=5, config=CFG, **FAST)
    with pytest.raises(ConfigMismatchError, match=r"sde\.name"):
        load_model(res.checkpoint, make_model(1), config=_ve(CFG))
    with pytest.warns(UserWarning, match="override"):
        load_model(res.checkpoint, make_model(1), config=_ve(CFG), allow_config_mismatch=True)
    m = load_model(res.checkpoint, make_model(1), config=CFG)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), res.ema.module.state_dict().values()))
