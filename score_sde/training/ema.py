"""Exponential moving average of a model's parameters AND buffers.

After each optimizer step, for every floating-point parameter and buffer ``p`` of the model
(trainable or not, random Fourier features included) the shadow copy ``s`` is updated as::

    s <- decay * s + (1 - decay) * p          (torch.lerp(s, p, 1 - decay))

Non-floating buffers (counters, integer tables) are copied. ``decay`` is fixed (the paper's
``ema_rate``, 0.9999 for CIFAR-10 and 0.999 for the small configs) unless ``warmup=True``, which
uses ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (a short average early in training,
as in TensorFlow's ExponentialMovingAverage with ``num_updates``).

The reference implementation keeps only ``requires_grad`` parameters in its EMA, so its EMA
model carries un-averaged copies of every other tensor; here the shadow is a complete module
(:attr:`EMA.module`) that can be sampled from directly.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Dict, Iterator, List, Tuple

import torch
from torch import nn

__all__ = ["EMA", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DistributedDataParallel / DataParallel / torch.compile wrappers
    (so that state dicts carry no ``module.`` or ``_orig_mod.`` prefix)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _tensors(module: nn.Module) -> List[Tuple[str, torch.Tensor]]:
    named = list(module.named_parameters(remove_duplicate=True))
    named += list(module.named_buffers(remove_duplicate=True))
    return named


class EMA:
    """EMA of every parameter and buffer of ``model``.

    Args:
        model: the module being trained (wrappers are unwrapped); the shadow starts as a copy.
        decay: the EMA rate in ``[0, 1)``.
        warmup: use ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates.

    Attributes:
        module: the averaged model, a deep copy of ``model`` in eval mode with
            ``requires_grad=False``; pass it (or ``copy_to`` another module) to a sampler.
        num_updates: how many times :meth:`update` ran.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = False):
        decay = float(decay)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay (ema_rate) must lie in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = bool(warmup)
        self.num_updates = 0
        src = unwrap_model(model)
        self.module = copy.deepcopy(src).eval().requires_grad_(False)
        self._bind(src)

    def _bind(self, model: nn.Module):
        """Pair the shadow tensors with ``model``'s tensors, by name."""
        mine = dict(_tensors(self.module))
        theirs = _tensors(model)
        if set(mine) != {n for n, _ in theirs}:
            raise ValueError("EMA: the model's parameters/buffers do not match the EMA module's")
        self._float_src, self._float_dst, self._other = [], [], []
        for name, t in theirs:
            dst = mine[name]
            if dst.shape != t.shape:
                raise ValueError(f"EMA: {name} has shape {tuple(t.shape)} in the model, {tuple(dst.shape)} in the EMA")
            if t.is_floating_point() or t.is_complex():
                self._float_src.append(t)
                self._float_dst.append(dst)
            else:
                self._other.append((t, dst))
        self._source = model
        self._needs_cast = any(s.dtype != d.dtype for s, d in zip(self._float_src, self._float_dst))

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if self.warmup:
            n = self.num_updates
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module = None):
        """``shadow <- decay * shadow + (1 - decay) * model`` for every floating tensor.

        ``model`` defaults to the module given at construction (pass it again only if it was
        replaced, e.g. after loading a state dict into a new object)."""
        if model is not None and unwrap_model(model) is not self._source:
            self._bind(unwrap_model(model))
        w = 1.0 - self.current_decay()
        if self._float_dst:
            src = self._float_src
            if self._needs_cast:
                src = [s.to(d.dtype) for s, d in zip(src, self._float_dst)]
            torch._foreach_lerp_(self._float_dst, src, w)
        for s, d in self._other:
            d.copy_(s)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> nn.Module:
        """Load the averaged tensors into ``model`` (same architecture); returns it."""
        unwrap_model(model).load_state_dict(self.module.state_dict(), strict=True)
        return model

    @contextlib.contextmanager
    def average_parameters(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily put the averaged tensors into ``model`` (restored on exit)."""
        inner = unwrap_model(model)
        backup = {k: v.detach().clone() for k, v in inner.state_dict().items()}
        self.copy_to(inner)
        try:
            yield model
        finally:
            inner.load_state_dict(backup, strict=True)

    def state_dict(self) -> Dict:
        """``{"module": state_dict, "decay", "warmup", "num_updates"}`` (plain tensors and numbers)."""
        return {"module": self.module.state_dict(), "decay": self.decay, "warmup": self.warmup,
                "num_updates": self.num_updates}

    def load_state_dict(self, state: Dict):
        """Restore from :meth:`state_dict` (strict: every key must match)."""
        self.module.load_state_dict(state["module"], strict=True)
        self.num_updates = int(state["num_updates"])
        self.decay = float(state.get("decay", self.decay))
        self.warmup = bool(state.get("warmup", self.warmup))

    def __repr__(self):
        return f"EMA(decay={self.decay}, warmup={self.warmup}, num_updates={self.num_updates})"
