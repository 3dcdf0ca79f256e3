"""The training loop: Adam + warmup + clipping + EMA, mixed precision, checkpoint/resume, DDP.

One optimizer update ("step") is::

    x0 [, y] ~ data (global batch of batch_size rows; this process takes its share)
    t, z ~ loss_fn.sample_t, N(0, I)            (drawn for the global batch, then sliced)
    [y := -1 (the null class) with probability label_dropout, for a class-conditional model]
    loss = mean_b loss_fn(model, x0, t=t, noise=z)       (per-sample DSM loss, averaged;
                                                          model(x, t, y) for a conditional model)
    grads all-reduced (DDP); clipped to total norm grad_clip
    lr = lr_max * min(1, (step + 1) / warmup);  Adam update;  EMA update

All randomness of step k comes from seeds derived from ``(seed, k)`` (see
:mod:`score_sde.training.batches`), so a run resumed from a checkpoint at step k continues
exactly like the uninterrupted run (bit-identical on CPU), and the result does not depend on how
many processes share the global batch (up to floating-point summation order).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Union

import torch
from torch import nn

from . import checkpoint as ckpt
from .batches import derive_seed, make_source
from .distributed import all_reduce_mean, barrier, broadcast_object, init_distributed, is_distributed
from .ema import EMA, unwrap_model
from .errors import RunLockedError, TrainingDivergedError, WorkdirWriteError
from .lock import RunLock
from .logs import JSONLogger

__all__ = ["train", "TrainResult", "lr_at"]

_AMP = {None: None, "none": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainResult(NamedTuple):
    """What :func:`train` returns.

    Attributes:
        model: the trained model (the object passed in, unwrapped, on the training device).
        ema: the :class:`~score_sde.training.EMA`; ``ema.module`` is the averaged model to sample from.
        step: optimizer updates done in total (including those before a resume).
        checkpoint: path of the last checkpoint written or loaded (None if none).
        log: the metric records written to ``log.jsonl`` by this call (rank 0; empty elsewhere).
    """
    model: nn.Module
    ema: EMA
    step: int
    checkpoint: Optional[Path]
    log: List[Dict]


def lr_at(step: int, lr: float, warmup: int, decay: str = "none", n_steps: int = 0, final: float = 0.1) -> float:
    """Learning rate of update ``step`` (0-based): linear warmup ``lr * min(1, (step + 1) / warmup)``;
    with ``decay="cosine"`` it then falls along half a cosine from ``lr`` after the warmup to
    ``final * lr`` at update ``n_steps - 1``: ``lr (final + (1 - final) (1 + cos(pi p)) / 2)``,
    ``p = (step - warmup) / (n_steps - 1 - warmup)`` (the schedule follows ``n_steps``: resuming with a
    larger ``n_steps`` stretches it)."""
    if decay not in ("none", "cosine"):
        raise ValueError(f"decay must be 'none' or 'cosine', got {decay!r}")
    if warmup and warmup > 0 and step + 1 < warmup:
        return lr * (step + 1) / warmup
    if decay == "cosine" and n_steps - 1 > max(warmup, 0):
        w = max(warmup, 0)
        p = min(1.0, max(0.0, (step - w) / (n_steps - 1 - w)))
        return lr * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * p)))
    return lr


def _with_labels(model, y):
    """``score_fn(x, t) = model(x, t, y)``: the conditional model at this batch's labels."""
    def score_fn(x, t):
        return model(x, t, y)
    return score_fn


def _check_int(name, v, lo=0, allow_none=False):
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}" + (" or None" if allow_none else "") + f", got {v!r}")
    return v


def _make_optimizer(params, lr, betas, eps, weight_decay, fused, device):
    kw = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    if fused is None:
        fused = device.type == "cuda"
    if fused:
        try:
            return torch.optim.Adam(params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError) as e:
            warnings.warn(f"fused Adam unavailable here ({e}); using the foreach implementation")
    return torch.optim.Adam(params, foreach=True, **kw)


