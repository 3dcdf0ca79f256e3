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
     "config": {...},                  # the experiment config as JSON-able data
     "digest": {"sha256": hex, "scheme": "score_sde.digest/1"}}   # see payload_digest

Integrity: ``digest`` is a SHA-256 over every other entry, tensors by their raw bytes (with
key path, dtype and shape) in a canonical (sorted key path) order; :func:`load_checkpoint`
recomputes it and raises :class:`CheckpointError` naming the file on a mismatch (flipped bits,
a partly overwritten file). Files without a digest (written by score_sde 0.1.0, or converted
before digests existed) still load, with a warning.

Writing goes to a temporary file in the same directory, is flushed and fsync'ed, then renamed
over the final name with ``os.replace`` (atomic on POSIX and Windows) and the directory is
fsync'ed: a crash at any moment leaves either the old files or the complete new one, never a
truncated checkpoint under a final name. Files are named ``checkpoint_<step:08d>.pt``; the last
``keep`` are kept.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from torch import nn

from ..utils import atomic_write  # the package's one atomic writer
from .ema import unwrap_model
from .errors import TrainingDivergedError, reraise_write_error

__all__ = ["CheckpointError", "ConfigMismatchError", "save_checkpoint", "load_checkpoint", "list_checkpoints",
           "latest_checkpoint", "check_state_dict", "load_model", "payload_digest", "check_config_compatible",
           "FORMAT"]

FORMAT = "score_sde.training/1"
_NAME = re.compile(r"^checkpoint_(\d+)\.pt$")
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint file is unreadable (corrupt, truncated, digest mismatch, not ours) or does not fit the model."""


class ConfigMismatchError(CheckpointError):
    """A checkpoint's stored config differs from the current one in what defines the model
    (SDE, network, output parameterisation, data shape); ``keys`` lists the differing dotted keys."""

    def __init__(self, message: str, keys=()):
        super().__init__(message)
        self.keys = list(keys)


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


def _atomic_write(path: PathLike, mode: str, write) -> None:
    """:func:`score_sde.utils.atomic_write`, with a full disk or read-only workdir turned into a
    one-line :class:`~score_sde.training.errors.WorkdirWriteError`."""
    try:
        atomic_write(path, mode, write)
    except OSError as e:
        reraise_write_error(e, Path(path))
        raise


def atomic_save(obj, path: PathLike):
    """``torch.save(obj, path)`` through a temporary file + fsync + ``os.replace``.

    If anything fails (or the process dies) before the rename, ``path`` is untouched; the
    temporary file is removed on a Python-level failure (a killed process may leave a
    ``.tmp`` file, which :func:`list_checkpoints` ignores and :func:`remove_stale_tmp` cleans).
    A training checkpoint (a dict with ``format`` = :data:`FORMAT`) gets its ``digest`` here."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        obj = dict(obj)
        obj["digest"] = {"sha256": payload_digest(obj), "scheme": DIGEST_SCHEME}
    _atomic_write(path, "wb", lambda f: torch.save(obj, f))


DIGEST_SCHEME = "score_sde.digest/1"


