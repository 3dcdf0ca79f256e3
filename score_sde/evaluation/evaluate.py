"""Streamed, shardable evaluation of samples: one call from samples to a JSON-ready dict.

A *feature space* turns a batch of samples into features (and class logits where it has them):

=============  ===========================================  =====================================
features=      network                                      metric keys in the result
=============  ===========================================  =====================================
``inception``  FID Inception-v3 (pool3, 1008 logits)        ``fid``, ``is_mean/std``, ``kid_mean/std``
``digits``     the digits classifier (64 features, 10 cls)  ``digits_fd``, ``digits_is_mean/std``,
                                                            ``digits_kid_mean/std``
``raw``        none: the flattened coordinates               ``raw_fd``, ``sliced_wasserstein``,
                                                            ``mean_log_p0`` (with a distribution)
=============  ===========================================  =====================================

Samples are read batch by batch (a tensor or array ``(N, ...)``, a ``.npy``/``.npz`` file, or any
iterable of batches), mapped from ``data_range`` to ``[0, 1]`` (integer arrays are taken as grey
levels ``0..levels-1``), clipped and, by default, rounded to the data's levels (256 for images, 17
for digits) as an image file would be. Only the float64 mean/covariance accumulators, and the
features / logits that KID and IS need, are kept.

Sharding: with ``rank``/``world_size`` a process evaluates the contiguous block
``[rank N // world_size, (rank + 1) N // world_size)`` of array-like samples (an iterable is taken
to be that rank's block already). Under ``torch.distributed`` the ranks gather their partial
states and all return the same result; otherwise each rank writes ``shard_dir/shard-R-of-W.npz``
and :func:`merge_shards` computes the metrics from the shards, which equals the unsharded result.

Reference statistics (``mu``, ``sigma``, count, optionally the features for KID, and metadata
naming the feature network) are computed once by :func:`reference_statistics` and cached as
``.npz``; TTUR / pytorch-fid statistics files (``mu``, ``sigma``) load as they are.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch

from ..quantization import Dequantization
from ..utils import atomic_write
from .exact import sliced_wasserstein
from .frechet import FeatureStatistics, FeatureStats, frechet_distance, load_stats, save_stats
from .metrics import inception_score, kernel_inception_distance

__all__ = ["evaluate_samples", "reference_statistics", "merge_shards", "get_feature_space", "FEATURE_SPACES",
           "FeatureSpace", "InceptionFeatures", "DigitsFeatures", "RawFeatures", "level_range"]


def level_range(levels: int, centered: bool = True):
    """The model-space values of the lowest and highest of ``levels`` grey levels under
    :func:`score_sde.data.to_float`'s convention (bin centres ``(x + 1/2) / levels``, then
    ``2 y - 1`` if ``centered``): pass it as ``data_range`` so that level ``x`` maps to
    ``x / (levels - 1)`` exactly. E.g. digits (17 levels, centred): ``(-16/17, 16/17)``."""
    return Dequantization.for_data(levels, centered).centre_range


# ------------------------------------------------------------------------------- feature spaces
class FeatureSpace:
    """Base of the feature spaces: ``__call__(x01) -> {"features": (B, D), "logits": (B, K) | None}``
    on a batch already mapped to ``[0, 1]``. ``describe()`` says which network it is.

    What the evaluation does with a space is read from these attributes, never from its name:

    - ``levels``: grey levels of its inputs (samples are mapped to ``[0, 1]`` and rounded to them),
      or None: the samples go in unmapped, in float64;
    - ``keys``: the names of its metrics in the result (``keys["is"]`` None: no Inception Score);
    - ``has_logits``: it returns class logits (the Inception Score is defined);
    - ``image_layout``: ``(N, H, W, C)`` batches are recognised and permuted to ``(N, C, H, W)``;
    - ``coordinates``: its features are the samples' own coordinates, so the exact metrics (sliced
      Wasserstein, mean log p_0, a Frechet distance against an analytic distribution) apply;
    - ``default_reference``: a description of the reference data used when ``reference=`` is not
      given (None: a Frechet distance / KID needs ``reference=``), whose samples
      :meth:`default_reference_data` returns.

    :meth:`from_options` builds the space for :func:`get_feature_space` (a name -> class table,
    :data:`FEATURE_SPACES`).
    """

    name = "custom"
    levels: Optional[int] = None
    keys = {"fd": "fd", "is": "is", "kid": "kid"}
    has_logits = False
    image_layout = False
    coordinates = False
    default_reference: Optional[str] = None

    def __call__(self, x: torch.Tensor) -> Dict[str, Optional[torch.Tensor]]:
        raise NotImplementedError

    @classmethod
    def from_options(cls, *, device=None, inception_weights=None, inception_resize="tf", is_logits="unbiased",
                     digits_classifier=None) -> "FeatureSpace":
        """The space built from :func:`get_feature_space`'s keyword arguments (each class reads its own)."""
        return cls()

    def default_reference_data(self) -> torch.Tensor:
        """The samples behind :attr:`default_reference`, with values in ``[0, 1]``."""
        raise ValueError("data is required: the reference samples to compute statistics of")

    def describe(self) -> dict:
        return {"name": self.name}

    @property
    def fingerprint(self) -> str:
        return self.describe().get("fingerprint", self.name)


