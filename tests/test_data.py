"""Data: toy generators (exact checkerboard density), digits split, dequantisation convention,
CIFAR-10 and image-folder loaders on fake files, missing-file errors."""
import math
import pickle

import numpy as np
import pytest
import torch

from score_sde import data as D


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------ toy
@pytest.mark.parametrize("name", sorted(D.TOY_DATASETS))
def test_toy_shapes_reproducible(name):
    a = D.toy_sample(name, 2000, generator=gen(1))
    b = D.toy_sample(name, 2000, generator=gen(1))
    c = D.toy_sample(name, 2000, generator=gen(2))
    assert a.shape == (2000, 2) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() < 3.5                       # all toy sets live in about [-3, 3]^2
    assert a.std(0).min() > 0.3                      # not collapsed


def test_checkerboard_is_uniform_on_the_eight_squares():
    x = D.toy_sample("checkerboard", 80_000, generator=gen(0))
    assert torch.isfinite(D.checkerboard_log_prob(x)).all()          # every point on a dark square
    cells = (torch.floor(x[:, 0]) + 2) * 4 + (torch.floor(x[:, 1]) + 2)
    counts = torch.bincount(cells.long(), minlength=16).double()
    dark = counts[counts > 0]
    assert dark.numel() == 8
    # each square has probability 1/8: within 5 standard deviations
    sd = math.sqrt(80_000 * (1 / 8) * (7 / 8))
    assert (dark - 10_000).abs().max() < 5 * sd
    # uniform inside a square: fractional parts have mean 1/2 and variance 1/12
    frac = x - torch.floor(x)
    assert torch.allclose(frac.mean(0), torch.full((2,), 0.5), atol=0.01)
    assert torch.allclose(frac.var(0), torch.full((2,), 1 / 12), atol=0.005)


def test_checkerboard_log_prob_normalised():
    # Riemann sum of the density on a fine grid over [-3, 3]^2 is 1; the value is -log 8 = -entropy
    g = torch.linspace(-3 + 1 / 400, 3 - 1 / 400, 1200)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    lp = D.checkerboard_log_prob(torch.stack([xx.flatten(), yy.flatten()], 1).double())
    assert lp[torch.isfinite(lp)].unique().tolist() == [-math.log(8)]
    assert abs(float(lp.exp().sum() * (6 / 1200) ** 2) - 1.0) < 1e-6
    assert D.CHECKERBOARD_ENTROPY == pytest.approx(2.0794415, abs=1e-6)


def test_toy_bad_input():
    with pytest.raises(ValueError, match="unknown toy data set"):
        D.toy_sample("spiral", 10)
    with pytest.raises(ValueError, match="n must be"):
        D.toy_sample("moons", -1)


# ------------------------------------------------------------------------------------------ digits
def test_digits_split_fixed_and_documented():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    tr, te = D.load_digits("train"), D.load_digits("test")
    assert tr.shape == (1437, 1, 8, 8) and te.shape == (360, 1, 8, 8)
    assert tr.dtype == torch.uint8 and int(tr.max()) == 16 and int(tr.min()) == 0
    ref_tr, ref_te = train_test_split(load_digits().images, test_size=0.2, random_state=0)
    assert np.array_equal(tr[:, 0].numpy(), ref_tr) and np.array_equal(te[:, 0].numpy(), ref_te)
    assert torch.equal(D.load_digits("train"), tr)                     # reproducible
    with pytest.raises(ValueError, match="split"):
        D.load_digits("valid")


@pytest.mark.parametrize("centered", [True, False])
def test_to_float_dequantisation_convention(centered):
    x = torch.arange(17, dtype=torch.uint8).repeat(200)
    y = D.to_float(x, 17, dequantize=True, centered=centered, generator=gen(0))
    lo, hi = (-1.0, 1.0) if centered else (0.0, 1.0)
    assert float(y.min()) >= lo and float(y.max()) <= hi
    assert torch.equal(D.to_levels(y, 17, centered=centered), x)       # every value stays in its own bin
    # the noise is uniform over the bin: mean offset from the bin's left edge is half a bin
    w = (hi - lo) / 17
    assert float(((y - lo) / w - x.float()).mean()) == pytest.approx(0.5, abs=0.03)
    c = D.to_float(x, 17, dequantize=False, centered=centered)
    assert torch.allclose((c - lo) / w - x.float(), torch.full_like(c, 0.5), atol=1e-5)  # bin centres
    # it is score_sde.likelihood's Dequantization(17, range)
    ds = D.make_dataset("digits", centered=centered)
    assert ds.dequantization.cell_width == pytest.approx(w)
    z = ds.dequantization.dequantize(x, generator=gen(1))
    assert torch.equal(D.to_levels(z, 17, centered=centered), x)


