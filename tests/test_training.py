"""Training loop: loss decrease against the exact-score floor, EMA math, checkpoint atomicity
(monkeypatched and SIGKILLed writes), exact resume, corrupt/incompatible checkpoint errors,
weights_only loading, DDP with gloo in 2 processes vs 1 process, JSON logs, bad arguments."""
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from score_sde import DSMLoss, ScoreModel, VPSDE, Gaussian
from score_sde.training import (EMA, CheckpointError, load_checkpoint, load_model, list_checkpoints, lr_at,
                                read_log, save_checkpoint, train)
from score_sde.training import checkpoint as ckpt_mod

REPO = Path(__file__).resolve().parents[1]

# A tiny score net, written out so that child processes can rebuild it from this source text.
NET_SRC = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, d=2, h=32):
            super().__init__()
            self.inp = nn.Linear(d, h)
            self.emb = nn.Linear(2, h)
            self.out = nn.Sequential(nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, d))
            self.register_buffer("freqs", torch.randn(1))   # a buffer, like random Fourier features

        def forward(self, x, labels):
            e = torch.stack([torch.sin(labels * self.freqs), torch.cos(labels * self.freqs)], 1)
            return self.out(self.inp(x) + self.emb(e))

    def make_model(seed=0, h=32):
        from score_sde import ScoreModel, VPSDE
        torch.manual_seed(seed)
        return ScoreModel(Net(h=h), VPSDE(), output="eps")

    def make_data(n=512):
        g = torch.Generator().manual_seed(123)
        return torch.randn(n, 2, generator=g) * 0.5 + torch.tensor([1.0, -0.5])