class InceptionFeatures(FeatureSpace):
    """The FID Inception (``model`` from :func:`~score_sde.evaluation.inception.load_inception`).
    ``is_logits``: ``"unbiased"`` (default, as the original IS code) or ``"biased"``."""

    name = "inception"
    levels = 256
    keys = {"fd": "fid", "is": "is", "kid": "kid"}
    has_logits = True
    image_layout = True

    def __init__(self, model, is_logits: str = "unbiased"):
        if is_logits not in ("unbiased", "biased"):
            raise ValueError(f"is_logits must be 'unbiased' or 'biased', got {is_logits!r}")
        self.model, self.is_logits = model, is_logits

    @classmethod
    def from_options(cls, *, device=None, inception_weights=None, inception_resize="tf", is_logits="unbiased",
                     digits_classifier=None):
        from .inception import load_inception
        return cls(load_inception(inception_weights, device=device, resize=inception_resize), is_logits=is_logits)

    def __call__(self, x):
        dev = next(self.model.parameters()).device
        out = self.model(x.to(dev))
        logits = out["logits_unbiased"] if self.is_logits == "unbiased" else out["logits"]
        return {"features": out["pool"], "logits": logits}

    def describe(self):
        return {"name": "pt_inception-2015-12-05 (FID Inception-v3)",
                "weights": getattr(self.model, "weights_path", None),
                # the resize changes the features: part of the fingerprint that references must match
                "fingerprint": f"{getattr(self.model, 'weights_sha256', 'unverified')}:{self.model.resize}",
                "resize": self.model.resize, "is_logits": self.is_logits}


class DigitsFeatures(FeatureSpace):
    """The digits classifier's 64 penultimate features and 10 logits (a Digits FD, not a FID)."""

    name = "digits"
    levels = 17
    keys = {"fd": "digits_fd", "is": "digits_is", "kid": "digits_kid"}
    has_logits = True
    default_reference = "digits test split (360 images)"

    def __init__(self, classifier):
        self.classifier = classifier

    @classmethod
    def from_options(cls, *, device=None, inception_weights=None, inception_resize="tf", is_logits="unbiased",
                     digits_classifier=None):
        from .digits_features import DigitsClassifier, train_digits_classifier
        clf = digits_classifier if isinstance(digits_classifier, DigitsClassifier) else \
            train_digits_classifier(cache=digits_classifier)
        return cls(clf)

    def default_reference_data(self):
        from .digits_features import load_digits_split
        return load_digits_split("test")[0]

    def __call__(self, x):
        with torch.no_grad():
            return self.classifier(x.cpu())

    def describe(self):
        return {"name": "digits classifier (" + str(self.classifier.config.get("arch", "?")) + ")",
                "fingerprint": self.classifier.fingerprint,
                "test_accuracy": float(self.classifier.test_accuracy),
                "config": self.classifier.config}


class RawFeatures(FeatureSpace):
    """No network: the flattened samples are the features (exact metrics, toy data)."""

    name = "raw"
    levels = None
    keys = {"fd": "raw_fd", "is": None, "kid": "raw_kid"}
    coordinates = True

    def __call__(self, x):
        return {"features": x.reshape(x.shape[0], -1).double(), "logits": None}

    def describe(self):
        return {"name": "raw coordinates", "fingerprint": "raw"}


