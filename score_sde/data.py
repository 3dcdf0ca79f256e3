"""Data: 2-D toy generators, scikit-learn's bundled 8x8 digits, CIFAR-10 and image folders.

Everything is local and offline. Two kinds of data:

* **Toy 2-D points** (``TOY_DATASETS``): exact samplers with an explicit ``torch.Generator``,
  returned as float tensors ``(n, 2)``. The checkerboard has a known density
  (:func:`checkerboard_log_prob`) and entropy ``log 8`` (:data:`CHECKERBOARD_ENTROPY`).
* **Quantised images** (digits, CIFAR-10, image folders): loaders return the raw integer levels as
  ``uint8`` tensors ``(N, C, H, W)`` with values in ``{0, ..., levels-1}``; :func:`to_float`
  turns them into model inputs.

Scaling convention (one for every quantised data set, ``L`` = number of levels, 256 for 8-bit
images, 17 for digits)::

    y = (x + u) / L,  u ~ U[0, 1)^D     (uniform dequantisation: y fills [0, 1])
    y = (x + 1/2) / L                   (no dequantisation: the bin centres)
    model input = 2 y - 1   if centered  (in [-1, 1]),  else y  (in [0, 1])

This is :class:`score_sde.quantization.Dequantization` with ``levels = L`` and ``data_range``
``(-1, 1)`` or ``(0, 1)`` (:attr:`Dataset.dequantization`): a continuous density p on model
inputs bounds the discrete negative log-likelihood by ``E_u[-log p(input)] - D log(cell width)``,
cell width ``2/L`` (centered) or ``1/L``.

Digits split (fixed and documented): ``sklearn.datasets.load_digits()`` (1797 images),
``train_test_split(test_size=0.2, random_state=0)`` -> 1437 train / 360 test images.
"""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .quantization import Dequantization

__all__ = [
    "TOY_DATASETS", "CHECKERBOARD_ENTROPY", "toy_sample", "checkerboard", "swiss_roll", "moons",
    "eight_gaussians", "rings", "checkerboard_log_prob",
    "DIGITS_SPLIT", "load_digits", "load_cifar10", "load_image_folder", "ImageFolder", "IMAGE_EXTENSIONS",
    "to_float", "to_levels", "random_flip", "Dataset", "PointDataset", "ImageDataset", "make_dataset", "DATASETS",
]

# ---------------------------------------------------------------------------------------------
# toy 2-D data
# ---------------------------------------------------------------------------------------------

#: Entropy (nats) of the uniform distribution on the checkerboard's 8 unit squares (area 8).
CHECKERBOARD_ENTROPY = math.log(8.0)


def _rand(n, generator, device, dtype, *shape):
    return torch.rand((n, *shape), generator=generator, device=device, dtype=dtype)


def _randn(n, generator, device, dtype, *shape):
    return torch.randn((n, *shape), generator=generator, device=device, dtype=dtype)


def checkerboard(n: int, generator: Optional[torch.Generator] = None, device=None, dtype=torch.float32):
    """Uniform on the 8 dark unit squares of a 4x4 board on ``[-2, 2]^2``.

    A square ``[i, i+1) x [j, j+1)`` (``i, j`` in ``{-2, ..., 1}``) is dark when ``i + j`` is even.
    Entropy ``log 8``. Returns ``(n, 2)``.
    """
    u = _rand(n, generator, device, dtype, 2)
    cell = torch.randint(0, 8, (n,), generator=generator, device=device)
    row = cell // 2                                   # 0..3
    col = 2 * (cell % 2) + (row % 2)                  # the two dark columns of that row
    i, j = col - 2, row - 2                           # i + j even
    return torch.stack([i.to(dtype) + u[:, 0], j.to(dtype) + u[:, 1]], dim=1)


