"""Sample-quality evaluation: FID / Inception Score / KID with the standard FID Inception network
(plain PyTorch, local weights only), a Digits FD for 8x8 digits, and exact metrics for data whose
density is known. See ``docs/evaluation.md``.

Entry points: :func:`evaluate_samples` (samples -> JSON-ready dict of metrics, streamed and
shardable), :func:`reference_statistics` (cached ``.npz`` with ``mu`` and ``sigma``),
:func:`frechet_distance`, :func:`inception_score`, :func:`kernel_inception_distance`,
:func:`sliced_wasserstein`, :func:`mean_log_prob`, :func:`raw_frechet_distance`; per-mode metrics of
mixture samples (:func:`mode_metrics`, :func:`mode_metrics_floor`, :func:`sharp_mixture`).
"""
from .digits_features import DigitsClassifier, load_digits_classifier, load_digits_split, train_digits_classifier
from .evaluate import (FEATURE_SPACES, DigitsFeatures, FeatureSpace, InceptionFeatures, RawFeatures, evaluate_samples,
                       get_feature_space, level_range, merge_shards, reference_statistics)
from .exact import mean_log_prob, raw_frechet_distance, reference_mean_log_prob, sliced_wasserstein
from .frechet import FeatureStatistics, FeatureStats, frechet_distance, load_stats, save_stats
from .inception import (INCEPTION_WEIGHTS_ENV, INCEPTION_WEIGHTS_FILE, FIDInceptionV3,
                        InceptionWeightsNotFoundError, inception_weights_path, load_inception)
from .modes import MODE_METRICS, assign_modes, mode_metrics, mode_metrics_floor, sharp_mixture
from .metrics import inception_score, inception_score_from_probs, kernel_inception_distance, mmd2_unbiased

__all__ = [
    "evaluate_samples", "reference_statistics", "merge_shards", "get_feature_space", "level_range",
    "FEATURE_SPACES", "FeatureSpace", "InceptionFeatures", "DigitsFeatures", "RawFeatures",
    "frechet_distance", "FeatureStats", "FeatureStatistics", "save_stats", "load_stats",
    "inception_score", "inception_score_from_probs", "kernel_inception_distance", "mmd2_unbiased",
    "mode_metrics", "mode_metrics_floor", "assign_modes", "sharp_mixture", "MODE_METRICS",
    "mean_log_prob", "reference_mean_log_prob", "sliced_wasserstein", "raw_frechet_distance",
    "FIDInceptionV3", "load_inception", "inception_weights_path", "InceptionWeightsNotFoundError",
    "INCEPTION_WEIGHTS_FILE", "INCEPTION_WEIGHTS_ENV",
    "DigitsClassifier", "train_digits_classifier", "load_digits_classifier", "load_digits_split",
]