#: feature-space names accepted by :func:`get_feature_space` (and ``features=`` everywhere)
FEATURE_SPACES = {cls.name: cls for cls in (InceptionFeatures, DigitsFeatures, RawFeatures)}


def get_feature_space(features="inception", *, device=None, inception_weights=None, inception_resize="tf",
                      is_logits="unbiased", digits_classifier=None) -> FeatureSpace:
    """A :class:`FeatureSpace` from a name (a key of :data:`FEATURE_SPACES`: ``"inception"``,
    ``"digits"``, ``"raw"``) or pass one through.

    ``digits_classifier``: a trained classifier, or a path to cache it at (trained if missing),
    or None (train it now, a few seconds). Inception raises InceptionWeightsNotFoundError without
    its weights file.
    """
    if isinstance(features, FeatureSpace):
        return features
    cls = FEATURE_SPACES.get(features) if isinstance(features, str) else None
    if cls is None:
        names = ", ".join(repr(k) for k in FEATURE_SPACES)
        raise ValueError(f"features must be {names} or a FeatureSpace, got {features!r}")
    return cls.from_options(device=device, inception_weights=inception_weights, inception_resize=inception_resize,
                            is_logits=is_logits, digits_classifier=digits_classifier)


# ------------------------------------------------------------------------------- sample sources
def _load_path(path) -> np.ndarray:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"samples file not found: {path}")
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if path.endswith(".npz"):
        z = np.load(path, allow_pickle=False)
        keys = [k for k in z.files if k != "meta"]
        key = "samples" if "samples" in z.files else ("x" if "x" in z.files else (keys[0] if len(keys) == 1 else None))
        if key is None:
            raise ValueError(f"{path}: cannot tell which array holds the samples among {z.files}; "
                             "name it 'samples'")
        return z[key]
    raise ValueError(f"samples file must be .npy or .npz, got {path}")


def _batches(samples, batch_size: int, rank: int, world_size: int):
    """Yield this rank's batches (as tensors) and return the number of samples in the whole set
    (None for iterables)."""
    if isinstance(samples, (str, os.PathLike)):
        samples = _load_path(samples)
    if isinstance(samples, (torch.Tensor, np.ndarray)):
        n = samples.shape[0]
        a, b = rank * n // world_size, (rank + 1) * n // world_size
        def gen():
            for i in range(a, b, batch_size):
                blk = samples[i:min(i + batch_size, b)]
                yield blk if isinstance(blk, torch.Tensor) else torch.from_numpy(np.array(blk))
        return gen(), n
    if isinstance(samples, Iterable):
        def gen_it():
            for blk in samples:
                if isinstance(blk, (list, tuple)):   # (x, label) pairs from a DataLoader
                    blk = blk[0]
                yield blk if isinstance(blk, torch.Tensor) else torch.as_tensor(np.asarray(blk))
        return gen_it(), None
    raise ValueError("samples must be a tensor or array (N, ...), a .npy/.npz path or an iterable of "
                     f"batches, got {type(samples).__name__}")


def _to_unit(x: torch.Tensor, space: FeatureSpace, data_range, quantize: bool, clip: bool = True):
    """Map a batch to the space's input ([0, 1] for images; clipped to it unless ``clip`` is False);
    count non-finite samples."""
    if space.levels is None:                      # raw: no mapping
        xf = x.double() if x.is_floating_point() else x.to(torch.float64)
        bad = int((~torch.isfinite(xf.reshape(xf.shape[0], -1))).any(1).sum())
        return xf, bad
    if space.image_layout and x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)                 # NHWC (as image files / the reference's .npz) -> NCHW
    if x.is_floating_point():
        lo, hi = float(data_range[0]), float(data_range[1])
        xf = (x.to(torch.float32) - lo) / (hi - lo)
    else:
        xf = x.to(torch.float32) / (space.levels - 1)
    bad = int((~torch.isfinite(xf.reshape(xf.shape[0], -1))).any(1).sum())
    xf = torch.nan_to_num(xf, nan=0.0, posinf=1.0, neginf=0.0)
    if clip:
        xf = xf.clamp(0.0, 1.0)
    if quantize:
        xf = torch.round(xf * (space.levels - 1)) / (space.levels - 1)
    return xf, bad


