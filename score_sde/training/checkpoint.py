"""Checkpoints: atomic writes, strict loads, errors that name the file and the mismatch.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python data (no pickled
classes, no code), so it loads with ``torch.load(weights_only=True)``::

    {"format": "score_sde.training/1",
     "step": int,                      # optimizer updates done
     "model": state_dict,              # the unwrapped model: no "module." / "_orig_mod." prefix
     "ema": {"module": state_dict, "decay", "warmup", "num_updates"} or None,
     "optimizer": optimizer.state_dict() or None,
     "scaler": GradScaler.state_dict() or None,      # fp16 only
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...]},
     "meta": {...},                    # loop settings (seed, batch size, world size, ...)
     "config": {...}}                  # the experiment config as JSON-able data

Writing goes to a temporary file in the same directory, is flushed and fsync'ed, then renamed
over the final name with ``os.replace`` (atomic on POSIX and Windows) and the directory is
fsync'ed: a crash at any moment leaves either the old files or the complete new one, never a
truncated checkpoint under a final name. Files are named ``checkpoint_<step:08d>.pt``; the last
``keep`` are kept.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from torch import nn

from ..utils import atomic_write as _atomic_write  # the package's one atomic writer
from .ema import unwrap_model

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "list_checkpoints", "latest_checkpoint",
           "check_state_dict", "load_model", "FORMAT"]

FORMAT = "score_sde.training/1"
_NAME = re.compile(r"^checkpoint_(\d+)\.pt$")
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint file is unreadable (corrupt, truncated, not ours) or does not fit the model."""


def checkpoint_path(directory: PathLike, step: int) -> Path:
    """``directory/checkpoint_<step:08d>.pt``."""
    return Path(directory) / f"checkpoint_{int(step):08d}.pt"


def list_checkpoints(directory: PathLike) -> List[Path]:
    """Checkpoint files in ``directory`` sorted by step (oldest first); temporary files are ignored."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: PathLike) -> Optional[Path]:
    """The newest checkpoint file in ``directory`` (by step in the name), or None."""
    files = list_checkpoints(directory)
    return files[-1] if files else None


def atomic_save(obj, path: PathLike):
    """``torch.save(obj, path)`` through a temporary file + fsync + ``os.replace``.

    If anything fails (or the process dies) before the rename, ``path`` is untouched; the
    temporary file is removed on a Python-level failure (a killed process may leave a
    ``.tmp`` file, which :func:`list_checkpoints` ignores and :func:`remove_stale_tmp` cleans)."""
    _atomic_write(path, "wb", lambda f: torch.save(obj, f))


def atomic_save_text(path: PathLike, data):
    """Write ``data`` as pretty JSON to ``path`` atomically (tmp file + fsync + ``os.replace``)."""
    _atomic_write(path, "w", lambda f: json.dump(data, f, indent=2, sort_keys=True))


def remove_stale_tmp(directory: PathLike) -> int:
    """Delete temporary files left by killed writes; returns how many."""
    d = Path(directory)
    n = 0
    if d.is_dir():
        for p in d.glob(".checkpoint_*.tmp"):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n


def _check_json(config, name="config"):
    if config is None:
        return None
    try:
        return json.loads(json.dumps(config))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be plain JSON-able data (dicts, lists, str, numbers, bools, None); "
                         f"convert it first (e.g. ConfigDict.to_dict()): {e}") from None


def save_checkpoint(path: PathLike, *, model: nn.Module, step: int, ema=None, optimizer=None, scaler=None,
                    rng: Optional[Dict] = None, meta: Optional[Dict] = None, config: Optional[Dict] = None) -> Path:
    """Write a checkpoint atomically (see the module docstring for the layout); returns the path.

    ``model`` may be wrapped in DDP / torch.compile: its unwrapped state dict is saved. Raises
    FloatingPointError (and writes nothing) if a parameter is NaN or infinite, so that the last
    good checkpoint is never replaced by a diverged one."""
    sd = unwrap_model(model).state_dict()
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise FloatingPointError(f"not saving {path}: non-finite values in {bad[:5]} at step {step} "
                                 "(training diverged; lower lr, raise warmup or use grad_clip)")
    obj = {
        "format": FORMAT,
        "step": int(step),
        "model": sd,
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng if rng is not None else capture_rng(),
        "meta": _check_json(meta, "meta") or {},
        "config": _check_json(config),
    }
    atomic_save(obj, path)
    return Path(path)


def capture_rng() -> Dict:
    """The global torch RNG states (CPU and every CUDA device)."""
    state = {"torch": torch.get_rng_state()}
    state["cuda"] = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return state


def restore_rng(state: Dict):
    """Inverse of :func:`capture_rng` (CUDA states are restored when the device count matches)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def load_checkpoint(path: PathLike, map_location="cpu") -> Dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Raises CheckpointError naming the file if it is missing, unreadable (truncated, corrupt,
    contains pickled objects other than tensors and plain data) or not in this format."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means a bad file
        raise CheckpointError(f"checkpoint {path} is corrupt or not a weights-only checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"checkpoint {path} is not a score_sde training checkpoint "
                              f"(format {got!r}, expected {FORMAT!r})")
    missing = [k for k in ("step", "model") if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}")
    return obj


def check_state_dict(state: Dict[str, torch.Tensor], module: nn.Module, where: str = "checkpoint"):
    """Raise CheckpointError unless ``state`` fits ``module`` exactly (strict): the message lists
    missing keys, unexpected keys and shape mismatches."""
    own = unwrap_model(module).state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            hint = " (a 'module.' prefix: saved from a DDP/DataParallel wrapper)" if any(
                k.startswith(("module.", "_orig_mod.")) for k in unexpected) else ""
            parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}{hint}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_short(shapes)}")
        raise CheckpointError(f"{where} does not fit the model: " + "; ".join(parts)
                              + ". Build the model from the config the checkpoint was trained with.")


def _short(items, n=6):
    s = ", ".join(items[:n])
    return s + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def load_model(path: PathLike, model: nn.Module, ema: bool = True, map_location="cpu") -> nn.Module:
    """Load a checkpoint's EMA weights (``ema=True``, what one samples from) or raw weights into
    ``model`` strictly; returns ``model``. Errors name the file and the mismatch."""
    obj = load_checkpoint(path, map_location=map_location)
    if ema:
        if not obj.get("ema"):
            raise CheckpointError(f"checkpoint {path} has no EMA weights; pass ema=False for the raw weights")
        state = obj["ema"]["module"]
    else:
        state = obj["model"]
    check_state_dict(state, model, where=f"checkpoint {path}" + (" (EMA)" if ema else ""))
    unwrap_model(model).load_state_dict(state, strict=True)
    return model


def warn_config_change(path: PathLike, saved: Optional[Dict], current: Optional[Dict]):
    """Warn (not fail) when a resumed run's config differs from the checkpoint's."""
    if saved is None or current is None or saved == current:
        return
    diffs = []

    def walk(a, b, prefix):
        keys = set(a) | set(b) if isinstance(a, dict) and isinstance(b, dict) else None
        if keys is None:
            if a != b:
                diffs.append(f"{prefix}: {a!r} -> {b!r}")
            return
        for k in sorted(keys, key=str):
            walk(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}.{k}" if prefix else str(k))

    walk(saved, current, "")
    warnings.warn(f"resuming from {path} with a different config: {_short(diffs)}", stacklevel=3)