def checkerboard_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Exact log-density of :func:`checkerboard` at ``x (B, 2)``: ``-log 8`` on the board, else -inf."""
    fl = torch.floor(x)
    inside = ((x >= -2) & (x < 2)).all(dim=1) & ((fl[:, 0] + fl[:, 1]) % 2 == 0)
    out = torch.full(x.shape[:1], -math.inf, dtype=x.dtype, device=x.device)
    return out.masked_fill(inside, -CHECKERBOARD_ENTROPY)


def swiss_roll(n: int, generator: Optional[torch.Generator] = None, device=None, dtype=torch.float32,
               noise: float = 0.05):
    """2-D swiss roll: ``r (cos r, sin r) / 5`` with ``r ~ U[1.5 pi, 4.5 pi]``, plus N(0, noise^2).

    Fits in about ``[-2.7, 2.9]^2``. Returns ``(n, 2)``.
    """
    r = 1.5 * math.pi * (1 + 2 * _rand(n, generator, device, dtype))
    x = torch.stack([r * torch.cos(r), r * torch.sin(r)], dim=1) / 5.0
    return x + noise * _randn(n, generator, device, dtype, 2)


def moons(n: int, generator: Optional[torch.Generator] = None, device=None, dtype=torch.float32,
          noise: float = 0.05):
    """Two interleaved half circles (scikit-learn's "moons", centred and scaled by 1.5), plus noise."""
    a = math.pi * _rand(n, generator, device, dtype)
    lower = torch.randint(0, 2, (n,), generator=generator, device=device).bool()
    x = torch.where(lower, 1 - torch.cos(a), torch.cos(a))
    y = torch.where(lower, 0.5 - torch.sin(a), torch.sin(a))
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 1.5
    return pts + noise * _randn(n, generator, device, dtype, 2)


def eight_gaussians(n: int, generator: Optional[torch.Generator] = None, device=None, dtype=torch.float32,
                    radius: float = 1.5, std: float = 0.1):
    """Eight Gaussians (std ``std``) centred at angles ``k pi / 4`` on a circle of ``radius``."""
    k = torch.randint(0, 8, (n,), generator=generator, device=device).to(dtype)
    centres = radius * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], dim=1)
    return centres + std * _randn(n, generator, device, dtype, 2)


def rings(n: int, generator: Optional[torch.Generator] = None, device=None, dtype=torch.float32,
          radii: Sequence[float] = (0.5, 1.0, 1.5, 2.0), noise: float = 0.04):
    """Concentric circles of the given radii, points spread in proportion to circumference."""
    radii_t = torch.tensor(radii, dtype=dtype, device=device)
    ring = torch.multinomial(radii_t / radii_t.sum(), n, replacement=True, generator=generator)
    a = 2 * math.pi * _rand(n, generator, device, dtype)
    r = radii_t[ring]
    return torch.stack([r * torch.cos(a), r * torch.sin(a)], dim=1) + noise * _randn(n, generator, device, dtype, 2)


#: name -> sampler ``f(n, generator=None, device=None, dtype=torch.float32) -> (n, 2)``
TOY_DATASETS: Dict[str, Callable] = {
    "checkerboard": checkerboard,
    "swiss_roll": swiss_roll,
    "moons": moons,
    "8gaussians": eight_gaussians,
    "rings": rings,
}