class _State:
    """Partial evaluation state of one shard: mergeable and storable."""

    def __init__(self):
        self.stats = FeatureStats()
        self.features, self.logits, self.raw = [], [], []
        self.n = 0
        self.nonfinite = 0
        self.logp_sum = 0.0

    def arrays(self) -> dict:
        st = self.stats
        d = {"n": np.asarray(self.n), "nonfinite": np.asarray(self.nonfinite),
             "logp_sum": np.asarray(self.logp_sum), "stats_n": np.asarray(st.n)}
        if st.n:
            d["stats_mean"], d["stats_m2"] = st.mean, st.m2
        for k in ("features", "logits", "raw"):
            v = getattr(self, k)
            if v:
                d[k] = np.concatenate(v)
        return d

    @classmethod
    def from_arrays(cls, d) -> "_State":
        s = cls()
        s.n, s.nonfinite, s.logp_sum = int(d["n"]), int(d["nonfinite"]), float(d["logp_sum"])
        s.stats = FeatureStats.from_state(int(d["stats_n"]), d.get("stats_mean"), d.get("stats_m2"))
        for k in ("features", "logits", "raw"):
            if k in d:
                setattr(s, k, [np.asarray(d[k])])
        return s

    def merge(self, other: "_State") -> "_State":
        self.stats.merge(other.stats)
        self.n += other.n
        self.nonfinite += other.nonfinite
        self.logp_sum += other.logp_sum
        for k in ("features", "logits", "raw"):
            getattr(self, k).extend(getattr(other, k))
        return self


def _accumulate(samples, space, *, data_range, quantize, batch_size, rank, world_size, keep_features,
                keep_logits, keep_raw, distribution=None, device=None, clip=True):
    it, n_total = _batches(samples, batch_size, rank, world_size)
    st = _State()
    for x in it:
        if device is not None and space.levels is not None:
            x = x.to(device)
        xu, bad = _to_unit(x, space, data_range, quantize, clip)
        st.nonfinite += bad
        out = space(xu)
        f = out["features"].detach().double().cpu().numpy()
        st.stats.update(f)
        st.n += f.shape[0]
        if keep_features:
            st.features.append(f.astype(np.float32) if space.levels is not None else f)
        if keep_logits and out.get("logits") is not None:
            st.logits.append(out["logits"].detach().float().cpu().numpy())
        if keep_raw:
            st.raw.append(xu.reshape(xu.shape[0], -1).cpu().numpy())
        if distribution is not None:
            st.logp_sum += float(distribution.log_prob(xu.reshape(xu.shape[0], *distribution.event_shape).cpu()
                                                       .double()).double().sum())
    return st, n_total


# ------------------------------------------------------------------------------- reference stats
def reference_statistics(data=None, features="inception", *, cache=None, keep_features: bool = True,
                         data_range=(0.0, 1.0), quantize: bool = True, batch_size: int = 250, device=None,
                         inception_weights=None, inception_resize="tf", digits_classifier=None,
                         ) -> FeatureStatistics:
    """Feature statistics of a reference data set, computed once and cached.

    Args:
        data: the reference samples (same forms as ``evaluate_samples``' ``samples``); for
            ``features="digits"`` None means the digits test split.
        features: feature space name or object.
        cache: ``.npz`` path: loaded when it exists (its metadata must name the same feature
            network), else written. Keys ``mu``, ``sigma``, ``n``, ``meta`` and, with
            ``keep_features`` (needed for KID), ``features``.
    """
    space = get_feature_space(features, device=device, inception_weights=inception_weights,
                              inception_resize=inception_resize, digits_classifier=digits_classifier)
    if cache is not None and os.path.isfile(os.fspath(cache)):
        stats = load_stats(cache)
        _check_reference_meta(stats, space, os.fspath(cache))
        if keep_features and stats.features is None:
            raise ValueError(f"cached reference {os.fspath(cache)} has no features (needed for KID): delete it "
                             "or compute it with keep_features=True")
        return stats
    source = "given data"
    if data is None:
        data, source = space.default_reference_data(), space.default_reference
        data_range = (0.0, 1.0)
    elif isinstance(data, (str, os.PathLike)):
        source = os.path.abspath(os.fspath(data))
    st, _ = _accumulate(data, space, data_range=data_range, quantize=quantize, batch_size=batch_size, rank=0,
                        world_size=1, keep_features=keep_features, keep_logits=False, keep_raw=False,
                        device=device)
    stats = st.stats.statistics()
    stats.features = np.concatenate(st.features) if keep_features else None
    stats.meta = {"feature_space": space.name, "feature_network": space.describe(), "source": source,
                  "quantize": bool(quantize), "data_range": [float(data_range[0]), float(data_range[1])]}
    if cache is not None:
        save_stats(cache, stats)
    return stats