""")
_ns = {}
exec(NET_SRC, _ns)
Net, make_model, make_data = _ns["Net"], _ns["make_model"], _ns["make_data"]

FAST = dict(lr=2e-3, warmup=10, grad_clip=1.0, ema_rate=0.9, progress=False, log_every=10)


pytestmark = pytest.mark.usefixtures("one_thread")


def _params(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _assert_same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=atol, msg=k)




# ----------------------------------------------------------------------------- learning
def test_loss_decreases_to_exact_score_floor(tmp_path):
    """On Gaussian data the DSM loss of the exact score is the floor; training gets close to it."""
    sde = VPSDE()
    target = Gaussian(mean=[1.0, -0.5], cov=[[0.3, 0.1], [0.1, 0.2]])
    loss_fn = DSMLoss(sde)
    model = make_model(0)
    g = torch.Generator().manual_seed(7)
    x_eval = target.sample(4096, generator=g)
    t_eval = loss_fn.sample_t(4096, generator=g)
    z_eval = torch.randn(4096, 2, generator=g)

    def eval_loss(score_fn):
        with torch.no_grad():
            return float(loss_fn(score_fn, x_eval, t=t_eval, noise=z_eval).mean())

    before = eval_loss(model)
    floor = eval_loss(target.score_fn(sde))
    data = target.sample(8192, generator=torch.Generator().manual_seed(1))
    res = train(model, loss_fn, data, workdir=tmp_path, n_steps=300, batch_size=128,
                **{**FAST, "lr": 5e-3, "ema_rate": 0.97, "log_every": 50})
    after = eval_loss(res.ema.module)
    # the excess over the floor shrinks by more than 90% (measured: 1.65 -> 0.10 in 300 steps)
    assert after - floor < 0.1 * (before - floor), (before, after, floor)
    logged = [r["loss"] for r in res.log]
    assert logged[-1] < logged[0]


# ----------------------------------------------------------------------------- EMA
def test_ema_closed_form_and_buffers():
    torch.manual_seed(0)
    m = Net()
    m.inp.weight.requires_grad_(False)           # a frozen parameter (like random Fourier features)
    ema = EMA(m, decay=0.9)
    s0 = _params(m)
    target = {k: torch.randn_like(v) for k, v in s0.items()}
    m.load_state_dict(target)                     # parameters AND the buffer jump to a new value
    for _ in range(7):
        ema.update()
    got = ema.module.state_dict()
    for k in s0:                                  # s_n = p + (s_0 - p) decay^n
        torch.testing.assert_close(got[k], target[k] + (s0[k] - target[k]) * 0.9 ** 7, rtol=1e-5, atol=1e-6)
    assert ema.num_updates == 7
    # the recurrence with a changing model
    ema2 = EMA(m, decay=0.5)
    ref = _params(m)
    for i in range(3):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * (i + 1))
        ema2.update()
        ref = {k: 0.5 * ref[k] + 0.5 * v for k, v in _params(m).items()}
    _assert_same(ref, _params(ema2.module), atol=1e-6)
    # warmup: decay = min(rate, (1 + n) / (10 + n))
    ema3 = EMA(m, decay=0.999, warmup=True)
    assert ema3.current_decay() == pytest.approx(0.1)
    ema3.update()
    assert ema3.current_decay() == pytest.approx(2 / 11)
    # copy_to / average_parameters restore the raw weights
    raw = _params(m)
    with ema.average_parameters(m):
        _assert_same(_params(m), _params(ema.module))
    _assert_same(_params(m), raw)
    with pytest.raises(ValueError, match="decay"):
        EMA(m, decay=1.0)


# ----------------------------------------------------------------------------- resume
def test_resume_is_bit_identical_and_crash_resumes_at_saved_step(tmp_path):
    data = make_data()
    loss_fn = DSMLoss(VPSDE())
    full = train(make_model(0), loss_fn, data, workdir=tmp_path / "full", n_steps=120, batch_size=64,
                 checkpoint_every=120, **FAST)
    # 60 + resume 60
    train(make_model(0), loss_fn, data, workdir=tmp_path / "split", n_steps=60, batch_size=64, **FAST)
    split = train(make_model(99), loss_fn, data, workdir=tmp_path / "split", n_steps=120, batch_size=64, **FAST)
    _assert_same(_params(full.model), _params(split.model))
    _assert_same(_params(full.ema.module), _params(split.ema.module))
    assert split.step == 120
    # a crash at step 65 (checkpoints every 25) resumes from 50 and ends identical
    calls = {"n": 0}

    def crashing(n, generator):
        calls["n"] += 1
        if calls["n"] > 65:
            raise RuntimeError("simulated crash")
        return data[torch.randint(0, len(data), (n,), generator=generator)]

    def fine(n, generator):
        return data[torch.randint(0, len(data), (n,), generator=generator)]

    ref = train(make_model(0), loss_fn, fine, workdir=tmp_path / "ref", n_steps=80, batch_size=64, **FAST)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(make_model(0), loss_fn, crashing, workdir=tmp_path / "crash", n_steps=80, batch_size=64,
              checkpoint_every=25, **FAST)
    assert [p.name for p in list_checkpoints(tmp_path / "crash" / "checkpoints")] == [
        "checkpoint_00000025.pt", "checkpoint_00000050.pt"]
    res = train(make_model(5), loss_fn, fine, workdir=tmp_path / "crash", n_steps=80, batch_size=64,
                checkpoint_every=25, **FAST)
    events = [r for r in read_log(tmp_path / "crash" / "log.jsonl") if r.get("event") == "resume"]
    assert events[-1]["step"] == 50
    _assert_same(_params(ref.model), _params(res.model))


def test_kill_during_checkpoint_write_keeps_previous(tmp_path, child_env):
    """SIGKILL a training process while it writes its 2nd checkpoint: the 1st survives intact,
    the run resumes from it at its step and ends where an uninterrupted run ends."""
    flag = tmp_path / "writing"
    script = NET_SRC + textwrap.dedent(f"""
        import time, torch
        torch.set_num_threads(1)
        from score_sde import DSMLoss, VPSDE
        from score_sde.training import train
        real_save = torch.save
        def slow_save(obj, f, *a, **k):
            if isinstance(obj, dict) and obj.get("step") == 10:
                real_save(obj, f, *a, **k)      # bytes are in the temp file, not yet renamed
                f.flush()
                open({str(flag)!r}, "w").close()
                time.sleep(120)
            return real_save(obj, f, *a, **k)
        torch.save = slow_save
        train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir={str(tmp_path / "run")!r}, n_steps=15,
              batch_size=32, checkpoint_every=5, keep=5, lr=2e-3, warmup=10, ema_rate=0.9, log_every=5,
              progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=child_env(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not flag.exists():
        if proc.poll() is not None:
            pytest.fail("child exited early:\n" + proc.stdout.read().decode())
        if time.time() > deadline:
            proc.kill()
            pytest.fail("child never reached the checkpoint write")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cdir = tmp_path / "run" / "checkpoints"
    assert [p.name for p in list_checkpoints(cdir)] == ["checkpoint_00000005.pt"]
    assert list(cdir.glob(".checkpoint_*.tmp")), "the interrupted write should have left only a temp file"
    assert load_checkpoint(cdir / "checkpoint_00000005.pt")["step"] == 5
    res = train(make_model(3), DSMLoss(VPSDE()), make_data(), workdir=tmp_path / "run", n_steps=15, batch_size=32,
                checkpoint_every=5, keep=5, lr=2e-3, warmup=10, ema_rate=0.9, log_every=5, progress=False)
    assert not list(cdir.glob(".checkpoint_*.tmp"))
    resumed = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r.get("event") == "resume"]
    assert resumed and resumed[-1]["step"] == 5
    ref = train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=tmp_path / "ref", n_steps=15, batch_size=32,
                checkpoint_every=5, keep=5, lr=2e-3, warmup=10, ema_rate=0.9, log_every=5, progress=False)
    _assert_same(_params(ref.model), _params(res.model))