def toy_sample(name: str, n: int, generator: Optional[torch.Generator] = None, device=None,
               dtype=torch.float32) -> torch.Tensor:
    """Draw ``n`` points ``(n, 2)`` from the toy data set ``name`` (a key of ``TOY_DATASETS``)."""
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {sorted(TOY_DATASETS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if generator is not None and device is None:
        device = generator.device
    return TOY_DATASETS[name](n, generator=generator, device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# quantised images: loaders return uint8 levels (N, C, H, W)
# ---------------------------------------------------------------------------------------------

#: the fixed digits split: ``sklearn.model_selection.train_test_split(..., **DIGITS_SPLIT)``
DIGITS_SPLIT = {"test_size": 0.2, "random_state": 0}
_SPLITS = ("train", "test")


def _check_split(split):
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


def load_digits(split: str = "train", labels: bool = False):
    """scikit-learn's bundled 8x8 digits (no download), grey levels 0..16, uint8 ``(N, 1, 8, 8)``
    (and, with ``labels=True``, the int64 class labels ``(N,)``: returns ``(images, labels)``).

    Split: ``train_test_split(images, labels, test_size=0.2, random_state=0)`` -> 1437 train,
    360 test (the split depends only on the number of images and the seed).
    """
    _check_split(split)
    from sklearn.datasets import load_digits as _sk_load
    from sklearn.model_selection import train_test_split

    d = _sk_load()
    images = d.images.astype(np.uint8)          # (1797, 8, 8), values 0..16
    xtr, xte, ytr, yte = train_test_split(images, d.target, **DIGITS_SPLIT)
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    x = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)
    return (x, torch.from_numpy(np.asarray(y, dtype=np.int64))) if labels else x


_CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_CIFAR_HELP = ("Download the CIFAR-10 python version (cifar-10-python.tar.gz) from "
               "https://www.cs.toronto.edu/~kriz/cifar.html, extract it (tar xzf) and point "
               "config.data.root (--config.data.root=DIR) at the directory that contains "
               "'cifar-10-batches-py' or at 'cifar-10-batches-py' itself.")


def _cifar_dir(root: Union[str, Path], split: str) -> Path:
    root = Path(root).expanduser()
    candidates = [root / "cifar-10-batches-py", root]
    for c in candidates:
        if all((c / f).is_file() for f in _CIFAR_FILES[split]):
            return c
    looked = ", ".join(str(c / f) for c in candidates for f in _CIFAR_FILES[split][:1])
    missing = [str(candidates[0] / f) for f in _CIFAR_FILES[split]]
    raise FileNotFoundError(f"CIFAR-10 {split} files not found: looked for {looked} (and the rest of "
                            f"{[Path(m).name for m in missing]}). {_CIFAR_HELP}")


def load_cifar10(root: Union[str, Path], split: str = "train") -> torch.Tensor:
    """CIFAR-10 from its python batches or its binary files, uint8 ``(N, 3, 32, 32)`` (50000 / 10000).

    ``root`` is the directory holding ``cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``
    and ``test_batch``) or ``cifar-10-batches-bin/`` (``data_batch_1.bin`` .. ``test_batch.bin``),
    or one of those directories itself; the python version is used when both are present.

    The python batches are pickles: they are read with a restricted unpickler
    (:func:`score_sde.safe_pickle.load_array_pickle`) that admits only numpy arrays and plain data,
    so a crafted batch cannot run code (it raises ValueError naming the file and the refused
    global). A missing file raises FileNotFoundError naming the paths searched and how to get the data.
    """
    from .safe_pickle import UnsafePickleError, load_array_pickle

    _check_split(split)
    try:
        d = _cifar_dir(root, split)
    except FileNotFoundError as e:
        b = _cifar_bin_dir(root, split)
        if b is None:
            raise FileNotFoundError(f"{e} (The binary version, a 'cifar-10-batches-bin' directory, works too.)") \
                from None
        return _load_cifar10_bin(b, split)
    parts = []
    for name in _CIFAR_FILES[split]:
        path = d / name
        try:
            batch = load_array_pickle(path, encoding="bytes")
            data = batch[b"data"] if b"data" in batch else batch["data"]
        except UnsafePickleError as e:
            raise ValueError(f"{e}. Use the genuine CIFAR-10 files. {_CIFAR_HELP}") from None
        except pickle.UnpicklingError as e:
            raise ValueError(f"{path} is not a CIFAR-10 python batch (a pickled dict with a 'data' "
                             f"array of shape (N, 3072)): {e!r}. {_CIFAR_HELP}") from None
        except (EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise ValueError(f"{path} is not a CIFAR-10 python batch (a pickled dict with a 'data' "
                             f"array of shape (N, 3072)): {e!r}. {_CIFAR_HELP}") from None
        try:
            data = np.asarray(data, dtype=np.uint8)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: 'data' is not an array of 8-bit pixels ({e})") from None
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{path}: expected 'data' of shape (N, 3072), got {data.shape}")
        parts.append(data.reshape(-1, 3, 32, 32))
    return torch.from_numpy(np.concatenate(parts, axis=0))


_CIFAR_BIN_RECORD = 1 + 3072   # one label byte, then 1024 red, 1024 green, 1024 blue bytes (row-major 32x32)


def _cifar_bin_dir(root: Union[str, Path], split: str) -> Optional[Path]:
    """The ``cifar-10-batches-bin`` directory under (or at) ``root`` holding the split's files, or None."""
    root = Path(root).expanduser()
    for c in (root / "cifar-10-batches-bin", root):
        if all((c / f"{f}.bin").is_file() for f in _CIFAR_FILES[split]):
            return c
    return None


def _load_cifar10_bin(d: Path, split: str) -> torch.Tensor:
    """CIFAR-10's binary version (plain bytes, no pickle): records of 3073 bytes, label first."""
    parts = []
    for name in _CIFAR_FILES[split]:
        path = d / f"{name}.bin"
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % _CIFAR_BIN_RECORD:
            raise ValueError(f"{path} is not a CIFAR-10 binary batch: its size ({raw.size} bytes) is not a "
                             f"positive multiple of {_CIFAR_BIN_RECORD} (1 label byte + 3072 pixel bytes per "
                             f"image). {_CIFAR_HELP}")
        parts.append(raw.reshape(-1, _CIFAR_BIN_RECORD)[:, 1:].reshape(-1, 3, 32, 32))
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(parts, axis=0)))


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageFolder(torch.utils.data.Dataset):
    """Every image file under ``root`` (recursively, sorted), as uint8 ``(C, H, W)``.

    Images are converted to ``channels`` (1: grey, 3: RGB), resized so the short side is
    ``image_size`` and centre-cropped to ``image_size x image_size`` (needs Pillow).
    """

    def __init__(self, root: Union[str, Path], image_size: int, channels: int = 3):
        root = Path(root).expanduser()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3 for an image folder, got {channels!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: looked for the directory {root}. Put image files "
                                    f"({', '.join(IMAGE_EXTENSIONS)}) under it, or set --config.data.root=DIR.")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not self.files:
            raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {root}. "
                                    f"Put images there or set --config.data.root=DIR.")
        self.root, self.image_size, self.channels = root, image_size, channels

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        path = self.files[i]
        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.channels == 1 else "RGB")
                w, h = im.size
                s = self.image_size / min(w, h)
                nw, nh = max(self.image_size, round(w * s)), max(self.image_size, round(h * s))
                im = im.resize((nw, nh), Image.BICUBIC)
                left, top = (nw - self.image_size) // 2, (nh - self.image_size) // 2
                im = im.crop((left, top, left + self.image_size, top + self.image_size))
                arr = np.array(im, dtype=np.uint8)
        except OSError as e:
            raise ValueError(f"cannot read image {path}: {e}") from None
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def load_image_folder(root: Union[str, Path], image_size: int, channels: int = 3) -> torch.Tensor:
    """All images of :class:`ImageFolder` stacked in memory, uint8 ``(N, C, image_size, image_size)``."""
    ds = ImageFolder(root, image_size, channels)
    return torch.stack([ds[i] for i in range(len(ds))])


