"""Small shared helpers: rank-agnostic broadcasting, argument checks and the atomic file writer.

Notation used across the package: ``x`` is a batch shaped ``(B, *event_shape)`` of any rank
(``(B, D)`` vectors, ``(B, C, H, W)`` images, ...); ``t`` holds one time per sample, shape
``(B,)``.
"""
from __future__ import annotations

import json
import numbers
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

import torch

__all__ = ["append_dims", "batch_sum", "batch_mean", "as_time", "check_positive", "atomic_write", "atomic_write_json"]


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dimensions to ``v`` until it has ``ndim`` dimensions.

    ``append_dims(std, x.ndim) * x`` multiplies each sample of ``x`` by its own scalar, whatever
    the rank of ``x``.
    """
    extra = ndim - v.ndim
    if extra < 0:
        raise ValueError(f"append_dims: tensor has {v.ndim} dims, more than the target {ndim}")
    return v.reshape(*v.shape, *([1] * extra))


def batch_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first: ``(B, ...) -> (B,)``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def batch_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first: ``(B, ...) -> (B,)``."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def _skip_value_checks(t: torch.Tensor) -> bool:
    # Data-dependent checks would break torch.compile graphs and CUDA graph capture.
    if torch.compiler.is_compiling():
        return True
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def as_time(t, x: torch.Tensor | None = None, T: float = 1.0, name: str = "t") -> torch.Tensor:
    """Validate and normalise a time argument.

    ``t`` may be a Python number, a 0-d tensor (both broadcast to the batch of ``x``) or a
    tensor of shape ``(B,)`` with ``B == x.shape[0]``. Returns a tensor of shape ``(B,)`` (or the
    shape of ``t`` when ``x`` is None) on ``x``'s device, in ``x``'s floating dtype.
    Raises ValueError for a wrong shape or values outside ``[0, T]``.
    """
    if x is not None:
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        device = x.device
    else:
        dtype = t.dtype if isinstance(t, torch.Tensor) and t.is_floating_point() else torch.get_default_dtype()
        device = t.device if isinstance(t, torch.Tensor) else None
    if isinstance(t, numbers.Real) and not isinstance(t, bool):
        t = torch.tensor(float(t), dtype=dtype, device=device)
    elif not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a number or a tensor of shape (batch,), got {type(t).__name__}")
    else:
        t = t.to(device=device, dtype=dtype)
    if x is not None:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        elif t.shape != (x.shape[0],):
            raise ValueError(
                f"{name} must hold one time per sample: expected shape ({x.shape[0]},) for x of shape "
                f"{tuple(x.shape)}, got {tuple(t.shape)}"
            )
    if not _skip_value_checks(t) and t.numel() > 0:
        if t.device.type != "cpu":
            # no host sync on accelerators: the check fails asynchronously if violated
            torch._assert_async(((t >= 0) & (t <= T * (1 + 1e-6))).all(), f"{name} must lie in [0, T] = [0, {T}]")
            return t
        lo, hi = float(t.min()), float(t.max())
        if not (lo >= 0.0 and hi <= T * (1 + 1e-6)):
            raise ValueError(f"{name} must lie in [0, T] = [0, {T}], got values in [{lo:.6g}, {hi:.6g}]")
    return t


def check_positive(name: str, value) -> float:
    """Return ``float(value)``; ValueError unless it is a finite positive number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (v > 0 and v < float("inf")):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


# ---------------------------------------------------------------------------------------------
# the one atomic writer (checkpoints, JSON, .npz statistics, classifier caches)
# ---------------------------------------------------------------------------------------------

def _fsync_dir(directory: Path):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Union[str, os.PathLike], mode: str, write: Callable[[Any], None]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path`` (opened with ``mode``: ``"wb"`` or
    ``"w"``), fsync it, ``os.replace`` it over ``path`` and fsync the directory.

    A crash at any moment leaves either the old file or the complete new one, never a torn one;
    on a Python-level failure the temporary file (``.NAME.*.tmp``) is removed and ``path`` is
    untouched. Parent directories are created. Returns ``path``. Every file the package writes
    for later reading goes through here (``torch.save``: ``atomic_write(p, "wb", lambda f:
    torch.save(obj, f))``; ``np.savez`` likewise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if type(e) is OSError and e.filename is None and e.errno is not None:
            # name the file (a failed write/fsync names none): "[Errno 28] No space left on device: 'x.npz'"
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_json(path: Union[str, os.PathLike], obj) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (plus a final newline) through :func:`atomic_write`."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, "w", lambda f: f.write(text))
