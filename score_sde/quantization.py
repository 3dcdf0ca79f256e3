"""The quantisation convention, once: data loading, likelihoods and evaluation use this object.

Data with ``levels`` values per dimension (256 for 8-bit images, 17 for the digits) is stored as
integer codes ``k in {0, ..., levels-1}``. In model space it lives in ``data_range = (lo, hi)``
(``(-1, 1)`` for centred data, ``(0, 1)`` otherwise), and code ``k`` owns the cell
``[lo + k w, lo + (k + 1) w)`` of width ``w = (hi - lo) / levels``::

    dequantised value  = lo + (k + u) w,    u ~ U[0, 1)     (:meth:`Dequantization.dequantize`,
                                                              :meth:`Dequantization.to_float`)
    bin centre         = lo + (k + 1/2) w                   (``to_float(..., dequantize=False)``)
    code of a value y  = floor((y - lo) / w), clipped       (:meth:`Dequantization.to_levels`)

A continuous density p on model space bounds the discrete negative log-likelihood by
``E_u[-log p(value)] - D log w`` (:meth:`Dequantization.discrete_logp`).
:func:`score_sde.data.to_float` / :func:`score_sde.data.to_levels`, the likelihood's
``dequantization=`` argument and :func:`score_sde.evaluation.level_range` are all views of this
object. It imports nothing else of the package.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

__all__ = ["Dequantization", "dequantize"]


def _check_finite(x: torch.Tensor, name: str):
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf); got {int((~torch.isfinite(x)).sum())} non-finite values")


def _uniform_like(ref: torch.Tensor, generator, dtype) -> torch.Tensor:
    """U[0, 1) noise shaped like ref, drawn on the generator's device, moved to ref's device."""
    dev = generator.device if generator is not None else ref.device
    return torch.rand(tuple(ref.shape), generator=generator, device=dev, dtype=dtype).to(ref.device)


@dataclass(frozen=True)
class Dequantization:
    """Uniform dequantisation of data with ``levels`` values per dimension, affinely scaled to
    ``data_range = (lo, hi)``.

    Quantised data may be given as integer codes ``k in {0, ..., levels-1}`` (an integer tensor)
    or as floats on the grid ``lo + (hi - lo) * k / (levels - 1)`` (the usual "divide by 255,
    then rescale" pipeline: 8-bit images in [0, 1] are ``Dequantization(256, (0, 1))``, in
    [-1, 1] ``Dequantization(256, (-1, 1))``). Dequantised values are
    ``lo + (hi - lo) * (k + u) / levels`` with ``u ~ U[0, 1)``: code k owns a cell of width
    ``cell_width = (hi - lo) / levels``.
    """

    levels: int = 256
    data_range: Tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self):
        lv = self.levels
        if isinstance(lv, bool) or not isinstance(lv, numbers.Integral) or lv < 2:
            raise ValueError(f"levels (number of discrete values per dimension) must be an integer >= 2, got {lv!r}")
        object.__setattr__(self, "levels", int(lv))
        try:
            lo, hi = (float(v) for v in self.data_range)
        except (TypeError, ValueError):
            raise ValueError(f"data_range must be a pair (lo, hi) of numbers, got {self.data_range!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"data_range must be finite with lo < hi, got {self.data_range!r}")
        object.__setattr__(self, "data_range", (lo, hi))

    @property
    def cell_width(self) -> float:
        """Width ``(hi - lo) / levels`` of one code's cell in data space."""
        lo, hi = self.data_range
        return (hi - lo) / self.levels

    @property
    def bits_offset(self) -> float:
        """``-log2(cell_width)``: bits/dim added to the continuous bits/dim (7 for 8-bit data in
        [-1, 1], 8 for [0, 1])."""
        return -math.log2(self.cell_width)

    def log_cell_volume(self, dim: int) -> float:
        """``D log(cell_width)`` (nats): log-volume of one code's cell for ``D = dim`` values."""
        return dim * math.log(self.cell_width)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes (int64, shaped like x) of quantised data; ValueError if x is not
        quantised data of this kind (non-finite, outside ``data_range`` or off the grid)."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a tensor, got {type(x).__name__}")
        L = self.levels
        if not x.is_floating_point():
            if x.dtype == torch.bool or x.is_complex():
                raise ValueError(f"x must hold integer codes or floats, got dtype {x.dtype}")
            k = x.to(torch.int64)
            if k.numel() and (int(k.min()) < 0 or int(k.max()) > L - 1):
                raise ValueError(
                    f"integer codes must lie in {{0, ..., levels-1}} = {{0, ..., {L - 1}}}, got values in "
                    f"[{int(k.min())}, {int(k.max())}]")
            return k
        _check_finite(x, "x")
        lo, hi = self.data_range
        step = (hi - lo) / (L - 1)
        xf = x.to(torch.float64)
        if xf.numel():
            xmin, xmax = float(xf.min()), float(xf.max())
            tol = 1e-3 * step
            if xmin < lo - tol or xmax > hi + tol:
                raise ValueError(
                    f"data outside the declared data_range: expected values in [{lo:g}, {hi:g}], got values in "
                    f"[{xmin:.6g}, {xmax:.6g}]; pass the range your data is scaled to")
        pos = (xf - lo) / step
        k = torch.round(pos)
        off = float((pos - k).abs().max()) if xf.numel() else 0.0
        if off > 1e-2:
            raise ValueError(
                f"x is not on the grid of {L} levels in data_range [{lo:g}, {hi:g}] (values lo + (hi - lo) k / "
                f"(levels - 1)); worst offset {off:.3g} grid steps. For data that is already continuous, call "
                f"log_likelihood without dequantization (and use Dequantization.discrete_logp on dequantised "
                f"data)")
        return k.clamp_(0, L - 1).to(torch.int64)

    def dequantize(self, x: torch.Tensor, generator: Optional[torch.Generator] = None,
                   dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Continuous values ``lo + (hi - lo) (k + u) / levels``, ``u ~ U[0,1)`` drawn from
        ``generator`` (on its device), shaped like x; dtype: x's floating dtype (or ``dtype``,
        or torch's default for integer codes)."""
        k = self.codes(x)
        if dtype is None:
            dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        u = _uniform_like(k, generator, dtype)
        lo, _ = self.data_range
        return lo + (k.to(dtype) + u) * self.cell_width

    @classmethod
    def for_data(cls, levels: int, centered: bool = True) -> "Dequantization":
        """The convention of the data sets: model inputs in ``(-1, 1)`` if ``centered`` else ``(0, 1)``."""
        return cls(levels, (-1.0, 1.0) if centered else (0.0, 1.0))

    @property
    def centre_range(self) -> Tuple[float, float]:
        """Model-space values of the centres of the lowest and highest cells,
        ``(lo + w/2, hi - w/2)``: pass it as a ``data_range`` that maps level ``k`` to
        ``k / (levels - 1)`` exactly (digits, 17 levels, centred: ``(-16/17, 16/17)``)."""
        lo, hi = self.data_range
        w = self.cell_width
        return (lo + 0.5 * w, hi - 0.5 * w)

    def to_float(self, codes: torch.Tensor, dequantize: bool = True, generator: Optional[torch.Generator] = None,
                 dtype=torch.float32) -> torch.Tensor:
        """Integer codes -> model inputs: ``lo + (k + u) w`` with ``u ~ U[0, 1)`` from ``generator``
        (``dequantize``) or the bin centres ``lo + (k + 1/2) w``. Any shape; the codes are not
        range-checked (see :meth:`dequantize` for the checked variant)."""
        kf = codes.to(dtype)
        if dequantize:
            u = torch.rand(codes.shape, generator=generator, device=codes.device, dtype=dtype)
        else:
            u = torch.full_like(kf, 0.5)
        lo, hi = self.data_range
        y = (kf + u) / self.levels
        return lo + (hi - lo) * y if (lo, hi) != (0.0, 1.0) else y

    def to_levels(self, y: torch.Tensor) -> torch.Tensor:
        """Model-space values -> the code of the cell holding each value (clipped to the range),
        uint8 when ``levels <= 256`` else int64. Inverse of :meth:`to_float`."""
        lo, hi = self.data_range
        if (lo, hi) != (0.0, 1.0):
            y = (y - lo) / (hi - lo)
        k = torch.floor(y * self.levels).clamp(0, self.levels - 1)
        return k.to(torch.uint8) if self.levels <= 256 else k.long()

    def discrete_logp(self, logp_continuous: torch.Tensor, dim: int) -> torch.Tensor:
        """Lower-bound estimate of the discrete log-probability from the continuous log-density
        of dequantised data: ``logp_continuous + D log(cell_width)``."""
        return logp_continuous + self.log_cell_volume(dim)


def dequantize(x: torch.Tensor, levels: int = 256, data_range=(-1.0, 1.0),
               generator: Optional[torch.Generator] = None, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Uniformly dequantise a batch: shorthand for ``Dequantization(levels, data_range).dequantize``.

    ``x``: integer codes in ``{0..levels-1}`` or floats on ``lo + (hi-lo) k/(levels-1)``; returns
    floats in ``[lo, hi]`` shaped like x.
    """
    return Dequantization(levels, data_range).dequantize(x, generator=generator, dtype=dtype)