def _check_reference_meta(stats: FeatureStatistics, space: FeatureSpace, where: str):
    meta = stats.meta or {}
    if not meta:
        return   # a TTUR / pytorch-fid file: no metadata to check
    if meta.get("feature_space") != space.name:
        raise ValueError(f"reference statistics {where} were computed in feature space "
                         f"{meta.get('feature_space')!r}, not {space.name!r}")
    fp = (meta.get("feature_network") or {}).get("fingerprint")
    if fp is not None and fp != space.fingerprint:
        raise ValueError(f"reference statistics {where} were computed with another feature network "
                         f"(fingerprint {fp}, now {space.fingerprint}): recompute them")


def _resolve_reference(reference, space, opts):
    """-> (FeatureStatistics or None, description)."""
    if isinstance(reference, FeatureStatistics):
        _check_reference_meta(reference, space, "given")
        return reference
    if isinstance(reference, (str, os.PathLike)) and os.fspath(reference).endswith(".npz") \
            and os.path.isfile(os.fspath(reference)):
        with np.load(os.fspath(reference), allow_pickle=False) as z:
            is_stats = "mu" in z.files and "sigma" in z.files
        if is_stats:
            stats = load_stats(reference)
            _check_reference_meta(stats, space, os.fspath(reference))
            stats.meta.setdefault("source", os.path.abspath(os.fspath(reference)))
            return stats
    if reference is None and space.default_reference is None:
        return None
    return reference_statistics(reference, space, cache=opts["reference_cache"], keep_features=opts["need_kid"],
                                data_range=opts["data_range"], quantize=opts["quantize"],
                                batch_size=opts["batch_size"], device=opts["device"])


# ------------------------------------------------------------------------------- evaluation
_METRIC_ALIASES = {"fid": "fd", "fd": "fd", "digits_fd": "fd", "raw_fd": "fd", "is": "is", "inception_score": "is",
                   "digits_is": "is", "kid": "kid", "digits_kid": "kid", "sw": "sw", "sliced_wasserstein": "sw",
                   "log_prob": "log_prob", "mean_log_p0": "log_prob"}


def _resolve_metrics(metrics, space, reference, distribution):
    if metrics is None:
        if space.coordinates:
            chosen = set()
            if reference is not None or distribution is not None:
                chosen |= {"fd", "sw"}
            if distribution is not None:
                chosen.add("log_prob")
        else:
            chosen = {"is"} if space.has_logits else set()
            if reference is not None or space.default_reference is not None:
                chosen |= {"fd", "kid"}
        return chosen
    if isinstance(metrics, str):
        metrics = [metrics]
    chosen = set()
    for m in metrics:
        if m not in _METRIC_ALIASES:
            raise ValueError(f"unknown metric {m!r}; choose from {sorted(_METRIC_ALIASES)}")
        chosen.add(_METRIC_ALIASES[m])
    if "is" in chosen and not space.has_logits:
        raise ValueError(f"the {space.name!r} feature space has no classifier: the Inception Score needs logits")
    if ("sw" in chosen or "log_prob" in chosen) and not space.coordinates:
        raise ValueError("sliced_wasserstein and mean_log_p0 are computed on raw coordinates: use features='raw'")
    if "log_prob" in chosen and distribution is None:
        raise ValueError("mean_log_p0 needs distribution= (an analytic distribution with log_prob)")
    return chosen


def _options(space, metrics, reference, distribution, kw):
    chosen = _resolve_metrics(metrics, space, reference, distribution)
    opts = dict(kw)
    opts["metrics"] = sorted(chosen)
    opts["need_kid"] = "kid" in chosen
    return opts