#: the image sizes an image folder config accepts when it reads the size from the data
FOLDER_SIZE_RANGE = (8, 64)


def image_folder_shape(root: Union[str, Path], max_size: int = FOLDER_SIZE_RANGE[1]) -> Tuple[int, int]:
    """``(channels, image_size)`` read from the images of a folder (``root/train`` when present).

    Channels: 1 when every image is grey (PIL modes 1, L, LA, I, I;16, F), else 3. Size: the
    smallest short side among the images, capped at ``max_size`` (larger images are resized down
    by :class:`ImageFolder`); a folder whose smallest image is under 8 pixels is refused. Only the
    image headers are read.
    """
    from PIL import Image

    d = Path(root).expanduser()
    d = d / "train" if (d / "train").is_dir() else d
    files = ImageFolder(d, 1, 1).files          # the same file list (and errors) as loading
    grey, short = True, None
    for path in files:
        try:
            with Image.open(path) as im:
                w, h = im.size
                grey = grey and im.mode in ("1", "L", "LA", "I", "I;16", "F")
        except OSError as e:
            raise ValueError(f"cannot read image {path}: {e}") from None
        short = min(w, h) if short is None else min(short, w, h)
    lo = FOLDER_SIZE_RANGE[0]
    if short < lo:
        raise ValueError(f"the smallest image under {d} is {short} pixels on its short side; an image folder "
                         f"needs at least {lo}x{lo} images")
    return (1 if grey else 3), int(min(short, max_size))