def test_failed_write_never_destroys_previous(tmp_path, monkeypatch):
    m = make_model(0)
    path = tmp_path / "checkpoint_00000001.pt"
    save_checkpoint(path, model=m, step=1)
    before = path.read_bytes()
    m2 = make_model(1)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=m2, step=2)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()
    # a diverged model is refused before anything is written
    with torch.no_grad():
        m2.net.inp.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        save_checkpoint(path, model=m2, step=3)
    assert path.read_bytes() == before


# ----------------------------------------------------------------------------- bad checkpoints
def test_corrupt_and_incompatible_checkpoints_name_file_and_mismatch(tmp_path):
    loss_fn = DSMLoss(VPSDE())
    run = tmp_path / "run"
    train(make_model(0), loss_fn, make_data(), workdir=run, n_steps=20, batch_size=32, checkpoint_every=10, **FAST)
    cdir = run / "checkpoints"
    good, newest = list_checkpoints(cdir)
    # truncated newest file: an explicit load names it; auto-resume warns and falls back to the previous
    newest.write_bytes(newest.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=str(newest.name)):
        load_checkpoint(newest)
    with pytest.warns(UserWarning, match=newest.name):
        res = train(make_model(0), loss_fn, make_data(), workdir=run, n_steps=20, batch_size=32, **FAST)
    assert res.step == 20
    assert [r for r in read_log(run / "log.jsonl") if r.get("event") == "resume"][-1]["step"] == 10
    assert (cdir / (newest.name + ".corrupt")).exists()          # moved aside, kept for inspection
    assert [p.name for p in list_checkpoints(cdir)] == [good.name, newest.name]   # rewritten by the resumed run
    # incompatible: another width -> shape mismatches, listed with the file name
    with pytest.raises(CheckpointError) as e:
        load_model(good, make_model(0, h=16))
    msg = str(e.value)
    assert good.name in msg and "shape mismatches" in msg and "net.inp.weight" in msg and "(32, 2)" in msg
    # another architecture -> missing / unexpected keys
    other = ScoreModel(nn.Sequential(nn.Linear(2, 2)), VPSDE())
    with pytest.raises(CheckpointError, match=r"missing keys .*unexpected keys"):
        load_model(good, other)
    with pytest.raises(CheckpointError, match=good.name):
        train(make_model(0, h=16), loss_fn, make_data(), workdir=tmp_path / "x", n_steps=30, batch_size=32,
              resume=good, **FAST)
    # garbage and foreign files
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt.*corrupt"):
        load_checkpoint(junk)
    torch.save({"a": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt.*not a score_sde training checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="missing.pt.*does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("executed code while loading",))


def test_weights_only_loading_and_no_wrapper_prefix(tmp_path):
    m = make_model(0)
    p = save_checkpoint(tmp_path / "c.pt", model=nn.DataParallel(m), step=3, ema=EMA(m, 0.9),
                        config={"model": {"nf": 32}, "training": {"lr": 2e-3}})
    raw = torch.load(p, weights_only=True)       # plain data only
    assert raw["step"] == 3 and raw["config"]["model"]["nf"] == 32
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in raw["model"])
    assert set(raw["model"]) == set(m.state_dict())
    # a checkpoint that would run code on load is refused
    obj = dict(raw)
    obj["meta"] = {"x": _Evil()}
    torch.save(obj, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="JSON-able"):
        save_checkpoint(tmp_path / "d.pt", model=m, step=1, config={"f": object()})


# ----------------------------------------------------------------------------- logs, data, arguments
def test_json_logs_lr_warmup_and_files(tmp_path):
    res = train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=tmp_path, n_steps=25, batch_size=32,
                lr=1e-3, warmup=20, log_every=5, checkpoint_every=10, keep=1, progress=False,
                config={"name": "toy"})
    recs = read_log(tmp_path / "log.jsonl")
    metrics = [r for r in recs if "event" not in r]
    assert [r["step"] for r in metrics] == [5, 10, 15, 20, 25]
    for r in metrics:
        assert {"step", "loss", "lr", "grad_norm", "images_per_s", "time", "wall"} <= set(r)
        assert r["loss"] > 0 and r["grad_norm"] > 0 and r["images_per_s"] > 0
        assert r["lr"] == pytest.approx(lr_at(r["step"] - 1, 1e-3, 20))
    assert metrics[0]["lr"] == pytest.approx(1e-3 * 5 / 20)
    assert [r["event"] for r in recs if "event" in r][0] == "start"
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["checkpoint_00000025.pt"]
    assert json.loads((tmp_path / "config.json").read_text()) == {"name": "toy"}
    assert res.checkpoint == tmp_path / "checkpoints" / "checkpoint_00000025.pt"


