"""The FID Inception-v3 network in plain PyTorch (the ``pt_inception-2015-12-05`` layout).

This is the network behind the standard FID and Inception Score: TensorFlow's 2015-12-05
Inception-v3 graph (the one the TTUR FID code and TF-GAN use), whose weights pytorch-fid
distributes converted to PyTorch as ``pt_inception-2015-12-05-6726825d.pth``. Module and
parameter names follow torchvision's ``Inception3`` (``Conv2d_1a_3x3.conv.weight``, ...,
``Mixed_7c.branch_pool.bn.running_var``, ``fc.weight``), so that file loads with
``load_state_dict(strict=True)``. Differences from torchvision's ``inception_v3``:

* 1008 output classes (``fc: 2048 -> 1008``), no auxiliary classifier;
* the average pools inside the Mixed_5b-d (A), Mixed_6b-e (C) and Mixed_7b (E) blocks leave
  the zero padding out of the average (``count_include_pad=False``, TensorFlow's behaviour);
* Mixed_7c's pool branch uses a 3x3 **max** pool (stride 1, padding 1), not an average pool.

Outputs (:meth:`FIDInceptionV3.forward`): ``pool`` (``(B, 2048)``, the "pool3" features used for
FID and KID), ``logits`` (``(B, 1008)``, with the fc bias) and ``logits_unbiased`` (without the
bias, what the original Inception Score code and torch-fidelity feed to the softmax).

Inputs are images ``(B, 3, H, W)`` (or ``(B, 1, H, W)``, repeated to 3 channels) with values in
``[0, 1]``, resized to 299x299 bilinearly. ``resize="tf"`` (default) reproduces TensorFlow 1's
``resize_bilinear(align_corners=False)`` (no half-pixel offset) and the graph's
``(255 x - 128) / 128`` input scaling, i.e. the pipeline the published TF numbers went through;
``resize="pytorch-fid"`` reproduces pytorch-fid (``F.interpolate(..., align_corners=False)``,
half-pixel centres, and ``2 x - 1``).

Weights are never downloaded and never random: :func:`load_inception` finds the file from an
argument, the ``SCORE_SDE_INCEPTION_WEIGHTS`` environment variable or the default locations
(see :func:`inception_weights_path`) and raises :class:`InceptionWeightsNotFoundError` otherwise.
"""
from __future__ import annotations

import hashlib
import os
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FIDInceptionV3", "load_inception", "inception_weights_path", "InceptionWeightsNotFoundError",
           "INCEPTION_WEIGHTS_FILE", "INCEPTION_WEIGHTS_ENV", "INCEPTION_NUM_PARAMETERS",
           "resize_bilinear_tf"]

#: the file name pytorch-fid distributes (release ``fid_weights`` of mseitzer/pytorch-fid)
INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
#: environment variable naming the weights file
INCEPTION_WEIGHTS_ENV = "SCORE_SDE_INCEPTION_WEIGHTS"
#: trainable parameters of the FID Inception: torchvision's inception_v3 has 27,161,264 with the
#: auxiliary head (3,326,696) and 1000 classes; without the head and with 1008 classes:
#: 27,161,264 - 3,326,696 + 8 * (2048 + 1) = 23,850,960
INCEPTION_NUM_PARAMETERS = 23_850_960


class InceptionWeightsNotFoundError(FileNotFoundError):
    """The FID Inception weights file is missing (we never download it, never use random weights)."""


