"""Tests for score_sde.evaluation: known answers for FD / IS / KID / sliced Wasserstein / log p,
the FID Inception architecture without weights, the weights error, caching and sharding."""
import json
import math

import numpy as np
import pytest
import torch

from score_sde.analytic import Gaussian, GaussianMixture
from score_sde.evaluation import (FeatureStatistics, FeatureStats, FIDInceptionV3, InceptionWeightsNotFoundError,
                                  evaluate_samples, frechet_distance, inception_score, inception_score_from_probs,
                                  kernel_inception_distance, level_range, load_digits_split, load_inception,
                                  load_stats, mean_log_prob, merge_shards, mmd2_unbiased, raw_frechet_distance,
                                  reference_statistics, save_stats, sliced_wasserstein, train_digits_classifier)
from score_sde.evaluation.inception import (INCEPTION_NUM_PARAMETERS, INCEPTION_WEIGHTS_ENV, INCEPTION_WEIGHTS_FILE,
                                            resize_bilinear_tf)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def classifier():
    return train_digits_classifier()


@pytest.fixture(scope="module")
def other_classifier():
    return train_digits_classifier(epochs=1)


@pytest.fixture(scope="module")
def inception_net():
    return FIDInceptionV3()


def _exact_moments(n, mu, cov, seed):
    """n points whose sample mean is exactly mu and unbiased sample covariance exactly cov."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(mu)))
    z -= z.mean(0)
    l_emp = np.linalg.cholesky(np.cov(z, rowvar=False))
    z = z @ np.linalg.inv(l_emp).T                 # sample covariance exactly I
    return z @ np.linalg.cholesky(cov).T + mu


def _random_rotation(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q


# ----------------------------------------------------------------------------------- Frechet
@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_fd_of_feature_sets_equals_closed_form_commuting(method):
    d = 16
    q = _random_rotation(d, 0)
    a, b = np.linspace(0.5, 3.0, d), np.linspace(2.0, 0.2, d)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = np.zeros(d), np.full(d, 0.3)
    f1, f2 = _exact_moments(400, mu1, s1, 1), _exact_moments(300, mu2, s2, 2)
    st1, st2 = FeatureStats().update(f1).statistics(), FeatureStats().update(f2).statistics()
    closed = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(st1.mu, st1.sigma, st2.mu, st2.sigma, method=method) == pytest.approx(closed, rel=1e-9)


def test_fd_closed_form_non_commuting_2d():
    # for PSD 2x2 M: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)); S1 S2 is similar to S1^1/2 S2 S1^1/2
    s1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 1.5]])
    r = np.linalg.cholesky(s1)
    m = r.T @ s2 @ r                                   # same eigenvalues as s1 @ s2
    tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    mu1, mu2 = np.array([1.0, -1.0]), np.array([0.0, 0.5])
    closed = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    for method in ("eigh", "sqrtm"):
        assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(closed, rel=1e-12)
    # torch tensors are accepted too
    assert frechet_distance(torch.tensor(mu1), torch.tensor(s1), mu2, s2) == pytest.approx(closed, rel=1e-12)


def test_fd_near_singular_covariances():
    # 20 samples in 64 dims: rank-deficient covariances, the case the eps*I fallback exists for
    rng = np.random.default_rng(3)
    f1, f2 = rng.standard_normal((20, 64)), rng.standard_normal((20, 64)) + 0.1
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    fe, fs = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    assert np.isfinite(fe) and np.isfinite(fs) and fe > 0
    assert fe == pytest.approx(fs, rel=1e-3)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-6 * np.trace(s1)


def test_fd_bad_input():
    with pytest.raises(ValueError, match="sigma1"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="method"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([np.nan, 0]), np.eye(2), np.zeros(2), np.eye(2))


def test_feature_stats_streaming_merge_matches_numpy():
    f = np.random.default_rng(4).standard_normal((1001, 7)) * 3 + 100.0   # large mean: cancellation test
    a = FeatureStats()
    for i in range(0, 1001, 97):
        a.update(f[i:i + 97])
    b = FeatureStats().update(f[:500]).merge(FeatureStats().update(f[500:]))
    for s in (a.statistics(), b.statistics()):
        np.testing.assert_allclose(s.mu, f.mean(0), rtol=1e-13)
        np.testing.assert_allclose(s.sigma, np.cov(f, rowvar=False), rtol=1e-9, atol=1e-12)
        assert s.n == 1001


# ----------------------------------------------------------------------------------- IS, KID
def test_inception_score_uniform_confident_and_known_value():
    n, k = 1000, 10
    m, s = inception_score(np.zeros((n, k)), splits=10)
    assert m == pytest.approx(1.0, abs=1e-12) and s == pytest.approx(0.0, abs=1e-12)
    confident = np.full((n, k), -1e4)
    confident[np.arange(n), np.arange(n) % k] = 0.0                 # each part: balanced, one-hot
    m, s = inception_score(confident, splits=10)
    assert m == pytest.approx(k, rel=1e-9) and s < 1e-9
    # two classes, p(y|x) = (a, 1-a) for half the samples, (1-a, a) for the rest:
    # IS = exp(log 2 - H(a))
    a = 0.9
    probs = np.array([[a, 1 - a], [1 - a, a]] * 500)
    h = -(a * math.log(a) + (1 - a) * math.log(1 - a))
    m, _ = inception_score_from_probs(probs, splits=5)
    assert m == pytest.approx(math.exp(math.log(2) - h), rel=1e-12)
    m2, _ = inception_score(np.log(probs), splits=5)
    assert m2 == pytest.approx(m, rel=1e-12)
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.zeros((5, 3)), splits=10)


def test_kid_unbiased_and_near_zero_for_one_distribution():
    rng = np.random.default_rng(5)
    d, m, reps = 8, 40, 300
    u, v = [], []
    for _ in range(reps):
        x, y = rng.standard_normal((m, d)), rng.standard_normal((m, d))
        u.append(mmd2_unbiased(x, y))
        kxx, kyy, kxy = [(a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y))]
        v.append(kxx.mean() + kyy.mean() - 2 * kxy.mean())           # biased V-statistic
    u, v = np.array(u), np.array(v)
    se = u.std() / math.sqrt(reps)
    assert abs(u.mean()) < 3.5 * se                                    # unbiased: mean 0
    assert v.mean() > 10 * se                                          # the biased version is not
    # the subset estimator on two samples of one distribution: near 0 relative to its spread
    f1, f2 = rng.standard_normal((600, d)), rng.standard_normal((600, d))
    km, ks = kernel_inception_distance(f1, f2, subsets=50, subset_size=200, seed=0)
    assert abs(km) < ks                         # subsets overlap: their spread bounds the error
    km_shift, _ = kernel_inception_distance(f1, f2 + 0.5, subsets=50, subset_size=200, seed=0)
    assert km_shift > 5 * ks


def test_kid_matches_population_mmd_of_gaussians():
    # zero-mean Gaussians: E k(x, y) = 1 + 3 tr(S1 S2) / d^2, so MMD^2 = 3 ||S1 - S2||_F^2 / d^2
    d = 4
    s2 = np.diag([1.0, 1.5, 2.0, 0.5])
    closed = 3 * np.sum((np.eye(d) - s2) ** 2) / d ** 2
    rng = np.random.default_rng(6)
    f1 = rng.standard_normal((3000, d))
    f2 = rng.standard_normal((3000, d)) @ np.sqrt(s2)
    assert mmd2_unbiased(f1, f2) == pytest.approx(closed, rel=0.2)     # estimator sd ~6% here
    # subsets as large as the sets are permutations: KID equals the full estimate, spread 0
    km, ks = kernel_inception_distance(f1[:300], f2[:300], subsets=3, subset_size=300, seed=1)
    assert km == pytest.approx(mmd2_unbiased(f1[:300], f2[:300]), rel=1e-9) and ks < 1e-9 * abs(km)
    with pytest.raises(ValueError, match="subset_size"):
        kernel_inception_distance(f1[:10], f2, subset_size=100)


# ----------------------------------------------------------------------------------- exact metrics
def test_sliced_wasserstein_known_answers():
    import scipy.stats
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal(37), rng.exponential(size=53) # 1-D, unequal sizes: exact W1
    sw1 = sliced_wasserstein(torch.tensor(a)[:, None], torch.tensor(b)[:, None], n_projections=3, p=1.0)
    assert sw1 == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-10)
    # a shifted cloud: W2 along theta is |theta . c|, so SW2^2 = E (theta . c)^2 = |c|^2 / d
    x = torch.randn(500, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = torch.tensor([1.0, -2.0, 0.5, 0.0, 1.0, 3.0], dtype=torch.float64)
    sw = sliced_wasserstein(x, x + c, n_projections=2000, generator=torch.Generator().manual_seed(1))
    assert sw ** 2 == pytest.approx(float(c @ c) / 6, rel=0.08)
    assert sliced_wasserstein(x, x, n_projections=10) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="coordinates"):
        sliced_wasserstein(x, x[:, :3])


def test_mean_log_prob_and_raw_fd_against_a_gaussian():
    d = 3
    cov = np.array([[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 2.0]])
    mu = np.array([1.0, 0.0, -1.0])
    g = Gaussian(torch.tensor(mu), torch.tensor(cov))
    x = g.sample(20000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    neg_entropy = -0.5 * d * math.log(2 * math.pi * math.e) - 0.5 * math.log(np.linalg.det(cov))
    assert mean_log_prob(x, g) == pytest.approx(neg_entropy, abs=4 * math.sqrt(d / 2) / math.sqrt(20000))
    exact = torch.tensor(_exact_moments(500, mu, cov, 3))
    assert raw_frechet_distance(exact, g) == pytest.approx(0.0, abs=1e-9)
    shift = np.array([0.5, 0.0, 1.0])
    assert raw_frechet_distance(exact + torch.tensor(shift), g) == pytest.approx(1.25, rel=1e-9)
    assert raw_frechet_distance(exact, (mu, cov)) == pytest.approx(0.0, abs=1e-9)


def test_evaluate_raw_with_an_analytic_mixture():
    gm = GaussianMixture.random(dim=2, n_components=4, seed=0)
    good = gm.sample(3000, generator=torch.Generator().manual_seed(1))
    bad = good * 1.3 + 0.5
    r_good = evaluate_samples(good, features="raw", distribution=gm, n_projections=64)
    r_bad = evaluate_samples(bad, features="raw", distribution=gm, n_projections=64)
    json.dumps(r_good, allow_nan=False)
    assert set(r_good["metrics"]) == {"fd", "sw", "log_prob"}
    assert r_good["mean_log_p0"] == pytest.approx(r_good["ref_mean_log_p0"], abs=0.1)
    assert r_bad["mean_log_p0"] < r_good["mean_log_p0"] - 0.5
    assert r_good["raw_fd"] < 0.05 < r_bad["raw_fd"]
    assert r_good["sliced_wasserstein"] < 2 * r_good["sliced_wasserstein_floor"] + 0.05
    assert r_bad["sliced_wasserstein"] > 3 * r_good["sliced_wasserstein"]


# ----------------------------------------------------------------------------------- Inception
def test_inception_architecture_without_weights(inception_net):
    net = inception_net
    # torchvision's inception_v3: 27,161,264 parameters with the aux head (3,326,696) and 1000
    # classes -> 23,850,960 without the head and with 1008 classes (pt_inception-2015-12-05)
    assert sum(p.numel() for p in net.parameters()) == INCEPTION_NUM_PARAMETERS == 23_850_960
    sd = net.state_dict()
    convs = [k for k in sd if k.endswith(".conv.weight")]
    assert len(convs) == 94 and len(sd) == 94 * 6 + 2               # conv + 5 bn tensors each, fc
    expected = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Conv2d_4a_3x3.bn.running_var": (192,),
                "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
                "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
                "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
                "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
                "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
                "fc.weight": (1008, 2048), "fc.bias": (1008,)}
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.startswith("AuxLogits") for k in sd)
    x32 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x299 = resize_bilinear_tf(x32, (299, 299))
    # the network input of a 32x32 image is the resized image; a 299x299 image is used as is
    assert net.preprocess(x32).shape == (1, 3, 299, 299)
    torch.testing.assert_close(net.preprocess(x32), net.preprocess(x299))
    out = net(torch.cat([x299, 1 - x299]))           # one forward: 299x299 inputs (= the resized 32x32)
    assert out["pool"].shape == (2, 2048)
    assert out["logits"].shape == out["logits_unbiased"].shape == (2, 1008)
    torch.testing.assert_close(out["logits"] - out["logits_unbiased"], net.fc.bias[None].expand(2, -1))
    assert net.preprocess(torch.rand(3, 1, 32, 32)).shape == (3, 3, 299, 299)   # grey -> 3 channels
    with pytest.raises(ValueError, match="images"):
        net(torch.rand(2, 4, 32, 32))


def test_resize_bilinear_tf_known_answers():
    # TF1 align_corners=False: output i samples input i * n_in / n_out, clamped at the last pixel
    ramp = torch.arange(4, dtype=torch.float64).reshape(1, 1, 1, 4).expand(1, 1, 2, 4)
    out = resize_bilinear_tf(ramp, (2, 10))
    expected = torch.clamp(torch.arange(10, dtype=torch.float64) * 0.4, max=3.0)
    torch.testing.assert_close(out[0, 0, 0], expected)
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(resize_bilinear_tf(x, (5, 7)), x)


def test_missing_weights_error(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(InceptionWeightsNotFoundError) as e:
        load_inception()
    msg = str(e.value)
    assert INCEPTION_WEIGHTS_FILE in msg and INCEPTION_WEIGHTS_ENV in msg and "pytorch-fid" in msg
    assert str(tmp_path / "cache" / "score_sde" / INCEPTION_WEIGHTS_FILE) in msg
    assert isinstance(e.value, FileNotFoundError)
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(InceptionWeightsNotFoundError, match="nope.pth"):
        evaluate_samples(torch.rand(4, 3, 8, 8), features="inception")
    with pytest.raises(InceptionWeightsNotFoundError, match="given"):
        load_inception(tmp_path / "other.pth")


def test_weights_file_loads_strictly(tmp_path, inception_net):
    # files saved by old PyTorch have no num_batches_tracked counters: tolerated
    sd = {k: v.clone() for k, v in inception_net.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd["fc.bias"] = torch.linspace(-1, 1, 1008)
    path = tmp_path / INCEPTION_WEIGHTS_FILE
    torch.save(sd, path)
    loaded = load_inception(path)
    torch.testing.assert_close(loaded.fc.bias, sd["fc.bias"])
    assert len(loaded.weights_sha256) == 64 and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    del sd["Mixed_7c.branch_pool.conv.weight"]
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="Mixed_7c.branch_pool.conv.weight"):
        load_inception(tmp_path / "broken.pth")


# ----------------------------------------------------------------------------------- digits
def test_digits_split_and_classifier(classifier, other_classifier):
    from score_sde.data import load_digits
    xtr, ytr = load_digits_split("train")
    xte, _ = load_digits_split("test")
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8) and ytr.shape == (1437,)
    torch.testing.assert_close((xtr * 16).round().to(torch.uint8), load_digits("train"))   # the data helper's split
    assert classifier.test_accuracy > 0.95
    assert other_classifier.fingerprint == train_digits_classifier(epochs=1).fingerprint   # deterministic
    torch.set_num_threads(2)
    try:    # also under another thread count (training pins one thread)
        assert other_classifier.fingerprint == train_digits_classifier(epochs=1).fingerprint
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert other_classifier.fingerprint != classifier.fingerprint
    out = classifier(xte[:5].reshape(5, 64))
    assert out["features"].shape == (5, 64) and out["logits"].shape == (5, 10)


def test_loading_a_cached_classifier_leaves_the_global_rng_alone(tmp_path, other_classifier):
    from score_sde.evaluation import load_digits_classifier
    path = tmp_path / "clf.pt"
    torch.save({"state_dict": other_classifier.state_dict(), "config": other_classifier.config,
                "test_accuracy": other_classifier.test_accuracy}, path)
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    clf = load_digits_classifier(path)
    torch.testing.assert_close(torch.rand(4), expected)       # sampling after a load draws as without it
    assert clf.fingerprint == other_classifier.fingerprint


def test_digits_fd_and_level_range(classifier):
    from score_sde.data import load_digits, to_float
    xtr, _ = load_digits_split("train")
    r = evaluate_samples(xtr, features="digits", digits_classifier=classifier, kid_subsets=5)
    json.dumps(r, allow_nan=False)
    assert r["reference"]["n"] == 360 and r["digits_kid_subset_size"] == 360
    assert "fid" not in r and r["feature_network"]["fingerprint"] == classifier.fingerprint
    noisy = (xtr + 0.3 * torch.randn(xtr.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    rn = evaluate_samples(noisy, features="digits", digits_classifier=classifier, metrics=["fd", "is"])
    assert rn["digits_fd"] > 3 * r["digits_fd"]
    assert rn["digits_is_mean"] < r["digits_is_mean"] <= 10
    # model-space samples (score_sde.data bin centres, centred) and raw uint8 levels give the same features
    model_space = to_float(load_digits("train"), 17, dequantize=False, centered=True)
    r_ms = evaluate_samples(model_space, features="digits", digits_classifier=classifier,
                            data_range=level_range(17), metrics=["fd"])
    r_u8 = evaluate_samples(load_digits("train"), features="digits", digits_classifier=classifier, metrics=["fd"])
    assert r_ms["digits_fd"] == pytest.approx(r["digits_fd"], rel=1e-9)
    assert r_u8["digits_fd"] == pytest.approx(r["digits_fd"], rel=1e-9)


def test_reference_stats_cache_round_trip(tmp_path, classifier, other_classifier):
    xtr, _ = load_digits_split("train")
    path = tmp_path / "ref" / "digits_train.npz"
    s1 = reference_statistics(xtr, "digits", cache=path, digits_classifier=classifier)
    with np.load(path) as z:
        assert {"mu", "sigma", "n", "features", "meta"} <= set(z.files)
    s2 = reference_statistics(object(), "digits", cache=path, digits_classifier=classifier)  # not recomputed
    np.testing.assert_array_equal(s1.mu, s2.mu)
    np.testing.assert_array_equal(s1.sigma, s2.sigma)
    assert s2.n == 1437 and s2.meta["feature_network"]["fingerprint"] == classifier.fingerprint
    # a TTUR / pytorch-fid style file (mu, sigma only) is a valid FD reference
    plain = tmp_path / "plain.npz"
    np.savez(plain, mu=s1.mu, sigma=s1.sigma)
    r = evaluate_samples(xtr, features="digits", digits_classifier=classifier, reference=str(plain),
                         metrics=["fd"])
    assert r["digits_fd"] == pytest.approx(0.0, abs=1e-9 * np.trace(s1.sigma))
    with pytest.raises(ValueError, match="features"):
        evaluate_samples(xtr, features="digits", digits_classifier=classifier, reference=str(plain),
                         metrics=["kid"])
    with pytest.raises(ValueError, match="another feature network"):
        reference_statistics(None, "digits", cache=path, digits_classifier=other_classifier)
    st = load_stats(path)
    save_stats(tmp_path / "copy.npz", st)
    np.testing.assert_array_equal(load_stats(tmp_path / "copy.npz").sigma, st.sigma)


def test_sharded_evaluation_equals_unsharded(tmp_path, classifier):
    xtr, _ = load_digits_split("train")
    samples = xtr[:1000].numpy()
    kw = dict(features="digits", digits_classifier=classifier, batch_size=128, kid_subsets=10,
              kid_subset_size=200)
    full = evaluate_samples(samples, **kw)
    np.save(tmp_path / "samples.npy", samples)
    parts = [evaluate_samples(str(tmp_path / "samples.npy"), rank=r, world_size=3, shard_dir=tmp_path / "sh", **kw)
             for r in range(3)]
    assert [p["num_samples"] for p in parts] == [333, 333, 334] and not parts[0]["complete"]
    merged = merge_shards(tmp_path / "sh", **kw)
    assert merged["num_samples"] == 1000
    for k in ("digits_fd", "digits_is_mean", "digits_is_std", "digits_kid_mean", "digits_kid_std"):
        assert merged[k] == pytest.approx(full[k], rel=1e-9, abs=1e-12), k
    with pytest.raises(ValueError, match="shard_dir"):
        evaluate_samples(samples, rank=1, world_size=2, **kw)


def test_evaluate_bad_arguments(classifier):
    x = torch.rand(10, 64)
    kw = dict(features="digits", digits_classifier=classifier)
    with pytest.raises(ValueError, match="data_range"):
        evaluate_samples(x, data_range=(1, 0), **kw)
    with pytest.raises(ValueError, match="rank"):
        evaluate_samples(x, rank=2, world_size=2, **kw)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_samples(x, metrics=["precision"], **kw)
    with pytest.raises(ValueError, match="features"):
        evaluate_samples(x, features="clip")
    with pytest.raises(ValueError, match="logits"):
        evaluate_samples(x, features="raw", metrics=["is"], reference=x)


def test_input_mapping_layouts_and_custom_feature_space():
    from score_sde.evaluation import FeatureSpace

    class MeanPixel(FeatureSpace):          # plug-in contract: features of inputs mapped to [0, 1]
        name, levels, image_layout = "meanpix", 256, True
        keys = {"fd": "meanpix_fd", "is": None, "kid": "meanpix_kid"}

        def __call__(self, x):
            self.seen = x
            return {"features": x.mean(dim=(2, 3)), "logits": None}

    space = MeanPixel()
    ref = FeatureStatistics(mu=np.zeros(3), sigma=np.eye(3), n=10)
    x = torch.tensor([-1.0, -0.2, 0.0, 0.7, 3.0, float("nan")]).reshape(2, 3, 1, 1).expand(2, 3, 2, 2)
    r = evaluate_samples(x, features=space, reference=ref, data_range=(-1, 1), metrics=["fd"])
    assert r["num_nonfinite"] == 1 and r["quantize_levels"] == 256
    expected = torch.tensor([0.0, 102.0, 128.0, 217.0, 255.0, 0.0]).reshape(2, 3) / 255   # clip, NaN->0, 8-bit
    torch.testing.assert_close(space.seen.mean(dim=(2, 3)), expected)
    nhwc = (torch.arange(2 * 4 * 4 * 3) % 256).to(torch.uint8).reshape(2, 4, 4, 3)            # uint8 NHWC
    evaluate_samples(nhwc.numpy(), features=space, reference=ref, metrics=["fd"])
    torch.testing.assert_close(space.seen, nhwc.permute(0, 3, 1, 2).float() / 255)


def test_feature_space_behaviour_comes_from_its_attributes_not_its_name():
    from score_sde.evaluation import FEATURE_SPACES, FeatureSpace, RawFeatures, get_feature_space

    assert {n: c.name for n, c in FEATURE_SPACES.items()} == {n: n for n in FEATURE_SPACES}
    gm = GaussianMixture.random(dim=2, n_components=3, seed=0)
    x = gm.sample(400, generator=torch.Generator().manual_seed(2))

    class Coords(RawFeatures):              # a renamed raw space: still the exact metrics
        name = "coords"

    a = evaluate_samples(x, features="raw", distribution=gm, n_projections=32)
    b = evaluate_samples(x, features=Coords(), distribution=gm, n_projections=32)
    assert set(b["metrics"]) == {"fd", "sw", "log_prob"} and b["feature_space"] == "coords"
    assert b["raw_fd"] == a["raw_fd"] and b["sliced_wasserstein"] == a["sliced_wasserstein"]

    class WithDefaultReference(FeatureSpace):   # a space with its own reference: FD without reference=
        name, levels = "firstpix", 17
        default_reference = "four fixed images"

        def __call__(self, x):
            return {"features": x.reshape(x.shape[0], -1)[:, :2].double(), "logits": None}

        def default_reference_data(self):
            return torch.linspace(0, 1, 4 * 64).reshape(4, 1, 8, 8)

    imgs = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    r = evaluate_samples(imgs, features=WithDefaultReference(), metrics=["fd"])
    assert r["reference"]["source"] == "four fixed images" and r["reference"]["n"] == 4 and r["fd"] > 0
    with pytest.raises(ValueError, match="data is required"):
        reference_statistics(None, FeatureSpace())
    with pytest.raises(ValueError, match="'inception', 'digits', 'raw' or a FeatureSpace"):
        get_feature_space("nope")


def test_iterable_of_batches_equals_tensor():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 3, generator=g), torch.randn(200, 3, generator=g) + 0.2
    loader = [(x[i:i + 64], torch.zeros(64)) for i in range(0, 300, 64)]     # DataLoader-style pairs
    a = evaluate_samples(loader, features="raw", reference=y, n_projections=32)
    b = evaluate_samples(x, features="raw", reference=y, n_projections=32, batch_size=50)
    for k in ("raw_fd", "sliced_wasserstein"):
        assert a[k] == pytest.approx(b[k], rel=1e-12)
    assert a["raw_fd"] == pytest.approx(raw_frechet_distance(x, y), rel=1e-12)
    assert a["sliced_wasserstein"] == pytest.approx(
        sliced_wasserstein(x, y, n_projections=32, generator=torch.Generator().manual_seed(0)), rel=1e-12)
