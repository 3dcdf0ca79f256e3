"""Writers of the files a run produces: PNG image grids, scatter plots, ``.npz`` arrays, JSON.

Everything goes through :func:`score_sde.utils.atomic_write` (temporary file + fsync + rename),
so a reader never sees a torn file. This module imports nothing of the package but the utilities;
what to draw for a data set is the data set's business (:meth:`score_sde.data.Dataset.visual`).
"""
from __future__ import annotations

import io as _stdio
import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .utils import atomic_write, atomic_write_json

__all__ = ["write_json", "write_text", "save_npz", "save_image_grid", "save_scatter", "save_visual", "save_metric_plot"]


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented, key-sorted JSON, atomically. Returns the path."""
    return atomic_write_json(path, obj)


def save_npz(path, **arrays) -> Path:
    """``np.savez_compressed(path, **arrays)``, atomically. Returns the path."""
    return atomic_write(path, "wb", lambda f: np.savez_compressed(f, **arrays))


def _save_png(image, path) -> Path:
    buf = _stdio.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    return atomic_write(path, "wb", lambda f: f.write(data))


def _save_figure(fig, path) -> Path:
    """Write a matplotlib figure as a PNG through the atomic writer and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = _stdio.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    data = buf.getvalue()
    return atomic_write(path, "wb", lambda f: f.write(data))


def save_image_grid(images: torch.Tensor, path, nrow: Optional[int] = None, scale: int = 1, pad: int = 2) -> Path:
    """Save uint8 images ``(B, C, H, W)`` (C = 1 or 3) as one PNG grid, each upscaled ``scale`` times."""
    from PIL import Image

    images = images.detach().cpu()
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be uint8 (B, 1|3, H, W), got {images.dtype} {tuple(images.shape)}")
    B, C, H, W = images.shape
    nrow = nrow or int(math.ceil(math.sqrt(B)))
    ncol = int(math.ceil(B / nrow))
    h, w = H * scale, W * scale
    grid = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, C), 128, dtype=np.uint8)  # grey separators
    arr = images.permute(0, 2, 3, 1).numpy()
    if scale > 1:
        arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    for i in range(B):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = arr[i]
    return _save_png(Image.fromarray(grid[:, :, 0] if C == 1 else grid), path)


def save_scatter(points: torch.Tensor, path, title: str = "", lim: float = 3.0, reference: Optional[torch.Tensor] = None
                 ) -> Path:
    """Scatter plot of 2-D points ``(B, 2)`` as PNG (matplotlib if installed, else drawn with PIL)."""
    pts = points.detach().cpu().float().numpy()
    ref = reference.detach().cpu().float().numpy() if reference is not None else None
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    if plt is not None:
        ncols = 2 if ref is not None else 1
        fig, axes = plt.subplots(1, ncols, figsize=(4 * ncols, 4), squeeze=False)
        panels = [(pts, title or "samples")] + ([(ref, "data")] if ref is not None else [])
        for ax, (p, name) in zip(axes[0], panels):
            ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.5)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_title(name)
        return _save_figure(fig, path)
    from PIL import Image, ImageDraw

    size = 400
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    xy = (pts + lim) / (2 * lim) * (size - 1)
    for x, y in xy:
        if 0 <= x < size and 0 <= y < size:
            draw.point((float(x), float(size - 1 - y)), fill=(31, 119, 180))
    return _save_png(img, path)


def save_visual(visual, path, title: str = "") -> Path:
    """Write what :meth:`score_sde.data.Dataset.visual` returns: an image grid or a scatter plot."""
    kind = visual[0]
    if kind == "image":
        _, images, scale = visual
        return save_image_grid(images, path, scale=scale)
    if kind == "points":
        return save_scatter(visual[1], path, title=title)
    raise ValueError(f"unknown visual kind {kind!r}: expected ('image', uint8 images, scale) or ('points', x)")


def save_metric_plot(series, path, xlabel: str = "NFE", ylabel: str = "metric", title: str = "",
                     logx: bool = True, hlines=None) -> Path:
    """Line plot of one or more series as PNG (matplotlib, Agg back-end).

    ``series``: ``{label: [(x, y), ...]}`` (points with ``y`` None are left out; a series of one
    point is drawn as a marker); ``hlines``: ``{label: y}`` drawn as dashed horizontal lines
    (e.g. a metric's floor); ``logx``: logarithmic x axis.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, pts in series.items():
        pts = sorted((float(x), float(y)) for x, y in pts if y is not None and x is not None)
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", markersize=4, linestyle="-" if len(pts) > 1 else "none", label=label)
    for label, y in (hlines or {}).items():
        if y is not None:
            ax.axhline(float(y), color="grey", linestyle="--", linewidth=1, label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save_figure(fig, path)


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8), atomically. Returns the path."""
    return atomic_write(path, "w", lambda f: f.write(text))