def evaluate_samples(samples, *, features="inception", reference=None, metrics=None,
                     data_range=(0.0, 1.0), quantize: bool = True, batch_size: int = 250, device=None,
                     inception_weights=None, inception_resize: str = "tf", is_logits: str = "unbiased",
                     digits_classifier=None, splits: int = 10, kid_subsets: int = 100,
                     kid_subset_size: int = 1000, seed: int = 0, distribution=None, n_projections: int = 256,
                     reference_cache=None, rank: int = 0, world_size: int = 1, shard_dir=None,
                     clip: bool = True) -> Dict[str, Any]:
    """Evaluate samples from any solver; returns a JSON-serialisable dict of metrics.

    Args:
        samples: ``(N, ...)`` tensor or array, a ``.npy``/``.npz`` file (array ``samples``), or an
            iterable of batches. Images are ``(N, C, H, W)`` (``(N, H, W, C)`` is recognised).
        features: ``"inception"`` (FID / IS / KID), ``"digits"`` (Digits FD / KID / classifier
            score), ``"raw"`` (raw-coordinate FD, sliced Wasserstein, mean log p_0) or a FeatureSpace.
        reference: cached statistics (``.npz`` with ``mu``/``sigma``, or FeatureStatistics), or
            reference data to compute them from (cached at ``reference_cache``). Digits default:
            the test split. Raw: reference samples, or None with ``distribution``.
        metrics: subset of ``"fid"`` (``"fd"``), ``"is"``, ``"kid"``, ``"sliced_wasserstein"``,
            ``"mean_log_p0"``; default: every one the inputs allow.
        data_range: values of float samples that map to black and white (``(-1, 1)`` for
            centred model outputs; :func:`level_range` for score_sde.data's bin-centre convention).
        quantize: round to the data's grey levels (256 images, 17 digits) before the network.
        clip: clip image samples to ``data_range`` before the network (default, as the standard
            metrics do); ``False`` shows the network what lies outside (an unclipped metric; with
            ``quantize`` the out-of-range values round to levels beyond the data's). Raw features
            are never clipped.
        batch_size, device: streaming batch and where the feature network runs.
        inception_weights, inception_resize, is_logits: see :mod:`.inception`.
        digits_classifier: classifier, cache path, or None (train now, seeded).
        splits: Inception Score parts. kid_subsets, kid_subset_size, seed: KID subsets (the subset
            size is lowered to the smaller set size when needed; the value used is reported).
        distribution: analytic distribution (``log_prob``, ``mean``, ``covariance``, ``sample``)
            for the exact metrics of ``features="raw"``.
        n_projections: directions of the sliced Wasserstein distance.
        rank, world_size, shard_dir: sharding (see the module docstring). Without
            torch.distributed a rank returns ``{"shard": path, "complete": False, ...}``.
    """
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"need integers 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    lo, hi = data_range
    if not float(hi) > float(lo):
        raise ValueError(f"data_range must be (low, high) with high > low, got {data_range!r}")
    space = get_feature_space(features, device=device, inception_weights=inception_weights,
                              inception_resize=inception_resize, is_logits=is_logits,
                              digits_classifier=digits_classifier)
    opts = _options(space, metrics, reference, distribution, dict(
        data_range=(float(lo), float(hi)), quantize=bool(quantize), batch_size=batch_size, device=device,
        splits=splits, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed,
        n_projections=n_projections, reference_cache=reference_cache))
    chosen = set(opts["metrics"])
    st, n_total = _accumulate(samples, space, data_range=opts["data_range"], quantize=opts["quantize"],
                              batch_size=batch_size, rank=rank, world_size=world_size,
                              keep_features="kid" in chosen, keep_logits="is" in chosen,
                              keep_raw="sw" in chosen,
                              distribution=distribution if "log_prob" in chosen else None, device=device,
                              clip=bool(clip))
    if world_size > 1:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            gathered = [None] * world_size
            dist.all_gather_object(gathered, st.arrays())
            full = _State()
            for d in gathered:
                full.merge(_State.from_arrays(d))
            return _finalize(full, space, reference, distribution, opts)
        if shard_dir is None:
            raise ValueError("world_size > 1 without torch.distributed needs shard_dir= (a folder the ranks share)")
        os.makedirs(os.fspath(shard_dir), exist_ok=True)
        path = os.path.join(os.fspath(shard_dir), f"shard-{rank:05d}-of-{world_size:05d}.npz")
        meta = {"feature_space": space.name, "fingerprint": space.fingerprint, "metrics": opts["metrics"],
                "rank": rank, "world_size": world_size, "num_samples_total": n_total,
                "data_range": list(opts["data_range"]), "quantize": opts["quantize"]}
        arrays = st.arrays()
        atomic_write(path, "wb", lambda f: np.savez(f, meta=np.asarray(json.dumps(meta)), **arrays))
        return {"complete": False, "shard": path, "rank": rank, "world_size": world_size,
                "num_samples": st.n}
    return _finalize(st, space, reference, distribution, opts)


