"""Training and sampling throughput of the paper's DDPM++ continuous CIFAR-10 model (issue 8).

Measures, for ``configs/vp/cifar10_ddpmpp_continuous.py`` (61.8M parameters) on synthetic
3x32x32 batches held on the device:

* training throughput of :func:`score_sde.training.train` itself (data indexing, DSM loss, Adam,
  gradient clipping, EMA, logging; images/s = median over log intervals after warm-up) and peak
  memory, at batch 128 and at the largest batch that fits (``--max-batch``);
* forward throughput (one sampler evaluation) at batch 1024;
* end-to-end sampling throughput of the 1000-step predictor-corrector sampler and of a
  20-evaluation fast solver through :func:`score_sde.sampling.sample`;
* ``--loss-curve N``: N training steps in fp32 and in bf16 from the same seed (same data and
  noise), printing both curves.

Each measurement runs for the fp32 baseline (TF32 allowed, as the reference runs) and, if any of
``--bf16 --channels-last --compile --fused-adam`` (or ``--fast``: all four) is given, for that
variant. ``--tiny`` swaps in a small network and 16x16 images so that the whole script runs on a
CPU in under a minute (CI keeps it working). Results are printed and, with ``--out``, written as
JSON.

    python benchmarks/train_throughput.py --tiny                         # CPU smoke run
    # one GPU, in three calls of a few minutes each:
    python benchmarks/train_throughput.py --fast --max-batch --skip sample --out train.json
    python benchmarks/train_throughput.py --fast --skip train,forward --out sample.json
    python benchmarks/train_throughput.py --fast --no-baseline --skip train,forward,sample --loss-curve 1000
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from score_sde import config as config_lib  # noqa: E402
from score_sde.training import train  # noqa: E402

COMPILE = {}  # torch.compile kwargs (--tiny on CPU uses backend="eager": the code path without C++ builds)


# ---------------------------------------------------------------------------------------------- setup
def make_config(tiny: bool):
    cfg = config_lib.load_config("vp/cifar10_ddpmpp_continuous")
    if tiny:
        m = cfg.model
        m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions = 16, (1, 2), 1, (8,)
        cfg.data.image_size = 16
    return cfg


def build(cfg, device):
    sde = config_lib.build_sde(cfg)
    torch.manual_seed(0)
    model = config_lib.build_model(cfg, sde).to(device)
    return sde, model, config_lib.build_loss(cfg, sde)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device):
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def variant_name(v):
    on = [k for k in ("bf16", "channels_last", "compile", "fused_adam") if v[k]]
    return "+".join(on) if on else "fp32"


# ---------------------------------------------------------------------------------------------- training
def train_throughput(cfg, device, batch, v, steps, log_every, n_data):
    """images/s of train() at ``batch`` (median over log intervals after the first) and peak GiB."""
    sde, model, loss_fn = build(cfg, device)
    shape = (cfg.data.num_channels, cfg.data.image_size, cfg.data.image_size)
    g = torch.Generator().manual_seed(1)
    data = (torch.rand((max(n_data, batch), *shape), generator=g) * 2 - 1).to(device)
    reset_peak(device)
    with tempfile.TemporaryDirectory() as wd:
        res = train(model, loss_fn, data, workdir=wd, n_steps=steps, batch_size=batch, lr=2e-4, warmup=5000,
                    grad_clip=1.0, ema_rate=0.9999, log_every=log_every, checkpoint_every=None, keep=1,
                    resume=False, seed=0, device=device, amp="bf16" if v["bf16"] else None,
                    channels_last=v["channels_last"], compile=(dict(COMPILE) or True) if v["compile"] else False, fused_adam=v["fused_adam"],
                    progress=False, tensorboard=False)
    rates = [r["images_per_s"] for r in res.log][1:]  # the first interval holds warm-up / compilation
    out = {"batch": batch, "images_per_s": statistics.median(rates) if rates else float("nan"),
           "intervals": len(rates), "peak_gib": peak_gib(device), "final_loss": res.log[-1]["loss"]}
    del model, res, data
    return out


def fits(cfg, device, batch, v):
    """Whether one training step at ``batch`` fits in memory (no compile: a quick probe)."""
    try:
        train_throughput(cfg, device, batch, {**v, "compile": False}, steps=2, log_every=1, n_data=batch)
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def largest_batch(cfg, device, v, start=128, limit=1 << 15):
    """Double the batch from ``start`` until a step no longer fits; then bisect between the last two."""
    lo, hi = None, None
    b = start
    while b <= limit:
        if fits(cfg, device, b, v):
            lo, b = b, b * 2
        else:
            hi = b
            break
    if lo is None:
        return None
    if hi is None:
        return lo
    while hi - lo > max(lo // 8, 1):  # about 12% resolution, in multiples of 8
        mid = (lo + hi) // 2 // 8 * 8
        if mid <= lo:
            break
        lo, hi = (mid, hi) if fits(cfg, device, mid, v) else (lo, mid)
    return lo


# ---------------------------------------------------------------------------------------------- inference
def score_fn_for(model, v):
    """An inference score_fn: eval mode, optional channels_last / compile / bf16 autocast, float32 out."""
    model = model.eval().requires_grad_(False)
    if v["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    fn = torch.compile(model, **COMPILE) if v["compile"] else model
    device = next(model.parameters()).device
    ac = torch.autocast(device.type, dtype=torch.bfloat16) if v["bf16"] else contextlib.nullcontext()

    def score_fn(x, t):
        if v["channels_last"] and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), ac:
            return fn(x, t).float()

    return score_fn


def forward_throughput(cfg, device, batch, v, repeats, iters):
    sde, model, _ = build(cfg, device)
    score_fn = score_fn_for(model, v)
    shape = (batch, cfg.data.num_channels, cfg.data.image_size, cfg.data.image_size)
    x = torch.randn(shape, device=device)
    t = torch.rand(batch, device=device) * 0.999 + 1e-3
    reset_peak(device)
    for _ in range(3):  # warm-up (and compilation)
        score_fn(x, t)
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            score_fn(x, t)
        sync(device)
        times.append((time.perf_counter() - t0) / iters)
    return {"batch": batch, "images_per_s": batch / statistics.median(times), "peak_gib": peak_gib(device)}


def sampling_throughput(cfg, device, batch, v, method, steps, repeats, options):
    from score_sde.sampling import sample

    sde, model, _ = build(cfg, device)
    score_fn = score_fn_for(model, v)
    shape = (batch, cfg.data.num_channels, cfg.data.image_size, cfg.data.image_size)
    kw = dict(method=method, steps=steps, device=device, check_finite=False, **options)
    gen = torch.Generator(device=device)
    sample(sde, score_fn, shape, generator=gen.manual_seed(0), **{**kw, "steps": min(steps, 3)})  # warm-up
    times, nfe = [], None
    for r in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = sample(sde, score_fn, shape, generator=gen.manual_seed(r), **kw)
        sync(device)
        times.append(time.perf_counter() - t0)
        nfe = out.nfe
    med = statistics.median(times)
    return {"method": method, "steps": steps, "nfe": nfe, "batch": batch, "seconds": med,
            "images_per_s": batch / med, "finite": bool(torch.isfinite(out.samples).all())}


# ---------------------------------------------------------------------------------------------- loss curves
def loss_curves(cfg, device, steps, batch, log_every):
    """fp32 vs bf16 training from the same seed: same data order, same t and noise per step."""
    shape = (cfg.data.num_channels, cfg.data.image_size, cfg.data.image_size)
    g = torch.Generator().manual_seed(1)
    # a learnable synthetic target: smooth random images, not white noise
    base = torch.randn((64, *shape), generator=g)
    data = torch.nn.functional.avg_pool2d(base, 5, 1, 2).clamp(-1, 1).repeat(16, 1, 1, 1)
    curves = {}
    for name, amp in (("fp32", None), ("bf16", "bf16")):
        sde, model, loss_fn = build(cfg, device)
        with tempfile.TemporaryDirectory() as wd:
            res = train(model, loss_fn, data.to(device), workdir=wd, n_steps=steps, batch_size=batch, lr=2e-4,
                        warmup=max(steps // 10, 1), grad_clip=1.0, ema_rate=0.999, log_every=log_every,
                        checkpoint_every=None, resume=False, seed=0, device=device, amp=amp, progress=False,
                        tensorboard=False)
        curves[name] = [(r["step"], r["loss"]) for r in res.log]
    rel = [abs(a[1] - b[1]) / abs(a[1]) for a, b in zip(curves["fp32"], curves["bf16"])]
    return {"steps": steps, "batch": batch, "fp32": curves["fp32"], "bf16": curves["bf16"],
            "max_rel_diff": max(rel), "mean_rel_diff": sum(rel) / len(rel)}


# ---------------------------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="small network, 16x16 images: runs on a CPU in < 1 minute")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--fused-adam", action="store_true", help="fused Adam (CUDA)")
    p.add_argument("--fast", action="store_true", help="all four options above")
    p.add_argument("--no-baseline", action="store_true", help="skip the fp32 baseline")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 128; 16 with --tiny)")
    p.add_argument("--max-batch", action="store_true", help="also train at the largest batch that fits (GPU)")
    p.add_argument("--forward-batch", type=int, default=None, help="forward batch (default 1024; 64 with --tiny)")
    p.add_argument("--sample-batch", type=int, default=None, help="sampling batch (default 256; 4 with --tiny)")
    p.add_argument("--train-steps", type=int, default=None, help="steps per training measurement")
    p.add_argument("--pc-steps", type=int, default=1000, help="predictor-corrector steps (1000 as in the paper)")
    p.add_argument("--fast-method", default="dpmpp_2m", help="fast solver (a score_sde.sampling.SOLVERS name)")
    p.add_argument("--fast-nfe", type=int, default=20, help="network evaluations of the fast solver")
    p.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported")
    p.add_argument("--pc-repeats", type=int, default=1, help="repeats of the (long) PC sampler")
    p.add_argument("--skip", default="", help="comma list of parts to skip: train,forward,sample")
    p.add_argument("--loss-curve", type=int, default=0, metavar="N", help="also train N steps in fp32 and bf16")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; eager "
                   "with --tiny on CPU)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    a = p.parse_args(argv)

    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        torch.set_num_threads(1)  # small CPU kernels: threads only add contention
    if a.compile_backend:
        COMPILE["backend"] = a.compile_backend
    elif a.tiny and device.type == "cpu":
        COMPILE["backend"] = "eager"
    cfg = make_config(a.tiny)
    skip = set(filter(None, a.skip.split(",")))
    batch = a.batch or (16 if a.tiny else 128)
    fwd_batch = a.forward_batch or (16 if a.tiny else 1024)
    smp_batch = a.sample_batch or (4 if a.tiny else 256)
    train_steps = a.train_steps or (8 if a.tiny else 120)
    log_every = max(train_steps // 4, 1)
    pc_steps = min(a.pc_steps, 10) if a.tiny and a.pc_steps == 1000 else a.pc_steps
    repeats = 1 if a.tiny else a.repeats

    fast = {"bf16": a.bf16 or a.fast, "channels_last": a.channels_last or a.fast, "compile": a.compile or a.fast,
            "fused_adam": a.fused_adam or a.fast}
    variants = [] if a.no_baseline else [{"bf16": False, "channels_last": False, "compile": False,
                                          "fused_adam": False}]
    if any(fast.values()):
        variants.append(fast)
    if not variants:
        p.error("--no-baseline needs at least one of --bf16 --channels-last --compile --fused-adam --fast")

    _, m, _ = build(cfg, torch.device("cpu"))
    n_params = sum(q.numel() for q in m.parameters())
    del m
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "config": "vp/cifar10_ddpmpp_continuous" + (" (tiny)" if a.tiny else ""),
            "params": n_params, "image": [cfg.data.num_channels, cfg.data.image_size, cfg.data.image_size]}
    print(json.dumps(info))
    results = {"info": info, "runs": []}
    for v in variants:
        name = variant_name(v)
        run = {"variant": name, **v}
        if "train" not in skip:
            run["train"] = [train_throughput(cfg, device, batch, v, train_steps, log_every, n_data=4 * batch)]
            print(f"[{name}] train   batch {batch}: {run['train'][0]['images_per_s']:.1f} images/s, "
                  f"peak {run['train'][0]['peak_gib']} GiB")
            if a.max_batch:
                big = largest_batch(cfg, device, v, start=batch)
                if big and big != batch:
                    r = train_throughput(cfg, device, big, v, train_steps, log_every, n_data=2 * big)
                    run["train"].append(r)
                    print(f"[{name}] train   batch {big} (largest that fits): {r['images_per_s']:.1f} images/s, "
                          f"peak {r['peak_gib']} GiB")
        if "forward" not in skip:
            run["forward"] = forward_throughput(cfg, device, fwd_batch, v, repeats, iters=2 if a.tiny else 10)
            print(f"[{name}] forward batch {fwd_batch}: {run['forward']['images_per_s']:.1f} images/s")
        if "sample" not in skip:
            pc = sampling_throughput(cfg, device, smp_batch, v, "pc", pc_steps, 1 if a.tiny else a.pc_repeats,
                                     {"predictor": "reverse_diffusion", "corrector": "langevin"})
            fs_steps = a.fast_nfe - 1  # dpmpp_2m: one evaluation per step + the final denoising call
            fs = sampling_throughput(cfg, device, smp_batch, v, a.fast_method, fs_steps, repeats, {})
            run["sample"] = [pc, fs]
            for s in (pc, fs):
                print(f"[{name}] sample  {s['method']} {s['steps']} steps, NFE {s['nfe']}, batch {s['batch']}: "
                      f"{s['images_per_s']:.2f} images/s ({s['seconds']:.2f} s)")
        results["runs"].append(run)
    if a.loss_curve:
        lc = loss_curves(cfg, device, a.loss_curve, batch, log_every=max(a.loss_curve // 10, 1))
        results["loss_curve"] = lc
        print("loss curve (step, fp32, bf16):")
        for (s, l32), (_, l16) in zip(lc["fp32"], lc["bf16"]):
            print(f"  {s:6d}  {l32:.5f}  {l16:.5f}")
        print(f"max relative difference {lc['max_rel_diff']:.4f}, mean {lc['mean_rel_diff']:.4f}")
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