def payload_digest(obj: Dict) -> str:
    """SHA-256 (hex) of a checkpoint dict without its ``digest`` entry.

    Leaves are visited in sorted order of their key path (``model/net.inp.weight``,
    ``optimizer/state/0/exp_avg``, ...; keys are typed, so ``0`` and ``"0"`` differ); a tensor
    contributes its path, dtype, shape and raw bytes (CPU, contiguous), any other leaf its path
    and ``repr``. The result does not depend on how ``torch.save`` laid out the file."""
    h = hashlib.sha256()
    leaves = []

    def walk(v, path):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, path + (f"{type(k).__name__}:{k}",))
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(x, path + (f"[{i}]",))
        else:
            leaves.append(("/".join(path), v))

    walk({k: v for k, v in obj.items() if k != "digest"}, ())
    for key, v in sorted(leaves, key=lambda kv: kv[0]):
        h.update(key.encode("utf-8") + b"\0")
        if isinstance(v, torch.Tensor):
            t = v.detach().to("cpu").contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode() + b"\0")
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy())
        else:
            h.update(repr(v).encode("utf-8") + b"\0")
    return h.hexdigest()


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
    TrainingDivergedError (a FloatingPointError; nothing is written) if a parameter is NaN or infinite, so that the last
    good checkpoint is never replaced by a diverged one."""
    sd = unwrap_model(model).state_dict()
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise TrainingDivergedError(f"not saving {path}: non-finite values in {bad[:5]} at step {step} "
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
        raise CheckpointError(f"checkpoint {path} " + ("is not a file (a directory?)" if path.exists() else
                                                      "does not exist"))
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means a bad file
        from ..safe_pickle import describe_load_failure
        reason = describe_load_failure(path, e)
    else:
        reason = None
    if reason is not None:   # raised outside the except block: no chained torch traceback
        raise CheckpointError(f"checkpoint {path} is corrupt or not a weights-only checkpoint: {reason}")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"checkpoint {path} is not a score_sde training checkpoint "
                              f"(format {got!r}, expected {FORMAT!r})")
    missing = [k for k in ("step", "model") if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}")
    dig = obj.get("digest")
    if dig is None:
        warnings.warn(f"checkpoint {path} has no digest (written by score_sde 0.1.0 or converted before digests "
                      "existed): its integrity cannot be checked; it loads as it is", stacklevel=2)
    else:
        want = dig.get("sha256") if isinstance(dig, dict) else None
        if not isinstance(want, str) or (dig.get("scheme") not in (None, DIGEST_SCHEME)):
            raise CheckpointError(f"checkpoint {path} has a malformed digest entry {dig!r}")
        got = payload_digest(obj)
        if got != want:
            raise CheckpointError(f"checkpoint {path} is corrupt: its contents do not match the stored digest "
                                  f"(sha256 {got[:12]}... vs {want[:12]}... at save time); use an earlier "
                                  "checkpoint or a backup")
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


def load_model(path: PathLike, model: nn.Module, ema: bool = True, map_location="cpu", config: Optional[Dict] = None,
               allow_config_mismatch: bool = False) -> nn.Module:
    """Load a checkpoint's EMA weights (``ema=True``, what one samples from) or raw weights into
    ``model`` strictly; returns ``model``. Errors name the file and the mismatch.

    With ``config`` (the JSON-able config ``model`` was built from), the checkpoint's stored config
    is checked first with :func:`check_config_compatible` (ConfigMismatchError on another SDE,
    network, output or data shape, unless ``allow_config_mismatch``)."""
    obj = load_checkpoint(path, map_location=map_location)
    if config is not None:
        check_config_compatible(obj.get("config"), _check_json(config), where=f"checkpoint {path}",
                                allow_mismatch=allow_config_mismatch)
    if ema:
        if not obj.get("ema"):
            raise CheckpointError(f"checkpoint {path} has no EMA weights; pass ema=False for the raw weights")
        state = obj["ema"]["module"]
    else:
        state = obj["model"]
    check_state_dict(state, model, where=f"checkpoint {path}" + (" (EMA)" if ema else ""))
    unwrap_model(model).load_state_dict(state, strict=True)
    return model


# Config sections that define what a checkpoint's network computes. A difference here makes the
# weights mean something else (another SDE, another output parameterisation, another shape).
_MODEL_EXEMPT = {"ema_rate", "dropout"}          # training settings kept in the model section
_DATA_KEYS = ("dataset", "image_size", "num_channels", "centered")
_SDE_KEYS = {"vpsde": ("name", "beta_min", "beta_max", "N"), "subvpsde": ("name", "beta_min", "beta_max", "N"),
             "vesde": ("name", "sigma_min", "sigma_max", "N")}
_ABSENT = "<absent>"


def _flatten(d, prefix=""):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                out.update(_flatten(v, key))
            else:
                out[key] = v
    return out


def _model_defining(flat: Dict, sde_name) -> set:
    keys = set()
    for k in flat:
        sec, _, rest = k.partition(".")
        if sec == "model" and rest.split(".")[0] not in _MODEL_EXEMPT:
            keys.add(k)
        elif sec == "data" and rest in _DATA_KEYS:
            keys.add(k)
        elif sec == "sde" and (sde_name not in _SDE_KEYS or rest in _SDE_KEYS[sde_name]):
            keys.add(k)
    return keys


#: config keys added since score_sde 0.1.0 wrote checkpoints, with the value their absence means
#: (the behaviour of the version that lacked them)
_ADDED_KEYS = {
    "sde.T": 0.0, "sde.cosine_s": 0.008, "sde.edm_sigma_min": 0.002, "sde.edm_sigma_max": 80.0,
    "sde.betas": "ddpm_linear", "model.sigma_data": 0.5, "model.num_classes": 0,
    "training.p_mean": -1.2, "training.p_std": 1.2, "training.label_dropout": 0.0,
    "model.pixel_head": 0, "model.pixel_context": 4, "model.pixel_head_clip": 0.0, "sampling.snr": 0.0,
    "model.input_fourier": "", "model.input_contrast": False, "optim.decay": "none", "optim.decay_final": 0.1,
}


def check_config_compatible(saved: Optional[Dict], current: Optional[Dict], *, where: str = "checkpoint",
                            allow_mismatch: bool = False) -> List[str]:
    """Check the config a checkpoint was trained with (``saved``) against the one it is used with.

    ``saved`` / ``current``: the JSON-able configs (``checkpoint["config"]`` and
    ``config.to_dict()``); either may be None (an old checkpoint without config): then nothing
    is checked. Keys that define the model must match:

    * ``sde.name`` and the SDE's own parameters (VP, sub-VP: ``beta_min``, ``beta_max``, ``N``;
      VE: ``sigma_min``, ``sigma_max``, ``N``; every ``sde`` key for another name),
    * every ``model`` key (network, its size, ``output``, ``time_label``, ``label_scale``) except
      ``ema_rate`` and ``dropout``,
    * ``data.dataset``, ``data.image_size``, ``data.num_channels``, ``data.centered`` (shape, range).

    A difference raises :class:`ConfigMismatchError` naming ``where``, the differing keys and both
    values, unless ``allow_mismatch`` (then it is a warning). Other keys (learning rate, number
    of steps, batch size, logging, sampling and evaluation settings) may differ: they are returned
    as ``"key: old -> new"`` strings (the caller decides whether to warn).
    """
    if saved is None or current is None:
        return []
    a, b = _flatten(saved), _flatten(current)
    for k, default in _ADDED_KEYS.items():      # keys added later: absent means their old meaning
        for flat in (a, b):
            flat.setdefault(k, default)
    if not a.get("model.pixel_head") and not b.get("model.pixel_head"):   # no head: its clamp is moot
        for flat in (a, b):
            flat.pop("model.pixel_head_clip", None)
    defining = _model_defining(a, a.get("sde.name")) | _model_defining(b, b.get("sde.name"))
    differ = sorted(k for k in set(a) | set(b)          # schema_version: metadata, migrated on load
                    if k != "schema_version" and a.get(k, _ABSENT) != b.get(k, _ABSENT))
    hard = [k for k in differ if k in defining]
    soft = [f"{k}: {a.get(k, _ABSENT)!r} -> {b.get(k, _ABSENT)!r}" for k in differ if k not in defining]
    if hard:
        detail = _short([f"{k} ({a.get(k, _ABSENT)!r} in the checkpoint, {b.get(k, _ABSENT)!r} now)" for k in hard])
        msg = (f"{where} was trained under a different config: {detail}; use the config it was trained with "
               "(the run's config.json)")
        if not allow_mismatch:
            raise ConfigMismatchError(msg + ", or pass the explicit override (allow_mismatch=True) if you know "
                                      "the weights fit", hard)
        warnings.warn(msg + " (allowed by the override)", stacklevel=2)
    return soft