def _find_resume(resume, ckpt_dir: Path, rank: int):
    """Path to resume from (rank 0 decides; corrupt newest files are skipped with a warning)."""
    if resume is False or resume is None:
        if rank == 0 and ckpt.list_checkpoints(ckpt_dir):
            raise ValueError(f"{ckpt_dir} already holds checkpoints; pass resume=True to continue that run or "
                             "choose an empty workdir")
        return None, None
    if resume is not True:
        path = Path(resume)
        return path, (ckpt.load_checkpoint(path) if rank == 0 else None)
    if rank != 0:
        return None, None
    files = ckpt.list_checkpoints(ckpt_dir)
    errors = []
    for path in reversed(files):
        try:
            return path, ckpt.load_checkpoint(path)
        except ckpt.CheckpointError as e:
            bad = path.with_name(path.name + ".corrupt")
            try:
                os.replace(path, bad)  # out of the way of later saves and resumes, kept for inspection
            except OSError:
                bad = path
            warnings.warn(f"skipping unreadable checkpoint: {e}; moved it to {bad.name}, trying the previous one")
            errors.append(str(e))
    if files:
        raise ckpt.CheckpointError("no readable checkpoint in {}: {}".format(ckpt_dir, " | ".join(errors)))
    return None, None


def train(
    model: nn.Module,                       # ScoreModel (any nn.Module with forward(x, t) -> score); trained in place
    loss_fn: Callable,                      # per-sample loss: loss_fn(model, x0, t=, noise=) -> (B,), e.g. DSMLoss
    data,                                   # tensor (N, ...) | map-style Dataset | callable(n, generator) | iterable
    *,
    workdir: Union[str, os.PathLike],       # checkpoints/, log.jsonl, config.json, tb/ go here (rank 0 writes)
    n_steps: int,                           # total optimizer updates; a resumed run continues up to this number
    batch_size: Optional[int] = None,       # GLOBAL batch (all processes); None only for iterable data
    lr: float = 2e-4,                       # peak learning rate of Adam
    warmup: int = 5000,                     # linear warmup steps (lr * min(1, (step + 1) / warmup)); 0: none
    lr_decay: str = "none",                 # after the warmup: "none" (constant) | "cosine" (to lr_final * lr; lr_at)
    lr_final: float = 0.1,                  # lr_decay="cosine": the last update's lr as a fraction of lr
    grad_clip: Optional[float] = 1.0,       # clip the total gradient norm to this; None or 0: no clipping
    ema_rate: float = 0.9999,               # EMA decay per update (0.999 suits short runs)
    ema_warmup: bool = False,               # use min(ema_rate, (1 + n) / (10 + n)) early on
    weight_decay: float = 0.0,              # Adam's L2 penalty (as in the paper's code)
    betas=(0.9, 0.999),                     # Adam betas
    adam_eps: float = 1e-8,                 # Adam epsilon
    log_every: int = 100,                   # steps between JSON log lines (and host syncs)
    checkpoint_every: Optional[int] = 10000,  # steps between checkpoints; one is always written at the end
    keep: Optional[int] = 2,                # how many recent checkpoints to keep; None: all
    snapshot_every: Optional[int] = None,   # steps between calls of snapshot_fn (and at the end)
    snapshot_fn: Optional[Callable] = None,  # snapshot_fn(ema_model, step, workdir), rank 0 only: write samples
    resume: Union[bool, str, os.PathLike] = True,  # True: newest good checkpoint in workdir; a path; False: fresh
    seed: int = 0,                          # all randomness of step k derives from (seed, k)
    device=None,                            # None: cuda:LOCAL_RANK if available, else cpu
    amp: Optional[str] = None,              # None (fp32) | "bf16" (autocast) | "fp16" (autocast + GradScaler)
    channels_last: Optional[bool] = None,   # None: on for 4-D data on CUDA (same results, faster convs)
    compile: Union[bool, str, Dict] = False,  # torch.compile the model: True, a mode ("max-autotune") or kwargs
    fused_adam: Optional[bool] = None,      # None: fused Adam on CUDA, foreach elsewhere
    tf32: bool = True,                      # allow TF32 matmuls/convolutions on CUDA (restored afterwards)
    transform: Optional[Callable] = None,   # transform(x, generator) -> x on the device (augmentation)
    num_workers: int = 0,                   # DataLoader workers for Dataset data
    config: Optional[Dict] = None,          # JSON-able experiment config stored in checkpoints and config.json
    tensorboard: Optional[bool] = None,     # None: log to TensorBoard when importable; True: warn if not
    progress: bool = True,                  # tqdm progress bar on rank 0
    find_unused_parameters: bool = False,   # DDP option, for nets with branches unused by the loss
    allow_config_mismatch: bool = False,    # resume even if the checkpoint's SDE/model/data config differs
    label_dropout: float = 0.0,             # class-conditional models: P(label -> null class), classifier-free
) -> TrainResult:
    """Train a score model by denoising score matching; see the module docstring for one step.

    Runs in one process, or in each process of a ``torchrun`` launch (then DDP over the
    ``env://`` process group; only rank 0 writes files). Returns a :class:`TrainResult`.

    Checkpoints ``workdir/checkpoints/checkpoint_<step>.pt`` hold the unwrapped model state,
    the EMA, the optimizer and scaler state, RNG states, the loop settings and ``config``; they
    are written atomically, so killing the process at any time loses at most the steps since the
    last checkpoint. ``resume=True`` continues from the newest readable one (a corrupt newest
    file, or one whose digest does not match, is skipped with a warning); an incompatible one
    raises CheckpointError naming the file and the mismatching keys/shapes. A checkpoint whose
    stored config differs from ``config`` in the SDE, the network, its output or the data shape
    raises :class:`~score_sde.training.checkpoint.ConfigMismatchError` (see
    :func:`~score_sde.training.checkpoint.check_config_compatible`) unless
    ``allow_config_mismatch``; other differences (lr, n_steps, batch size, logging) only warn.

    A class-conditional model (``model.num_classes > 0``, e.g. a :class:`~score_sde.models.ScoreModel`
    on a backbone built with ``num_classes``) needs labelled data (``(x, labels)`` tensors, or
    batches / items that are ``(x, y)`` pairs; see :mod:`score_sde.training.batches`) and is called
    as ``model(x, t, y)``; with ``label_dropout = p`` each label is replaced by the null class
    ``-1`` with probability p (drawn for the global batch from ``(seed, step)``), which trains the
    unconditional score of classifier-free guidance in the same network. Labels of an
    unconditional model's data are ignored.

    The run directory is locked for the whole call (:class:`~score_sde.training.lock.RunLock`,
    taken by rank 0, whose outcome every rank learns): a second trainer on the same ``workdir``
    raises :class:`~score_sde.training.errors.RunLockedError` naming the holder. A non-finite
    loss raises :class:`~score_sde.training.errors.TrainingDivergedError`; a full or read-only
    disk raises :class:`~score_sde.training.errors.WorkdirWriteError`.
    """
    # ---------------------------------------------------------------- arguments
    _check_int("n_steps", n_steps, 0)
    _check_int("batch_size", batch_size, 1, allow_none=True)
    _check_int("warmup", warmup, 0)
    lr_at(0, 1.0, 0, lr_decay)                  # checks lr_decay
    if not (isinstance(lr_final, (int, float)) and 0.0 <= lr_final <= 1.0):
        raise ValueError(f"lr_final must lie in [0, 1], got {lr_final!r}")
    _check_int("log_every", log_every, 1)
    _check_int("checkpoint_every", checkpoint_every, 1, allow_none=True)
    _check_int("keep", keep, 1, allow_none=True)
    _check_int("snapshot_every", snapshot_every, 1, allow_none=True)
    _check_int("seed", seed, 0)
    _check_int("num_workers", num_workers, 0)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if grad_clip is not None and not (grad_clip >= 0 and math.isfinite(grad_clip)):
        raise ValueError(f"grad_clip must be a non-negative number or None, got {grad_clip!r}")
    if not 0.0 <= ema_rate < 1.0:
        raise ValueError(f"ema_rate must lie in [0, 1), got {ema_rate!r}")
    if amp not in _AMP:
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    if snapshot_every is not None and snapshot_fn is None:
        raise ValueError("snapshot_every is set but snapshot_fn is None; pass snapshot_fn(ema_model, step, workdir)")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module (e.g. a ScoreModel), got {type(model).__name__}")
    if isinstance(label_dropout, bool) or not (isinstance(label_dropout, (int, float)) and 0 <= label_dropout <= 1):
        raise ValueError(f"label_dropout must be a probability in [0, 1], got {label_dropout!r}")
    n_classes = int(getattr(unwrap_model(model), "num_classes", 0) or 0)
    if label_dropout and not n_classes:
        raise ValueError(f"label_dropout={label_dropout} needs a class-conditional model (num_classes > 0); "
                         "this model has no class labels")
    if not callable(loss_fn):
        raise ValueError("loss_fn must be callable: loss_fn(model, x0, t=None, noise=None) -> (B,)")
    config = ckpt._check_json(config)
    amp_dtype = _AMP[amp]

    info = init_distributed(device)
    rank, world, device = info.rank, info.world_size, info.device
    is_main = rank == 0
    workdir = Path(workdir)
    ckpt_dir = workdir / "checkpoints"
    # One trainer per run directory: rank 0 takes the lock, every rank learns the outcome.
    lock = RunLock(workdir, purpose="train") if is_main else None
    refusal = None
    if is_main:
        try:
            lock.acquire()
        except Exception as e:  # noqa: BLE001 - told to every rank, then raised
            if world == 1:
                raise
            refusal = e
    _share_failure(refusal, info)
    try:
        if is_main:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_tmp(ckpt_dir)   # under the lock: no other writer's temp file is removed
    except BaseException:
        _release(lock, info)
        raise
    saved_flags = None
    if device.type == "cuda":
        saved_flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                       torch.backends.cudnn.benchmark)
        torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
        torch.backends.cudnn.allow_tf32 = bool(tf32)
        torch.backends.cudnn.benchmark = True

    logger = None
    pbar = None
    source = None
    try:
        # ------------------------------------------------------------ state and resume
        raw = unwrap_model(model).to(device)
        # Rank 0 picks the checkpoint and checks its config; every rank learns the outcome (no rank
        # waits in a collective for a rank that failed).
        resume_path = state = failure = None
        soft_changes = []
        if is_main:
            try:
                resume_path, state = _find_resume(resume, ckpt_dir, rank)
                if state is not None:
                    soft_changes = ckpt.check_config_compatible(
                        state.get("config"), config, where=f"checkpoint {resume_path}",
                        allow_mismatch=allow_config_mismatch)
            except Exception as e:  # noqa: BLE001 - told to every rank, then raised
                if world == 1:
                    raise
                failure = e
        resume_path = broadcast_object(str(resume_path) if resume_path else None)
        _share_failure(failure, info)
        if resume_path is not None and state is None:
            state = ckpt.load_checkpoint(resume_path)
        start = int(state["step"]) if state is not None else 0
        if is_main and config is not None:
            ckpt.atomic_save_text(workdir / "config.json", config)

        source = make_source(data, batch_size=batch_size, rank=rank, world=world, seed=seed, device=device,
                             start=start, stop=max(n_steps, start), num_workers=num_workers)
        local_b = source.local_batch
        global_b = local_b * world
        first = source.get(start) if start < n_steps else None
        if n_classes and first is not None and first[1] is None:
            raise ValueError(f"the model is class-conditional ({n_classes} classes) but the data carry no labels: "
                             "pass (x, labels) tensors or batches of (x, y) pairs")
        if channels_last is None:
            channels_last = device.type == "cuda" and first is not None and first[0].ndim == 4
        if channels_last:
            raw.to(memory_format=torch.channels_last)

        ema = EMA(raw, ema_rate, warmup=ema_warmup)
        params = [p for p in raw.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters")
        opt = _make_optimizer(params, lr, betas, adam_eps, weight_decay, fused_adam, device)
        scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

        if state is not None:
            where = f"checkpoint {resume_path}"
            ckpt.check_state_dict(state["model"], raw, where=where)
            raw.load_state_dict(state["model"], strict=True)
            if state.get("ema"):
                ckpt.check_state_dict(state["ema"]["module"], ema.module, where=where + " (EMA)")
                ema.load_state_dict(state["ema"])
            else:
                ema.module.load_state_dict(raw.state_dict())
            if state.get("optimizer"):
                impl = [{k: g.get(k) for k in ("fused", "foreach", "capturable")} for g in opt.param_groups]
                try:
                    opt.load_state_dict(state["optimizer"])
                    for g, flags in zip(opt.param_groups, impl):  # keep this machine's implementation choice
                        g.update(flags)
                except (ValueError, KeyError, RuntimeError) as e:
                    raise ckpt.CheckpointError(f"{where}: optimizer state does not fit the model's parameters ({e})")
            if state.get("scaler") and scaler.is_enabled():
                scaler.load_state_dict(state["scaler"])
            if state.get("rng"):
                ckpt.restore_rng(state["rng"])
            meta = state.get("meta") or {}
            for k, v in (("seed", seed), ("batch_size", global_b)):
                if k in meta and meta[k] != v:
                    warnings.warn(f"resuming {where} with {k}={v} (saved: {meta[k]}): the data order and noise "
                                  "will differ from the original run")
            if not source.exact_resume:
                warnings.warn("data is a plain iterable: its order is not restored on resume")
            if is_main and soft_changes:
                warnings.warn(f"resuming from {resume_path} with changed training settings: "
                              f"{ckpt._short(soft_changes)}", stacklevel=2)
            del state

        train_model = raw
        if world > 1:
            train_model = nn.parallel.DistributedDataParallel(
                raw, device_ids=[device] if device.type == "cuda" else None,
                gradient_as_bucket_view=True, find_unused_parameters=find_unused_parameters)
        if compile:
            ckw = {"mode": compile} if isinstance(compile, str) else dict(compile) if isinstance(compile, dict) else {}
            train_model = torch.compile(train_model, **ckw)

        logger = JSONLogger(workdir / "log.jsonl", tensorboard=tensorboard, enabled=is_main)
        meta = {"seed": seed, "batch_size": global_b, "world_size": world, "n_steps": n_steps, "lr": lr,
                "warmup": warmup, "lr_decay": lr_decay, "lr_final": lr_final, "grad_clip": grad_clip, "ema_rate": ema_rate, "amp": amp,
                "torch": torch.__version__}
        logger.log({"event": "resume" if resume_path else "start", "step": start, "checkpoint": resume_path,
                    "world_size": world, "batch_size": global_b, "device": str(device),
                    "params": sum(p.numel() for p in params)})
        if progress and is_main and start < n_steps:
            from tqdm.auto import tqdm
            pbar = tqdm(total=n_steps, initial=start, desc="train", dynamic_ncols=True, smoothing=0.1)

        # ------------------------------------------------------------ the loop
        gen = torch.Generator(device=device)
        draw_global = hasattr(loss_fn, "sample_t")
        autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                    else contextlib.nullcontext())
        history: List[Dict] = []
        last_ckpt = Path(resume_path) if resume_path else None
        loss_acc = torch.zeros((), device=device, dtype=torch.float64)
        n_acc = 0
        t0 = t_log = time.perf_counter()
        step = start
        while step < n_steps:
            x0, y = first if first is not None else source.get(step)
            first = None
            if channels_last and x0.ndim == 4:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            # Step 1: seeds of this step (data order was fixed by the source).
            _seed_default_generators(derive_seed(seed, "global", step, rank), device)  # dropout etc., per-rank
            gen.manual_seed(derive_seed(seed, "loss", step))
            if transform is not None:
                tg = torch.Generator(device=device).manual_seed(derive_seed(seed, "transform", step, rank))
                x0 = transform(x0, tg)
            if not x0.is_floating_point():
                raise ValueError(f"training batches must be floating point, got {x0.dtype}: scale the data to "
                                 "[-1, 1] or [0, 1] first, or pass transform=(x, generator) -> float tensor")
            # Step 2: loss on this process's share of the global batch.
            lo = rank * local_b
            score_model = train_model
            if n_classes:
                if y is None:
                    raise ValueError(f"step {step}: a batch without labels for a class-conditional model")
                if label_dropout:
                    lg = torch.Generator(device=device).manual_seed(derive_seed(seed, "labels", step))
                    drop = torch.rand(global_b, generator=lg, device=device)[lo:lo + local_b] < label_dropout
                    y = torch.where(drop, torch.full_like(y, -1), y)
                score_model = _with_labels(train_model, y)
            if draw_global:
                t = loss_fn.sample_t(global_b, device=device, dtype=x0.dtype, generator=gen)[lo:lo + local_b]
                z = torch.randn((global_b, *x0.shape[1:]), generator=gen, device=device,
                                dtype=x0.dtype)[lo:lo + local_b]
                if channels_last and z.ndim == 4:
                    z = z.contiguous(memory_format=torch.channels_last)
            with autocast:
                if draw_global:
                    per = loss_fn(score_model, x0, t=t, noise=z)
                else:
                    gen.manual_seed(derive_seed(seed, "loss", step, rank))
                    per = loss_fn(score_model, x0, generator=gen)
                loss = per.float().mean()
            # Step 3: gradients (all-reduced by DDP), clipping, Adam with warmup, EMA.
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            want_log = (step + 1) % log_every == 0 or step + 1 == n_steps
            grad_norm = None
            if grad_clip or want_log:
                scaler.unscale_(opt)
                if grad_clip:
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
                else:
                    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None],
                                                              foreach=True)
            cur_lr = lr_at(step, lr, warmup, lr_decay, n_steps, lr_final)
            for group in opt.param_groups:
                group["lr"] = cur_lr
            scaler.step(opt)
            scaler.update()
            ema.update()
            step += 1
            loss_acc += loss.detach()
            n_acc += 1
            if pbar is not None:
                pbar.update(1)

            # Step 4: logs, snapshots, checkpoints.
            if want_log:
                mean_loss = float(all_reduce_mean(loss_acc / n_acc))
                now = time.perf_counter()
                rec = {"step": step, "loss": mean_loss, "lr": cur_lr,
                       "grad_norm": float(grad_norm) if grad_norm is not None else None,
                       "images_per_s": n_acc * global_b / max(now - t_log, 1e-9), "time": now - t0}
                if amp == "fp16":
                    rec["loss_scale"] = float(scaler.get_scale())
                loss_acc.zero_()
                n_acc = 0
                t_log = now
                if is_main:
                    logger.log(rec)
                    history.append(rec)
                    if pbar is not None:
                        pbar.set_postfix(loss=f"{mean_loss:.4g}", refresh=False)
                if not math.isfinite(mean_loss):
                    raise TrainingDivergedError(
                        f"loss is {mean_loss} at step {step}: training diverged; resume from the last checkpoint "
                        f"in {ckpt_dir} with a lower lr, a longer warmup or grad_clip")
            if snapshot_fn is not None and is_main and (
                    (snapshot_every and step % snapshot_every == 0) or step == n_steps):
                snapshot_fn(ema.module, step, workdir)
                logger.log({"event": "snapshot", "step": step})
            if (checkpoint_every and step % checkpoint_every == 0) or step == n_steps:
                if is_main:
                    path = ckpt.checkpoint_path(ckpt_dir, step)
                    ckpt.save_checkpoint(path, model=raw, step=step, ema=ema, optimizer=opt, scaler=scaler,
                                         meta=meta, config=config)
                    last_ckpt = path
                    if keep:
                        for old in ckpt.list_checkpoints(ckpt_dir)[:-keep]:
                            old.unlink(missing_ok=True)
                    logger.log({"event": "checkpoint", "step": step, "path": str(path)})
                last_ckpt = ckpt.checkpoint_path(ckpt_dir, step)
        if pbar is not None:
            pbar.close()
            pbar = None
        logger.log({"event": "end", "step": step, "time": time.perf_counter() - t0})
        barrier()
        return TrainResult(raw, ema, step, last_ckpt, history)
    finally:
        if pbar is not None:
            pbar.close()
        if logger is not None:
            logger.close()
        if source is not None:
            source.close()
        if saved_flags is not None:
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark) = saved_flags
        _release(lock, info)


