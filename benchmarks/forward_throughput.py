"""Forward throughput (images/s) of the paper's DDPM++ continuous CIFAR-10 network (issue 8).

One forward pass is the cost of one sampler / likelihood evaluation. The network is built by
``score_sde.models.get_model(reference_config("ddpmpp_cifar10"))`` (61.8M parameters) and run
on synthetic 3x32x32 batches held on the device, under ``torch.inference_mode``. Each variant is
timed as the median over ``--runs`` timed iterations after ``--warmup`` untimed ones (compile
happens during warm-up).

Variants: the flags ``--bf16 --channels-last --compile`` choose one; ``--matrix`` runs the
baseline (fp32; TF32 convolutions as PyTorch allows by default on CUDA, like the reference run)
and every cumulative speed-up: +bf16 autocast, +channels_last, +torch.compile.

    python benchmarks/forward_throughput.py --tiny                      # CPU smoke run (seconds)
    python benchmarks/forward_throughput.py --device cuda --matrix      # the table, batch 1024
    python benchmarks/forward_throughput.py --device cuda --bf16 --channels-last --compile

Issue 8's reference numbers (one H200): the paper's implementation 4,320 images/s at batch 1024;
goal >= 13,000 images/s.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from score_sde.config import get_model, reference_config  # noqa: E402


def make_config(name: str, tiny: bool):
    cfg = reference_config(name)
    if tiny:
        m = cfg.model
        m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions = 16, (1, 2), 1, (8,)
        cfg.data.image_size = 16
    return cfg


def count(cfg):
    """(parameters, forward GFLOP per image), counted on the meta device (nothing allocated)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = get_model(cfg).eval()
        x = torch.randn(1, cfg.data.num_channels, cfg.data.image_size, cfg.data.image_size)
        labels = torch.ones(1)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x, labels)
    return sum(p.numel() for p in net.parameters()), counter.get_total_flops() / 1e9


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cfg, device, batch, bf16=False, channels_last=False, compile_model=False, compile_mode="default",
            runs=20, warmup=5, seed=0):
    """Median images/s (and ms per forward, peak memory) of one variant."""
    torch.manual_seed(seed)
    net = get_model(cfg).to(device).eval()
    size, ch = cfg.data.image_size, cfg.data.num_channels
    x = torch.randn(batch, ch, size, size, device=device)
    labels = torch.rand(batch, device=device) * 999.0
    if str(cfg.model.get("embedding_type")) == "fourier" and cfg.model.name == "ncsnpp":
        labels = torch.exp(torch.rand(batch, device=device) * 8.5 - 4.6)  # sigmas in [0.01, 50]
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fn = torch.compile(net, mode=compile_mode) if compile_model else net
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    t_first = time.perf_counter()
    with torch.inference_mode(), autocast:
        for i in range(warmup + runs):
            _sync(device)
            t0 = time.perf_counter()
            out = fn(x, labels)
            _sync(device)
            dt = time.perf_counter() - t0
            if i == 0:
                first = time.perf_counter() - t_first
            if i >= warmup:
                times.append(dt)
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    med = statistics.median(times)
    return {
        "bf16": bf16, "channels_last": channels_last, "compile": compile_model, "batch": batch,
        "images_per_s": batch / med, "ms_per_forward": med * 1e3,
        "ms_min": min(times) * 1e3, "first_call_s": first,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None,
    }


def variants(args):
    if args.matrix:
        return [dict(), dict(bf16=True), dict(bf16=True, channels_last=True),
                dict(bf16=True, channels_last=True, compile_model=True)]
    return [dict(bf16=args.bf16, channels_last=args.channels_last, compile_model=args.compile)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--config", default="ddpmpp_cifar10", help="a score_sde.models.reference_config name")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 1024 on GPU, 8 with --tiny / CPU)")
    p.add_argument("--runs", type=int, default=None, help="timed iterations (median reported; default 20, 3 tiny)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 5, 1 tiny)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (default, max-autotune, ...)")
    p.add_argument("--matrix", action="store_true", help="baseline and each cumulative speed-up")
    p.add_argument("--no-tf32", action="store_true", help="disallow TF32 (strict fp32 baseline)")
    p.add_argument("--tiny", action="store_true", help="a tiny network on 16x16 images (CPU smoke run)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = not args.no_tf32
        torch.backends.cuda.matmul.allow_tf32 = not args.no_tf32
    small = args.tiny or device.type == "cpu"
    batch = args.batch or (8 if small else 1024)
    runs = args.runs or (3 if small else 20)
    warmup = args.warmup if args.warmup is not None else (1 if small else 5)
    cfg = make_config(args.config, args.tiny)
    n_params, gflop = count(cfg)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# {args.config}{' (tiny)' if args.tiny else ''}: {n_params:,} parameters, {gflop:.2f} GFLOP/image, "
          f"{cfg.data.num_channels}x{cfg.data.image_size}x{cfg.data.image_size}, batch {batch}, device {name}, "
          f"torch {torch.__version__}, median of {runs} runs after {warmup} warm-up")
    rows = []
    header = (f"{'bf16':>5} {'ch_last':>7} {'compile':>7} {'images/s':>11} {'TFLOP/s':>8} {'ms/fwd':>9} {'first(s)':>9} "
              f"{'peakGiB':>8}")
    print(header)
    for v in variants(args):
        r = measure(cfg, device, batch, compile_mode=args.compile_mode, runs=runs, warmup=warmup, **v)
        r["tflop_per_s"] = r["images_per_s"] * gflop / 1e3
        rows.append(r)
        mem = f"{r['peak_mem_gib']:.2f}" if r["peak_mem_gib"] is not None else "-"
        print(f"{str(r['bf16']):>5} {str(r['channels_last']):>7} {str(r['compile']):>7} {r['images_per_s']:>11,.1f} "
              f"{r['tflop_per_s']:>8.2f} {r['ms_per_forward']:>9.2f} {r['first_call_s']:>9.2f} {mem:>8}", flush=True)
    if len(rows) > 1:
        print(f"# speed-up of the last variant over the baseline: {rows[-1]['images_per_s'] / rows[0]['images_per_s']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps({"config": args.config, "tiny": args.tiny, "device": name,
                                              "params": n_params, "gflop_per_image": gflop, "results": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