# ---------------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------------

def to_float(x: torch.Tensor, levels: int, dequantize: bool = True, centered: bool = True,
             generator: Optional[torch.Generator] = None, dtype=torch.float32) -> torch.Tensor:
    """Integer levels ``x in {0..levels-1}`` -> model inputs (see the module docstring).

    ``y = (x + u) / levels`` with ``u ~ U[0,1)`` (``dequantize``) or ``(x + 1/2) / levels``; then
    ``2 y - 1`` if ``centered``. Any shape; ``generator`` must live on x's device. Shorthand for
    ``Dequantization.for_data(levels, centered).to_float``.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    return Dequantization.for_data(levels, centered).to_float(x, dequantize=dequantize, generator=generator,
                                                              dtype=dtype)


def to_levels(y: torch.Tensor, levels: int, centered: bool = True) -> torch.Tensor:
    """Inverse of :func:`to_float`: model-space values -> nearest integer levels (uint8 if levels<=256)."""
    return Dequantization.for_data(levels, centered).to_levels(y)


def random_flip(x: torch.Tensor, generator: Optional[torch.Generator] = None, p: float = 0.5) -> torch.Tensor:
    """Flip each image of ``x (B, ..., W)`` left-right with probability p (independently)."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    flip = flip.reshape(-1, *([1] * (x.ndim - 1)))
    return torch.where(flip, x.flip(-1), x)