def test_random_flip():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4).repeat(50, 1, 1, 1)
    y = D.random_flip(x, generator=gen(0))
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert bool((flipped | kept).all()) and 20 < int(flipped.sum()) < 80
    assert torch.equal(D.random_flip(x, p=1.0), x.flip(-1))


def test_digits_dataset_batches_cover_an_epoch():
    ds = D.make_dataset("digits", dequantize=False)
    it = ds.batches(479, generator=gen(0))              # 1437 = 3 * 479: one epoch in 3 batches
    epoch = torch.cat([next(it) for _ in range(3)])
    assert epoch.shape == (1437, 1, 8, 8)
    levels = D.to_levels(epoch, 17)
    ref = D.load_digits("train").flatten(1)
    got = levels.flatten(1)
    # the same multiset of images: compare sorted rows
    key = lambda a: sorted(map(tuple, a.tolist()))
    assert key(got) == key(ref)
    with pytest.raises(ValueError, match="batch_size"):
        next(ds.batches(5000))


# ------------------------------------------------------------------------------------------ CIFAR-10
def _fake_cifar(root, n=4, splits=("train", "test")):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    names = ([f"data_batch_{i}" for i in range(1, 6)] if "train" in splits else []) + \
            (["test_batch"] if "test" in splits else [])
    for name in names:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        arrays[name] = data
        with open(d / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": list(range(n)), b"batch_label": name.encode()}, fh)
    return arrays


def test_cifar10_loader_on_fake_files(tmp_path):
    arrays = _fake_cifar(tmp_path)
    train = D.load_cifar10(tmp_path, "train")
    test = D.load_cifar10(tmp_path / "cifar-10-batches-py", "test")   # the directory itself works too
    assert train.shape == (20, 3, 32, 32) and train.dtype == torch.uint8 and test.shape == (4, 3, 32, 32)
    row = arrays["data_batch_2"][1]
    img = train[4 + 1]
    # channel-major rows of 1024 values, each a row-major 32x32 plane
    assert np.array_equal(img[0].numpy().ravel(), row[:1024])
    assert np.array_equal(img[2, 5].numpy(), row[2048 + 5 * 32: 2048 + 6 * 32])
    ds = D.make_dataset("cifar10", root=str(tmp_path), flip=True)
    x = ds.preprocess(ds.raw("test"), generator=gen(0))
    assert x.shape == (4, 3, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1


def test_cifar10_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        D.load_cifar10(tmp_path, "train")
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in msg and "cs.toronto.edu" in msg
    assert "--config.data.root" in msg
    _fake_cifar(tmp_path, splits=("test",))
    with pytest.raises(FileNotFoundError, match="train files not found"):
        D.load_cifar10(tmp_path, "train")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="test_batch is not a CIFAR-10 python batch"):
        D.load_cifar10(tmp_path, "test")
    with pytest.raises(ValueError, match="config.data.root"):
        D.make_dataset("cifar10", root=None)


def test_cifar10_crafted_pickle_runs_no_code(tmp_path):
    """A data_batch_1 whose pickle calls os.system via __reduce__ is refused before anything runs."""
    import os
    _fake_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": [0]}, fh)
    with pytest.raises(ValueError) as e:
        D.load_cifar10(tmp_path, "train")
    assert not marker.exists()
    msg = str(e.value)
    assert "data_batch_1" in msg and "system" in msg and "refused" in msg


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_genuine_pickles_of_every_protocol_load(tmp_path, protocol):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    data = np.random.default_rng(1).integers(0, 256, size=(3, 3072), dtype=np.uint8)
    with open(d / "test_batch", "wb") as fh:
        pickle.dump({b"data": data, b"labels": [1, 2, 3], b"batch_label": b"testing batch 1 of 1",
                     b"filenames": [b"a.png", b"b.png", b"c.png"], b"mean": np.float64(0.5)}, fh, protocol=protocol)
    x = D.load_cifar10(tmp_path, "test")
    assert np.array_equal(x.numpy().reshape(3, 3072), data)


def test_safe_pickle_numpy1_module_path_and_object_dtype():
    from score_sde.safe_pickle import UnsafePickleError, loads_array_pickle
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    blob = pickle.dumps(a, protocol=2)
    # a numpy-1 file names numpy.core.multiarray, a numpy-2 file numpy._core.multiarray: both load
    for mod in (b"numpy.core.multiarray", b"numpy._core.multiarray"):
        other = blob.replace(b"numpy._core.multiarray", mod).replace(b"numpy.core.multiarray", mod)
        assert np.array_equal(loads_array_pickle(other), a)
    with pytest.raises(UnsafePickleError, match="object"):
        loads_array_pickle(pickle.dumps(np.array([1, "x"], dtype=object), protocol=2))
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        loads_array_pickle(b"cbuiltins\neval\n(S'1'\ntR.")


def test_cifar10_binary_version(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    rng = np.random.default_rng(2)
    rows = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rec = rng.integers(0, 256, size=(2, 3073), dtype=np.uint8)
        rows[name] = rec
        rec.tofile(d / f"{name}.bin")
    train = D.load_cifar10(tmp_path, "train")
    test = D.load_cifar10(d, "test")
    assert train.shape == (10, 3, 32, 32) and test.shape == (2, 3, 32, 32) and train.dtype == torch.uint8
    assert np.array_equal(train[3].numpy().ravel(), rows["data_batch_2"][1, 1:])   # label byte skipped
    (d / "test_batch.bin").write_bytes(b"123")
    with pytest.raises(ValueError, match="test_batch.bin is not a CIFAR-10 binary batch"):
        D.load_cifar10(tmp_path, "test")


# ------------------------------------------------------------------------------------------ folders
def test_image_folder(tmp_path):
    from PIL import Image

    (tmp_path / "train" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)).save(tmp_path / "train" / f"{i}.png")
    Image.fromarray(np.full((16, 16), 200, dtype=np.uint8)).save(tmp_path / "train" / "sub" / "grey.jpg")
    (tmp_path / "train" / "notes.txt").write_text("not an image")
    x = D.load_image_folder(tmp_path / "train", image_size=8, channels=3)
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.uint8
    grey = D.load_image_folder(tmp_path / "train" / "sub", image_size=4, channels=1)
    assert grey.shape == (1, 1, 4, 4) and int(grey.min()) >= 195 and int(grey.max()) <= 205
    ds = D.make_dataset("folder", root=str(tmp_path), image_size=8, channels=3)
    assert ds.raw("train").shape == (4, 3, 8, 8)
    with pytest.raises(FileNotFoundError, match="looked for the directory"):
        D.ImageFolder(tmp_path / "nope", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        D.ImageFolder(tmp_path / "empty", 8)


def test_one_quantisation_object_for_data_likelihood_and_evaluation():
    """Data loading, the likelihood and the evaluation share score_sde.quantization.Dequantization."""
    from score_sde import likelihood, quantization
    from score_sde.evaluation import level_range

    assert likelihood.Dequantization is quantization.Dequantization is __import__("score_sde").Dequantization
    for centered in (True, False):
        ds = D.make_dataset("digits", centered=centered)
        q = ds.dequantization
        assert isinstance(q, quantization.Dequantization) and q.levels == 17
        assert level_range(17, centered) == pytest.approx(q.centre_range)
        x = ds.raw("test")[:50]
        # the data's bin centres map back to their levels, and lie on the likelihood's code grid
        centres = ds.preprocess(x, train=False, dequantize=False)
        assert torch.equal(q.to_levels(centres), x)
        lo, hi = q.data_range
        assert torch.equal(q.codes(lo + (hi - lo) * x.double() / 16), x.long())


def test_point_and_image_datasets_answer_for_themselves():
    cb, moons, digits = D.make_dataset("checkerboard"), D.make_dataset("moons"), D.make_dataset("digits")
    assert isinstance(cb, D.PointDataset) and isinstance(digits, D.ImageDataset)
    x = cb.sample(500, generator=gen(0))
    frac = cb.sample_metrics(x)["fraction_on_board"]
    assert frac == pytest.approx(1.0)                        # exact samples all lie on the board
    assert cb.sample_metrics(x * 0 + 10.0)["fraction_on_board"] == 0.0
    assert moons.sample_metrics(x) == {} and digits.sample_metrics(torch.zeros(2, 1, 8, 8)) == {}
    assert cb.likelihood_metrics(2.5)["gap_nats"] == pytest.approx(2.5 - math.log(8))
    assert digits.evaluation_kwargs(10, 0, "wd")["features"] == "digits"
    assert cb.evaluation_kwargs(10, 0, "wd")["features"] == "raw"
    kind, img, scale = digits.visual(torch.zeros(3, 1, 8, 8))
    assert kind == "image" and img.dtype == torch.uint8 and scale == 8