_SHARED_ERRORS = {c.__name__: c for c in (RunLockedError, ckpt.CheckpointError, ckpt.ConfigMismatchError,
                                          ValueError, FileNotFoundError)}


def _share_failure(error: Optional[BaseException], info) -> None:
    """Collective: rank 0 passes the error it met (or None); if there is one, every rank raises.

    Rank 0 re-raises its own exception; the other ranks raise the same class (when it is one of
    ours) with the same message, so no rank is left waiting in a later collective."""
    if not is_distributed():
        if error is not None:
            raise error
        return
    shared = broadcast_object(None if error is None else (type(error).__name__, str(error),
                                                          getattr(error, "errno", None)))
    if shared is None:
        return
    name, message, code = shared
    if info.initialized_here:
        torch.distributed.destroy_process_group()
    if error is not None:
        raise error
    if name == "WorkdirWriteError":
        raise WorkdirWriteError(code, message)
    raise _SHARED_ERRORS.get(name, RuntimeError)(message)


def _release(lock, info):
    if lock is not None:
        lock.release()
    if info.initialized_here and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _seed_default_generators(seed: int, device: torch.device) -> None:
    """Seed the CPU default generator and the one of ``device`` (what dropout draws from).

    Cheaper than ``torch.manual_seed``, which also visits every other backend (CUDA, XPU, MTIA,
    ...) and records a traceback for each lazy call: about 0.5 ms per training step.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()].manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)