def test_data_sources_agree_and_mixed_precision_runs(tmp_path):
    data = make_data()
    loss_fn = DSMLoss(VPSDE())
    kw = dict(n_steps=20, batch_size=32, **FAST)
    a = train(make_model(0), loss_fn, data, workdir=tmp_path / "a", **kw)
    b = train(make_model(0), loss_fn, torch.utils.data.TensorDataset(data), workdir=tmp_path / "b", **kw)
    _assert_same(_params(a.model), _params(b.model))  # same step-indexed order through a DataLoader
    batches = [data[i:i + 32] for i in range(0, 512, 32)]
    c = train(make_model(0), loss_fn, batches, workdir=tmp_path / "c", **{**kw, "batch_size": None})
    assert c.step == 20 and all(torch.isfinite(v).all() for v in _params(c.model).values())
    levels = (data.clamp(-2, 2) * 60 + 128).round().to(torch.uint8)       # integer data + a transform
    f = train(make_model(0), loss_fn, levels, workdir=tmp_path / "f", transform=lambda x, g: x.float() / 255, **kw)
    f_ref = train(make_model(0), loss_fn, levels.float() / 255, workdir=tmp_path / "f_ref", **kw)
    _assert_same(_params(f.model), _params(f_ref.model))
    d = train(make_model(0), loss_fn, data, workdir=tmp_path / "d", amp="bf16", **kw)
    assert abs(d.log[-1]["loss"] - a.log[-1]["loss"]) < 0.25 * a.log[-1]["loss"]
    e = train(make_model(0), loss_fn, data, workdir=tmp_path / "e", amp="fp16", **kw)
    assert e.log[-1]["loss_scale"] > 1 and abs(e.log[-1]["loss"] - a.log[-1]["loss"]) < 0.25 * a.log[-1]["loss"]


def test_bad_arguments_name_the_parameter(tmp_path):
    m, loss_fn, data = make_model(0), DSMLoss(VPSDE()), make_data()
    for kwargs, pat in [({"amp": "fp8"}, "amp"), ({"lr": -1.0}, "lr"), ({"batch_size": 0}, "batch_size"),
                        ({"batch_size": 10_000}, "batch_size"), ({"ema_rate": 1.0}, "ema_rate"),
                        ({"snapshot_every": 5}, "snapshot_fn"), ({"n_steps": -1}, "n_steps")]:
        args = {"n_steps": 2, "batch_size": 16, "progress": False, **kwargs}
        with pytest.raises(ValueError, match=pat):
            train(m, loss_fn, data, workdir=tmp_path / "bad", **args)
    train(m, loss_fn, data, workdir=tmp_path / "w", n_steps=2, batch_size=16, progress=False)
    with pytest.raises(ValueError, match="resume=True"):
        train(m, loss_fn, data, workdir=tmp_path / "w", n_steps=2, batch_size=16, progress=False, resume=False)
    with pytest.raises(ValueError, match="floating point"):
        train(m, loss_fn, data.long(), workdir=tmp_path / "i", n_steps=2, batch_size=16, progress=False)


