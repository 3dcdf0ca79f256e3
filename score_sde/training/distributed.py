"""torch.distributed helpers for training launched by ``torchrun``.

``torchrun --nproc_per_node=G [--nnodes=N --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT] script.py``
sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` then joins the process group with ``init_method="env://"`` (backend
``nccl`` on GPUs, ``gloo`` on CPU) and pins each process to ``cuda:LOCAL_RANK``. Without those
variables everything runs in one process and these helpers are no-ops.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Optional

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "is_distributed", "get_rank", "get_world_size", "barrier",
           "all_reduce_mean", "broadcast_object"]


class DistInfo(NamedTuple):
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node, its device."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def _env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def init_distributed(device=None, backend: Optional[str] = None) -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this process's device.

    Args:
        device: ``None`` (auto: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU), or an
            explicit device (a CUDA device without an index gets ``LOCAL_RANK``).
        backend: ``None`` (``nccl`` for CUDA, ``gloo`` for CPU) or a backend name.

    An already initialised process group is used as it is (``initialized_here=False``).
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    else:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank if is_distributed() or _env_world_size() > 1 else
                                  torch.cuda.current_device())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    here = False
    if not is_distributed() and _env_world_size() > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, init_method="env://", **kwargs)
        here = True
    return DistInfo(get_rank(), get_world_size(), local_rank, device, here)


def barrier():
    if is_distributed():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over ranks (in place; returns it). A no-op in one process."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank (small picklable objects: paths, numbers)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