class _ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU; named ``conv`` and ``bn`` like torchvision."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x):
    # TensorFlow's SAME average pooling: padded zeros do not count in the average
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):  # Mixed_5b, 5c, 5d: 35x35
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1 = _ConvBN(cin, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool_features, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([b1, b5, b3, bp], 1)


class _BlockB(nn.Module):  # Mixed_6a: 35x35 -> 17x17
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class _BlockC(nn.Module):  # Mixed_6b..6e: 17x17, factorised 7x7
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([b1, b7, bd, bp], 1)


class _BlockD(nn.Module):  # Mixed_7a: 17x17 -> 8x8
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = _ConvBN(cin, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class _BlockE(nn.Module):  # Mixed_7b (average pool), Mixed_7c (max pool): 8x8
    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "max":   # the FID graph's Mixed_7c: max pool (the paper's net averages)
            p = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            p = _avg_pool_tf(x)
        return torch.cat([b1, b3, bd, self.branch_pool(p)], 1)


def resize_bilinear_tf(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """TensorFlow 1 ``resize_bilinear(align_corners=False, half_pixel_centers=False)`` of
    ``(B, C, H, W)``: output pixel ``i`` samples input coordinate ``i * H_in / H_out`` (clamped)."""
    out_h, out_w = int(size[0]), int(size[1])

    def weights(n_in, n_out):
        src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
        lo = src.floor().clamp(max=n_in - 1).long()
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = (src - lo.double()).clamp(0.0, 1.0)
        m = torch.zeros(n_out, n_in, dtype=torch.float64)
        idx = torch.arange(n_out)
        m.index_put_((idx, lo), 1.0 - frac, accumulate=True)
        m.index_put_((idx, hi), frac, accumulate=True)
        return m

    wh = weights(x.shape[-2], out_h).to(device=x.device, dtype=x.dtype)
    ww = weights(x.shape[-1], out_w).to(device=x.device, dtype=x.dtype)
    return torch.einsum("oh,bchw,pw->bcop", wh, x, ww)


class FIDInceptionV3(nn.Module):
    """Inception-v3 of the FID (see the module docstring). ``forward(x)`` with ``x (B, 3|1, H, W)``
    in ``[0, 1]`` returns ``{"pool": (B, 2048), "logits": (B, 1008), "logits_unbiased": (B, 1008)}``.

    Building it gives *untrained* weights: use :func:`load_inception` for metrics.
    """

    def __init__(self, resize: str = "tf"):
        super().__init__()
        if resize not in ("tf", "pytorch-fid"):
            raise ValueError(f"resize must be 'tf' or 'pytorch-fid', got {resize!r}")
        self.resize = resize
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _BlockA(192, pool_features=32)
        self.Mixed_5c = _BlockA(256, pool_features=64)
        self.Mixed_5d = _BlockA(288, pool_features=64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, c7=128)
        self.Mixed_6c = _BlockC(768, c7=160)
        self.Mixed_6d = _BlockC(768, c7=160)
        self.Mixed_6e = _BlockC(768, c7=192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, pool="avg")
        self.Mixed_7c = _BlockE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)
        self.eval()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` images -> the network's 299x299 input in ``[-1, 1]``."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"x must be images (B, 3, H, W) or (B, 1, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x.to(self.fc.weight.dtype)
        if self.resize == "tf":
            if x.shape[-2:] != (299, 299):
                x = resize_bilinear_tf(x, (299, 299))
            return (255.0 * x - 128.0) / 128.0
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    def pool_features(self, x: torch.Tensor) -> torch.Tensor:
        """Network input ``(B, 3, 299, 299)`` -> pool3 features ``(B, 2048)``."""
        x = self.Conv2d_1a_3x3(x)          # 32 x 149 x 149
        x = self.Conv2d_2a_3x3(x)          # 32 x 147 x 147
        x = self.Conv2d_2b_3x3(x)          # 64 x 147 x 147
        x = F.max_pool2d(x, 3, stride=2)   # 64 x 73 x 73
        x = self.Conv2d_3b_1x1(x)          # 80 x 73 x 73
        x = self.Conv2d_4a_3x3(x)          # 192 x 71 x 71
        x = F.max_pool2d(x, 3, stride=2)   # 192 x 35 x 35
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d,   # 256, 288, 288 x 35 x 35
                      self.Mixed_6a,                                 # 768 x 17 x 17
                      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
                      self.Mixed_7a,                                 # 1280 x 8 x 8
                      self.Mixed_7b, self.Mixed_7c):                 # 2048 x 8 x 8
            x = block(x)
        return x.mean(dim=(2, 3))          # global average pool: 2048

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        pool = self.pool_features(self.preprocess(x))
        unbiased = pool @ self.fc.weight.t()
        return {"pool": pool, "logits_unbiased": unbiased, "logits": unbiased + self.fc.bias}


def _default_locations() -> list:
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "torch")
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return [os.path.join(cache, "score_sde", INCEPTION_WEIGHTS_FILE),
            os.path.join(torch_home, "hub", "checkpoints", INCEPTION_WEIGHTS_FILE)]


def inception_weights_path(path=None) -> str:
    """Where the FID Inception weights are: ``path`` if given, else ``$SCORE_SDE_INCEPTION_WEIGHTS``,
    else ``~/.cache/score_sde/pt_inception-2015-12-05-6726825d.pth``, else torch hub's checkpoint
    folder (``$TORCH_HOME/hub/checkpoints/``, where pytorch-fid downloads it).

    Raises:
        InceptionWeightsNotFoundError: naming the file and where to put it.
    """
    if path is not None:
        candidates, source = [os.fspath(path)], "the path given"
    elif os.environ.get(INCEPTION_WEIGHTS_ENV):
        candidates, source = [os.environ[INCEPTION_WEIGHTS_ENV]], f"${INCEPTION_WEIGHTS_ENV}"
    else:
        candidates, source = _default_locations(), "the default locations"
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise InceptionWeightsNotFoundError(
        f"FID Inception weights not found ({source}: {', '.join(candidates)}). FID, KID and IS need "
        f"the standard FID Inception-v3 weights, the file '{INCEPTION_WEIGHTS_FILE}' distributed "
        "with pytorch-fid (GitHub mseitzer/pytorch-fid, release 'fid_weights'; ~95 MB). Download it "
        f"on a machine with internet access and either put it at {_default_locations()[0]}, or set "
        f"{INCEPTION_WEIGHTS_ENV}=/path/to/{INCEPTION_WEIGHTS_FILE}, or pass its path "
        "(inception_weights=... / --inception-weights / config.eval.inception_weights). "
        "score_sde never downloads it and never computes FID with random weights.")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_inception(weights=None, device=None, resize: str = "tf", dtype=torch.float32) -> FIDInceptionV3:
    """The FID Inception with its standard weights, in eval mode, gradients off.

    Args:
        weights: path to ``pt_inception-2015-12-05-6726825d.pth`` (see :func:`inception_weights_path`
            for the fallbacks when None).
        device, dtype: where and in what precision to run (float32 is the standard).
        resize: ``"tf"`` or ``"pytorch-fid"`` (see the module docstring).
    The file is read with ``torch.load(weights_only=True)`` and loaded strictly; a missing
    ``num_batches_tracked`` counter (absent from files saved by old PyTorch) is the only key
    tolerated, as it plays no part in inference. ``model.weights_path`` and ``model.weights_sha256``
    record which file produced the features.
    """
    from ..safe_pickle import WeightsFileError, load_weights_file

    path = inception_weights_path(weights)
    expected = (f"the FID Inception state_dict {INCEPTION_WEIGHTS_FILE} (pt_inception-2015-12-05 layout, "
                "as distributed by pytorch-fid)")
    state = load_weights_file(path, "FID Inception weights file", expected)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if isinstance(state, dict) and str(state.get("format", "")).startswith("score_sde."):
        raise WeightsFileError(f"{path} is a score_sde training checkpoint, not a FID Inception weights file; "
                               f"expected {expected}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        got = type(state).__name__ if not isinstance(state, dict) else "a dict that is not all tensors"
        raise WeightsFileError(f"{path} is not a FID Inception weights file: it holds {got}; expected {expected}")
    with torch.device("meta"):           # no random initialisation: every tensor comes from the file
        model = FIDInceptionV3(resize=resize)
    state = dict(state)
    for k in model.state_dict():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros((), dtype=torch.long)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise WeightsFileError(f"{path} is not the FID Inception weights file {INCEPTION_WEIGHTS_FILE}: its keys "
                               f"or shapes do not match the pt_inception-2015-12-05 layout ({detail})") from None
    model.weights_path = os.path.abspath(path)
    model.weights_sha256 = _sha256(path)
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype).eval()