def merge_shards(shard_dir, *, features="inception", reference=None, metrics=None, data_range=(0.0, 1.0),
                 quantize: bool = True, batch_size: int = 250, device=None, inception_weights=None,
                 inception_resize: str = "tf", is_logits: str = "unbiased", digits_classifier=None,
                 splits: int = 10, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0,
                 distribution=None, n_projections: int = 256, reference_cache=None) -> Dict[str, Any]:
    """Combine the shards written by ``evaluate_samples(..., rank=r, world_size=W, shard_dir=...)``
    into the final metrics (same keyword arguments; equal to the unsharded evaluation)."""
    paths = sorted(glob.glob(os.path.join(os.fspath(shard_dir), "shard-*-of-*.npz")))
    if not paths:
        raise FileNotFoundError(f"no shard files (shard-R-of-W.npz) in {os.fspath(shard_dir)}")
    space = get_feature_space(features, device=device, inception_weights=inception_weights,
                              inception_resize=inception_resize, is_logits=is_logits,
                              digits_classifier=digits_classifier)
    opts = _options(space, metrics, reference, distribution, dict(
        data_range=(float(data_range[0]), float(data_range[1])), quantize=bool(quantize), batch_size=batch_size,
        device=device, splits=splits, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed,
        n_projections=n_projections, reference_cache=reference_cache))
    full, metas = _State(), []
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        meta = json.loads(str(d.pop("meta")))
        metas.append(meta)
        full.merge(_State.from_arrays(d))
    world = metas[0]["world_size"]
    ranks = sorted(m["rank"] for m in metas)
    if ranks != list(range(world)) or any(m["world_size"] != world for m in metas):
        raise ValueError(f"incomplete or mixed shards in {os.fspath(shard_dir)}: ranks {ranks} of world sizes "
                         f"{sorted({m['world_size'] for m in metas})}")
    for m in metas:
        if m["feature_space"] != space.name or m["fingerprint"] != space.fingerprint:
            raise ValueError(f"shard {m['rank']} was computed with feature space {m['feature_space']!r} "
                             f"({m['fingerprint']}), not {space.name!r} ({space.fingerprint})")
        if set(m["metrics"]) < set(opts["metrics"]):
            raise ValueError(f"shard {m['rank']} kept data for {m['metrics']} only, not {opts['metrics']}: "
                             "pass the same metrics= to every rank")
    return _finalize(full, space, reference, distribution, opts)


def _clean(v):
    return None if v is None or not np.isfinite(v) else float(v)