# ---------------------------------------------------------------------------------------------
# one object per data set: what training, sampling, likelihood and evaluation need
# ---------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    """Base of the two data-set types, :class:`PointDataset` and :class:`ImageDataset`.

    Everything the application layer does differently per data set is asked of the data set
    (no ``if ds.name == ...`` elsewhere):

    * :meth:`training_data` -> ``(data, transform)`` for :func:`score_sde.training.train`;
    * :meth:`likelihood_data` -> ``(x, dequantization, what)`` for the likelihood command;
    * :meth:`sample_metrics` / :meth:`likelihood_metrics`: extra numbers (e.g. the checkerboard's
      fraction of samples on the board, the gap to its entropy);
    * :meth:`evaluation_kwargs`: the feature space and reference of ``evaluate_samples``;
    * :meth:`visual`: how samples are shown (``("image", uint8 (B, C, H, W), scale)`` or
      ``("points", (B, 2))``), written by :mod:`score_sde.io`.

    Attributes:
        name: data set name.
        event_shape: shape of one model input, e.g. ``(2,)`` or ``(1, 8, 8)``.
        kind: ``"points"`` or ``"image"`` (a class attribute, for display).
        levels: number of quantisation levels (None for continuous toy data).
        centered: model inputs in ``[-1, 1]`` (else ``[0, 1]``); images only.
        dequantize: add uniform noise to training batches (images only).
        flip: random horizontal flips of training batches.
    """

    kind: ClassVar[str] = "abstract"
    #: how many samples a training snapshot draws
    snapshot_samples: ClassVar[int] = 64

    name: str
    event_shape: Tuple[int, ...]
    levels: Optional[int] = None
    centered: bool = True
    dequantize: bool = True
    flip: bool = False

    @property
    def data_range(self) -> Tuple[float, float]:
        """Range of model inputs: ``(-1, 1)`` if centered else ``(0, 1)``."""
        return (-1.0, 1.0) if self.centered else (0.0, 1.0)

    @property
    def dequantization(self) -> Optional[Dequantization]:
        """The :class:`score_sde.quantization.Dequantization` of the data (None for toy data)."""
        return None

    @property
    def dim(self) -> int:
        """Number of data dimensions D."""
        return int(np.prod(self.event_shape))

    def sample_metrics(self, x: torch.Tensor) -> Dict[str, float]:
        """Extra metrics of model-space samples ``x`` that only this data set can compute (default none)."""
        return {}

    def likelihood_metrics(self, nll_nats: float) -> Dict[str, float]:
        """Extra likelihood numbers (default none) given the mean NLL in nats."""
        return {}


@dataclass
class PointDataset(Dataset):
    """Continuous toy points ``(n, 2)`` drawn fresh from an exact sampler (``TOY_DATASETS``).

    ``log_prob`` (optional): the exact log-density, ``entropy`` (optional): its entropy in nats;
    with them the data set reports the fraction of samples on the support and the NLL gap.
    """

    kind: ClassVar[str] = "points"
    snapshot_samples: ClassVar[int] = 2000

    log_prob: Optional[Callable[[torch.Tensor], torch.Tensor]] = field(default=None, repr=False)
    entropy: Optional[float] = None

    def raw(self, split: str) -> torch.Tensor:
        _check_split(split)
        raise ValueError(f"toy data set {self.name!r} has no stored split: draw fresh points with .sample(n)")

    def preprocess(self, raw: torch.Tensor, generator: Optional[torch.Generator] = None, train: bool = True,
                   dequantize: Optional[bool] = None) -> torch.Tensor:
        """Points are model inputs already (as float32)."""
        return raw.float()

    def sample(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
        """``n`` fresh toy points, float32 ``(n, 2)``."""
        return toy_sample(self.name, n, generator=generator, device=device)

    def batches(self, batch_size: int, split: str = "train", generator: Optional[torch.Generator] = None,
                device=None, train: bool = True) -> Iterator[torch.Tensor]:
        """Endless iterator of fresh batches ``(batch_size, 2)``."""
        _check_batch_size(batch_size)
        while True:
            yield self.sample(batch_size, generator=generator, device=device)

    def eval_data(self, split: str = "test", n: Optional[int] = None, generator: Optional[torch.Generator] = None
                  ) -> torch.Tensor:
        """``n`` fresh toy points (default 10000)."""
        return self.sample(10000 if n is None else n, generator=generator)

    def training_data(self, labels: bool = False):
        """``(sampler(n, generator=None), None)``: fresh points every batch, no transform."""
        if labels:
            raise ValueError(f"the toy data set {self.name!r} has no class labels (labelled: digits)")
        return (lambda n, generator=None: self.sample(n, generator=generator)), None

    def likelihood_data(self, split: str, n: Optional[int], seed: int, default_n: int):
        """``(x, None, "fresh samples")``: ``n`` (else ``default_n``) fresh points seeded by ``seed``."""
        x = self.sample(int(n or default_n), generator=torch.Generator().manual_seed(seed))
        return x, None, "fresh samples"

    def sample_metrics(self, x: torch.Tensor) -> Dict[str, float]:
        if self.log_prob is None:
            return {}
        return {"fraction_on_board": float(torch.isfinite(self.log_prob(x.detach().cpu())).float().mean())}

    def likelihood_metrics(self, nll_nats: float) -> Dict[str, float]:
        if self.entropy is None:
            return {}
        return {"true_entropy_nats": self.entropy, "gap_nats": nll_nats - self.entropy}

    def evaluation_kwargs(self, n: int, seed: int, workdir, split: str = "test") -> Dict:
        """Raw-space metrics (Frechet distance, sliced Wasserstein) against ``n`` fresh points."""
        ref = self.sample(n, generator=torch.Generator().manual_seed(10_000 + seed))
        return {"features": "raw", "reference": ref}

    def visual(self, x: torch.Tensor):
        """``("points", x)``: shown as a scatter plot."""
        return "points", x.detach().cpu().float()


@dataclass
class ImageDataset(Dataset):
    """Quantised images stored as uint8 levels ``(N, C, H, W)``, read on first use by ``loader(split)``.

    ``feature_space``: the default feature space of its sample metrics (``"digits"`` or
    ``"inception"``, see :func:`score_sde.evaluation.get_feature_space`).
    """

    kind: ClassVar[str] = "image"

    loader: Optional[Callable[[str], torch.Tensor]] = field(default=None, repr=False)
    feature_space: str = "inception"
    _raw: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    #: ``label_loader(split) -> int64 (N,)`` class labels of a labelled data set (None: unlabelled)
    label_loader: Optional[Callable[[str], torch.Tensor]] = field(default=None, repr=False)
    #: number of classes of a labelled data set (0: unlabelled)
    num_classes: int = 0
    _labels: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def labels(self, split: str) -> torch.Tensor:
        """The class labels ``(N,)`` (int64) of ``split``, aligned with :meth:`raw`; ValueError for
        a data set without labels."""
        _check_split(split)
        if self.label_loader is None:
            raise ValueError(f"the data set {self.name!r} has no class labels (labelled: digits)")
        if split not in self._labels:
            self._labels[split] = self.label_loader(split)
        return self._labels[split]

    @property
    def dequantization(self) -> Dequantization:
        """The quantisation of the images: ``levels`` cells over :attr:`data_range`."""
        return Dequantization.for_data(self.levels, self.centered)

    def raw(self, split: str) -> torch.Tensor:
        """The stored split: uint8 levels ``(N, C, H, W)``."""
        _check_split(split)
        if split not in self._raw:
            self._raw[split] = self.loader(split)
        return self._raw[split]

    def preprocess(self, raw: torch.Tensor, generator: Optional[torch.Generator] = None, train: bool = True,
                   dequantize: Optional[bool] = None) -> torch.Tensor:
        """Raw levels -> model inputs (float32). ``train`` enables random flips."""
        deq = self.dequantize if dequantize is None else dequantize
        x = self.dequantization.to_float(raw, dequantize=deq, generator=generator)
        if train and self.flip:
            x = random_flip(x, generator)
        return x

    def sample(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
        raise ValueError(f"{self.name!r} is a stored data set: use .raw(split) / .batches(...)")

    def batches(self, batch_size: int, split: str = "train", generator: Optional[torch.Generator] = None,
                device=None, train: bool = True) -> Iterator[torch.Tensor]:
        """Endless iterator of preprocessed batches: reshuffled epochs (the last partial batch of an
        epoch is dropped), preprocessed on ``device``."""
        _check_batch_size(batch_size)
        data = self.raw(split)
        n = data.shape[0]
        if n < batch_size:
            raise ValueError(f"batch_size={batch_size} exceeds the {n} examples of {self.name!r}/{split}; "
                             f"lower --config.training.batch_size")
        gen_dev = generator.device if generator is not None else None
        while True:
            perm = torch.randperm(n, generator=generator, device=gen_dev).cpu()
            for k in range(0, n - batch_size + 1, batch_size):
                raw = data[perm[k:k + batch_size]].to(device)
                yield self.preprocess(raw, generator=generator if device is None or str(device) == str(gen_dev) else None,
                                      train=train)

    def eval_data(self, split: str = "test", n: Optional[int] = None, generator: Optional[torch.Generator] = None
                  ) -> torch.Tensor:
        """The stored split preprocessed with dequantisation (no flips)."""
        raw = self.raw(split)
        if n is not None:
            raw = raw[:n]
        return self.preprocess(raw, generator=generator, train=False, dequantize=True)

    def training_data(self, labels: bool = False):
        """``(levels, transform)``: the train split (as floats when small, else the uint8 levels
        behind a map-style dataset) and the dequantise-and-flip transform. ``labels=True``: the
        data are ``(levels, labels)`` (tensors, or a dataset of ``(x, y)`` items)."""
        raw = self.raw("train")
        y = self.labels("train") if labels else None
        if raw.numel() <= 50_000_000:
            data = raw.float() if y is None else (raw.float(), y)
        else:
            data = torch.utils.data.TensorDataset(raw) if y is None else torch.utils.data.TensorDataset(raw, y)
        return data, (lambda x, generator: self.preprocess(x, generator=generator, train=True))

    def likelihood_data(self, split: str, n: Optional[int], seed: int, default_n: int):
        """``(levels, dequantization, split)``: the first ``n`` images of ``split`` (all if n is None)."""
        x = self.raw(split)
        return (x[: int(n)] if n else x), self.dequantization, split

    def evaluation_kwargs(self, n: int, seed: int, workdir, split: str = "test") -> Dict:
        """``feature_space`` metrics: the digits classifier (cached in WORKDIR) or Inception
        statistics of ``split`` (cached in WORKDIR)."""
        kw = {"features": self.feature_space, "data_range": self.dequantization.centre_range}
        if self.feature_space == "digits":
            kw["digits_classifier"] = str(Path(workdir) / "digits_classifier.pt")
        else:
            kw["reference"] = self.raw(split)
            kw["reference_cache"] = str(Path(workdir) / f"{self.feature_space}_stats_{self.name}_{split}.npz")
        return kw

    def visual(self, x: torch.Tensor):
        """``("image", uint8 levels stretched to 0..255, upscale)`` of at most 100 samples."""
        levels = self.dequantization.to_levels(x.detach().cpu()[:100])
        if self.levels != 256:   # stretch e.g. 17 grey levels to 0..255 for viewing
            levels = (levels.float() * (255.0 / (self.levels - 1))).round().to(torch.uint8)
        return "image", levels, max(1, 64 // self.event_shape[-1])

    def levels_of(self, x: torch.Tensor) -> torch.Tensor:
        """The quantised levels of model-space samples ``x`` (saved beside the samples)."""
        return self.dequantization.to_levels(x.detach().cpu())


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


#: data set names accepted by :func:`make_dataset`
DATASETS = tuple(TOY_DATASETS) + ("digits", "cifar10", "folder")


def make_dataset(name: str, root: Optional[str] = None, image_size: Optional[int] = None, channels: int = 3,
                 centered: bool = True, dequantize: bool = True, flip: bool = False) -> Dataset:
    """Build a :class:`PointDataset` or :class:`ImageDataset` by name (one of ``DATASETS``).

    ``root`` is needed for ``cifar10`` and ``folder``; ``image_size``/``channels`` for ``folder``.
    Files are only read when a split is first used.
    """
    if name in TOY_DATASETS:
        if name == "checkerboard":
            return PointDataset(name, (2,), log_prob=checkerboard_log_prob, entropy=CHECKERBOARD_ENTROPY)
        return PointDataset(name, (2,))
    if name == "digits":
        return ImageDataset(name, (1, 8, 8), levels=17, centered=centered, dequantize=dequantize, flip=flip,
                            loader=load_digits, feature_space="digits", num_classes=10,
                            label_loader=lambda split: load_digits(split, labels=True)[1])
    if name == "cifar10":
        if not root:
            raise ValueError("cifar10 needs a data directory: set --config.data.root=DIR (the directory with "
                             "cifar-10-batches-py). " + _CIFAR_HELP)
        return ImageDataset(name, (3, 32, 32), levels=256, centered=centered, dequantize=dequantize, flip=flip,
                            loader=lambda split: load_cifar10(root, split))
    if name == "folder":
        if not root:
            raise ValueError("an image folder needs --config.data.root=DIR (train images in DIR/train, test in "
                             "DIR/test, or all images directly under DIR)")
        if image_size is None:
            raise ValueError("an image folder needs config.data.image_size")

        def _load(split):
            d = Path(root).expanduser()
            sub = d / split
            return load_image_folder(sub if sub.is_dir() else d, image_size, channels)

        return ImageDataset(name, (channels, image_size, image_size), levels=256, centered=centered,
                            dequantize=dequantize, flip=flip, loader=_load)
    raise ValueError(f"unknown data set {name!r}; choose one of {list(DATASETS)}")