def test_diverging_run_raises_and_keeps_last_good_checkpoint(tmp_path):
    class Blowup(DSMLoss):
        def __call__(self, score_fn, x0, **kw):
            return super().__call__(score_fn, x0, **kw) * float("inf")

    with pytest.raises(FloatingPointError, match="step 5"):
        train(make_model(0), Blowup(VPSDE()), make_data(), workdir=tmp_path, n_steps=20, batch_size=32,
              log_every=5, grad_clip=None, progress=False)
    assert list_checkpoints(tmp_path / "checkpoints") == []


# ----------------------------------------------------------------------------- DDP
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gloo_two_processes_match_one_process(tmp_path, child_env):
    """2 ranks (env:// + gloo, as torchrun sets up) with 16 rows each == 1 process with 32 rows."""
    port = _free_port()
    script = NET_SRC + textwrap.dedent(f"""
        import os, torch
        torch.set_num_threads(1)
        from score_sde import DSMLoss, VPSDE
        from score_sde.training import train
        r = train(make_model(int(os.environ["RANK"])), DSMLoss(VPSDE()), make_data(), workdir={str(tmp_path / "ddp")!r},
                  n_steps=20, batch_size=32, lr=2e-3, warmup=10, grad_clip=1.0, ema_rate=0.9, log_every=10,
                  progress=False, device="cpu")
        torch.save({{k: v for k, v in r.model.state_dict().items()}}, {str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.pt")
    """)
    procs = []
    for rank in range(2):
        env = child_env()
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outs = [p.communicate(timeout=180)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(outs)
    p0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    _assert_same(p0, p1)                           # ranks stay identical (rank 1 started from other weights)
    single = train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=tmp_path / "one", n_steps=20,
                   batch_size=32, **{**FAST, "log_every": 10})
    _assert_same(_params(single.model), p0, atol=1e-5)
    # only rank 0 wrote: one start event, one line per logged step
    recs = read_log(tmp_path / "ddp" / "log.jsonl")
    assert [r["step"] for r in recs if "event" not in r] == [10, 20]
    assert [r for r in recs if r.get("event") == "start"][0]["world_size"] == 2
    ddp_log = [r["loss"] for r in recs if "event" not in r]
    one_log = [r["loss"] for r in single.log]
    assert ddp_log == pytest.approx(one_log, rel=1e-4)


def test_cosine_lr_decay_schedule_and_training_log(tmp_path):
    """optim.decay='cosine': warmup as before, then half a cosine from lr to decay_final * lr."""
    lr, w, n, f = 1e-3, 10, 111, 0.1
    assert lr_at(4, lr, w, "cosine", n, f) == pytest.approx(lr * 5 / 10)      # warmup unchanged
    assert lr_at(w, lr, w, "cosine", n, f) == pytest.approx(lr)
    assert lr_at(n - 1, lr, w, "cosine", n, f) == pytest.approx(f * lr)
    assert lr_at(w + 50, lr, w, "cosine", n, f) == pytest.approx(lr * (f + (1 - f) / 2))   # half way
    lrs = [lr_at(s, lr, w, "cosine", n, f) for s in range(w, n)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lr_at(n - 1, lr, w) == lr_at(n - 1, lr, w, "none", n, f) == lr           # default: constant
    with pytest.raises(ValueError, match="decay"):
        lr_at(0, lr, w, "linear", n)
    train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=tmp_path, n_steps=30, batch_size=16, lr=lr,
          warmup=5, lr_decay="cosine", lr_final=0.2, log_every=10, progress=False)
    logged = [r["lr"] for r in read_log(tmp_path / "log.jsonl") if "lr" in r]
    assert logged == pytest.approx([lr_at(s - 1, lr, 5, "cosine", 30, 0.2) for s in (10, 20, 30)])
    assert logged[-1] == pytest.approx(0.2 * lr)
    with pytest.raises(ValueError, match="lr_final"):
        train(make_model(0), DSMLoss(VPSDE()), make_data(), workdir=tmp_path / "b", n_steps=3, batch_size=16,
              lr_decay="cosine", lr_final=2.0, progress=False)


def test_config_optim_decay_reaches_the_loop():
    from score_sde.config import load_config
    from score_sde.config.factories import train_kwargs
    kw = train_kwargs(load_config("vp/digits", ["optim.decay=cosine", "optim.decay_final=0.05"]))
    assert (kw["lr_decay"], kw["lr_final"]) == ("cosine", 0.05)
    assert train_kwargs(load_config("vp/digits"))["lr_decay"] == "none"