def _finalize(st: _State, space: FeatureSpace, reference, distribution, opts) -> Dict[str, Any]:
    chosen = set(opts["metrics"])
    keys = space.keys
    res: Dict[str, Any] = {"feature_space": space.name, "feature_network": space.describe(),
                           "num_samples": st.n, "num_nonfinite": st.nonfinite, "metrics": sorted(chosen)}
    if space.levels is not None:
        res["data_range"] = list(opts["data_range"])
        res["quantize_levels"] = space.levels if opts["quantize"] else None
    if st.n == 0:
        raise ValueError("no samples to evaluate")
    feats = np.concatenate(st.features) if st.features else None
    finite = st.nonfinite == 0 or space.levels is not None
    if space.coordinates:       # exact metrics on the coordinates themselves
        ref_stats, ref_raw = None, None
        if reference is not None:
            if isinstance(reference, FeatureStatistics):
                ref_stats = reference
            else:
                from .exact import _flat
                ref_raw = _flat(reference if not isinstance(reference, (str, os.PathLike)) else
                                torch.from_numpy(np.asarray(_load_path(reference))), "reference").double()
                ref_stats = FeatureStats().update(ref_raw.numpy()).statistics()
            res["reference"] = {"n": int(ref_stats.n), "source": "given samples"}
        elif distribution is not None:
            res["reference"] = {"source": "analytic distribution (exact mean and covariance)"}
        if "fd" in chosen:
            if ref_stats is not None:
                mu, sigma = ref_stats.mu, ref_stats.sigma
            elif distribution is not None:
                mu, sigma = distribution.mean().numpy(), distribution.covariance().numpy()
            else:
                raise ValueError("raw_fd needs reference= samples/statistics or distribution=")
            s = st.stats.statistics()
            res[keys["fd"]] = _clean(frechet_distance(s.mu, s.sigma, mu, sigma)) if finite else None
        if "sw" in chosen:
            g = torch.Generator().manual_seed(int(opts["seed"]))
            if ref_raw is None:
                if distribution is None:
                    raise ValueError("sliced_wasserstein needs reference= samples or distribution=")
                ref_raw = distribution.sample(st.n, generator=g, dtype=torch.float64).reshape(st.n, -1)
                res["reference"]["sliced_wasserstein_reference"] = f"{st.n} exact samples (seed {opts['seed']})"
                # the value a perfect sampler gets: two independent exact sample sets of this size
                other = distribution.sample(st.n, generator=g, dtype=torch.float64).reshape(st.n, -1)
                res["sliced_wasserstein_floor"] = sliced_wasserstein(
                    other, ref_raw, n_projections=int(opts["n_projections"]),
                    generator=torch.Generator().manual_seed(int(opts["seed"])))
            x = torch.from_numpy(np.concatenate(st.raw))
            res["sliced_wasserstein"] = _clean(sliced_wasserstein(
                x, ref_raw, n_projections=int(opts["n_projections"]),
                generator=torch.Generator().manual_seed(int(opts["seed"])))) if finite else None
            res["sliced_wasserstein_projections"] = int(opts["n_projections"])
        if "log_prob" in chosen:
            res["mean_log_p0"] = _clean(st.logp_sum / st.n)
            g = torch.Generator().manual_seed(int(opts["seed"]) + 1)
            from .exact import reference_mean_log_prob
            res["ref_mean_log_p0"] = reference_mean_log_prob(distribution, n=max(st.n, 10_000), generator=g)
        return res

    ref = None
    if "fd" in chosen or "kid" in chosen:
        ref = _resolve_reference(reference, space, opts)
        if ref is None:
            raise ValueError(f"{keys['fd']} and {keys['kid']} need reference= statistics (.npz) or reference data")
        res["reference"] = {"n": int(ref.n), "source": (ref.meta or {}).get("source", "given statistics"),
                            "feature_network": (ref.meta or {}).get("feature_network")}
    if "fd" in chosen:
        s = st.stats.statistics()
        res[keys["fd"]] = frechet_distance(s.mu, s.sigma, ref.mu, ref.sigma)
    if "is" in chosen:
        m, sd = inception_score(np.concatenate(st.logits), splits=int(opts["splits"]))
        res[keys["is"] + "_mean"], res[keys["is"] + "_std"] = m, sd
        res[keys["is"] + "_splits"] = int(opts["splits"])
    if "kid" in chosen:
        if ref.features is None:
            raise ValueError("KID needs the reference features: the reference statistics have none "
                             "(recompute them with keep_features=True, or leave 'kid' out of metrics)")
        size = min(int(opts["kid_subset_size"]), feats.shape[0], ref.features.shape[0])
        m, sd = kernel_inception_distance(feats, ref.features, subsets=int(opts["kid_subsets"]), subset_size=size,
                                          seed=int(opts["seed"]))
        res[keys["kid"] + "_mean"], res[keys["kid"] + "_std"] = m, sd
        res[keys["kid"] + "_subset_size"], res[keys["kid"] + "_subsets"] = size, int(opts["kid_subsets"])
    return res

