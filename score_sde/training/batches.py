"""Reproducible, rank-sharded batches as a function of the step number.

Every random choice of the loop is derived from ``(seed, purpose, step[, rank])`` through
:func:`derive_seed`, never from a running RNG stream, so a run resumed at step k draws exactly
what an uninterrupted run draws from step k on, and the global batch (data and noise) does not
depend on how many processes share it: rank r of W takes rows ``[r b, (r+1) b)`` of the global
batch of ``W b`` rows.

Data sources (``make_source``):

* a tensor ``(N, ...)``, or a pair ``(x (N, ...), labels (N,))`` of tensors: shuffled without
  replacement, one permutation per epoch (``steps_per_epoch = N // global_batch``, the incomplete
  last batch is dropped);
* a map-style ``torch.utils.data.Dataset`` (``len`` and ``[i]``; an item may be ``(x, label)``):
  the same index order, loaded by a ``DataLoader`` (workers, pinned memory);
* a callable ``data(n, generator=g) -> (n, ...)`` (e.g. a toy-data sampler): called with the
  global batch size and a CPU generator seeded by the step;
* any other iterable of batches (e.g. your own DataLoader): used as it is, re-iterated when
  exhausted; each batch is this process's share and the order is not restored on resume.

Every source's ``get(step)`` returns ``(x, labels)``: ``labels`` is the batch's integer class labels
``(b,)`` when the data carry them (the pair form, ``(x, label)`` items, callables and iterables
yielding ``(x, y)`` pairs, dict batches with a ``"label"`` / ``"y"`` key), else None.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import numpy as np
import torch

__all__ = ["derive_seed", "make_source", "PURPOSE"]

PURPOSE = {"data": 1, "loss": 2, "global": 3, "transform": 4, "loader": 5, "labels": 6}


def derive_seed(seed: int, purpose: str, step: int, rank: int = 0) -> int:
    """A well-mixed 63-bit seed for ``(seed, purpose, step, rank)``."""
    ss = np.random.SeedSequence([int(seed) % (1 << 63), PURPOSE[purpose], int(step), int(rank)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _first(batch):
    if isinstance(batch, (tuple, list)):
        return batch[0]
    if isinstance(batch, dict):
        for k in ("image", "x", "data"):
            if k in batch:
                return batch[k]
        raise ValueError(f"data: a dict batch needs a key 'image', 'x' or 'data'; got keys {list(batch)}")
    return batch


def _label_of(batch):
    y = None
    if isinstance(batch, (tuple, list)) and len(batch) > 1:
        y = batch[1]
    elif isinstance(batch, dict):
        y = next((batch[k] for k in ("label", "labels", "y") if k in batch), None)
    if y is None:
        return None
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.dtype == torch.bool or y.ndim != 1:
        return None                        # not class labels (e.g. a second image): ignored
    return y


def _split(batch, what="data"):
    return _check_tensor(_first(batch), what), _label_of(batch)


def _to(y, device):
    return None if y is None else y.to(device, non_blocking=True)


def _check_tensor(x, what="data"):
    # integer data (e.g. uint8 pixels) is fine here when a transform turns it into floats
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must yield tensors (B, ...), got {type(x).__name__}")
    return x


class _Source:
    exact_resume = True
    local_batch: int

    def get(self, step: int) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self):
        pass


def _indices(n: int, global_batch: int, seed: int, step: int, rank: int, local: int, cache: dict) -> torch.Tensor:
    spe = n // global_batch
    epoch, j = divmod(step, spe)
    if cache.get("epoch") != epoch:
        g = torch.Generator().manual_seed(derive_seed(seed, "data", epoch))
        cache["epoch"], cache["perm"] = epoch, torch.randperm(n, generator=g)
    start = j * global_batch + rank * local
    return cache["perm"][start:start + local]


class TensorSource(_Source):
    def __init__(self, data: torch.Tensor, global_batch: int, rank: int, world: int, seed: int, device,
                 max_device_bytes: int = 2 << 30, labels: Optional[torch.Tensor] = None):
        _check_tensor(data)
        if labels is not None and (_label_of((data, labels)) is None or labels.shape[0] != data.shape[0]):
            raise ValueError(f"labels must be an integer tensor ({data.shape[0]},) beside the data, got "
                             f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")
        self.labels = labels
        if data.shape[0] < global_batch:
            raise ValueError(f"batch_size={global_batch} exceeds the number of training examples ({data.shape[0]}); "
                             "lower batch_size")
        nbytes = data.numel() * data.element_size()
        self.data = data.to(device) if nbytes <= max_device_bytes else data
        self.device = torch.device(device)
        self.n, self.gb, self.rank, self.seed = data.shape[0], global_batch, rank, seed
        self.local_batch = global_batch // world
        self._cache = {}

    def get(self, step):
        idx = _indices(self.n, self.gb, self.seed, step, self.rank, self.local_batch, self._cache)
        x = self.data[idx.to(self.data.device)]
        y = None if self.labels is None else self.labels[idx.to(self.labels.device)]
        return x.to(self.device, non_blocking=True), _to(y, self.device)


class CallableSource(_Source):
    def __init__(self, fn: Callable, global_batch: int, rank: int, world: int, seed: int, device):
        self.fn, self.gb, self.rank, self.seed, self.device = fn, global_batch, rank, seed, torch.device(device)
        self.local_batch = global_batch // world

    def get(self, step):
        g = torch.Generator().manual_seed(derive_seed(self.seed, "data", step))
        x, y = _split(self.fn(self.gb, generator=g), "data(n, generator)")
        if x.shape[0] != self.gb:
            raise ValueError(f"data(n, generator) returned {x.shape[0]} rows for n={self.gb}")
        lo = self.rank * self.local_batch
        y = None if y is None else y[lo:lo + self.local_batch]
        return x[lo:lo + self.local_batch].to(self.device, non_blocking=True), _to(y, self.device)


class _StepBatchSampler(torch.utils.data.Sampler):
    def __init__(self, n, global_batch, rank, local, seed, start, stop):
        self.args = (n, global_batch, seed)
        self.rank, self.local, self.start, self.stop = rank, local, start, stop

    def __iter__(self):
        cache = {}
        n, gb, seed = self.args
        for step in range(self.start, self.stop):
            yield _indices(n, gb, seed, step, self.rank, self.local, cache).tolist()

    def __len__(self):
        return max(0, self.stop - self.start)


class DatasetSource(_Source):
    exact_resume = True  # index order yes; random augmentation inside the dataset follows worker seeds

    def __init__(self, dataset, global_batch, rank, world, seed, device, start, stop, num_workers=0):
        n = len(dataset)
        if n < global_batch:
            raise ValueError(f"batch_size={global_batch} exceeds the dataset size ({n}); lower batch_size")
        self.local_batch = global_batch // world
        self.device = torch.device(device)
        sampler = _StepBatchSampler(n, global_batch, rank, self.local_batch, seed, start, stop)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(derive_seed(seed, "loader", start, rank)),
            persistent_workers=False)
        self._it = iter(self.loader)
        self._next = start

    def get(self, step):
        if step != self._next:
            raise RuntimeError(f"DatasetSource: steps must be consecutive (expected {self._next}, got {step})")
        self._next += 1
        x, y = _split(next(self._it), "dataset items")
        return x.to(self.device, non_blocking=True), _to(y, self.device)

    def close(self):
        self._it = None


class IterableSource(_Source):
    exact_resume = False

    def __init__(self, iterable, device):
        self.iterable, self.device = iterable, torch.device(device)
        self._it: Optional[Iterator] = iter(iterable)
        self._peek = self._pull()
        self.local_batch = self._peek[0].shape[0]

    def _pull(self):
        try:
            b = next(self._it)
        except StopIteration:
            self._it = iter(self.iterable)
            try:
                b = next(self._it)
            except StopIteration:
                raise ValueError("data: the iterable yields no batches") from None
        return _split(b, "data batches")

    def get(self, step):
        if self._peek is not None:
            (x, y), self._peek = self._peek, None
        else:
            x, y = self._pull()
        return x.to(self.device, non_blocking=True), _to(y, self.device)


def make_source(data, *, batch_size: Optional[int], rank: int, world: int, seed: int, device, start: int,
                stop: int, num_workers: int = 0) -> _Source:
    """Pick the batch source for ``data`` (see the module docstring)."""
    is_dataset = isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset)
    labels = None
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(d, torch.Tensor) for d in data):
        data, labels = data                 # (x, labels) tensors
    if isinstance(data, torch.Tensor) or is_dataset or (callable(data) and not hasattr(data, "__iter__")):
        if batch_size is None:
            raise ValueError("batch_size is required for tensor, Dataset and callable data (the global batch, "
                             "summed over all processes)")
        if batch_size % world:
            raise ValueError(f"batch_size={batch_size} must be divisible by the number of processes ({world})")
        if isinstance(data, torch.Tensor):
            return TensorSource(data, batch_size, rank, world, seed, device, labels=labels)
        if is_dataset:
            return DatasetSource(data, batch_size, rank, world, seed, device, start, stop, num_workers)
        return CallableSource(data, batch_size, rank, world, seed, device)
    if hasattr(data, "__iter__"):
        src = IterableSource(data, device)
        if batch_size is not None and src.local_batch * world != batch_size:
            raise ValueError(f"batch_size={batch_size} but the iterable yields batches of {src.local_batch} rows "
                             f"per process ({world} processes); pass batch_size=None for iterables")
        return src
    raise ValueError("data must be a tensor (N, ...), a pair (x, labels) of tensors, a map-style Dataset, a callable data(n, generator) or an "
                     f"iterable of batches; got {type(data).__name__}")
