"""The folder config reads image size and channels from the data (grey or RGB, 8x8 to 64x64), stores
them in the run's config, and trains and samples on a generated folder with one command."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from score_sde import cli
from score_sde import config as B
from score_sde.data import image_folder_shape


def write_folder(root, sizes, mode, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    for split, ss in (("train", sizes), ("test", sizes[:n_test])):
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(ss):
            arr = rng.integers(0, 256, (h, w) if mode == "L" else (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr, mode=mode).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("sizes, mode, expected", [
    ([(8, 8)] * 4, "L", (1, 8)),
    ([(20, 16), (16, 24), (30, 30)], "RGB", (3, 16)),       # the smallest short side
    ([(100, 90)] * 3, "L", (1, 64)),                        # capped at 64: resized down when loaded
])
def test_image_folder_shape(tmp_path, sizes, mode, expected):
    root = write_folder(tmp_path, sizes, mode)
    assert image_folder_shape(root) == expected
    cfg = B.load_config("vp/folder", [f"data.root={root}"])
    ds = B.build_data(cfg)
    assert (cfg.data.num_channels, cfg.data.image_size) == expected
    assert ds.event_shape == (expected[0], expected[1], expected[1]) == tuple(ds.raw("train").shape[1:])


def test_image_folder_shape_refuses_tiny_images(tmp_path):
    with pytest.raises(ValueError, match="at least 8x8"):
        image_folder_shape(write_folder(tmp_path, [(6, 6)] * 3, "L"))


def test_folder_config_trains_with_one_command(tmp_path):
    root = write_folder(tmp_path / "imgs", [(12, 12)] * 70, "RGB")
    wd = tmp_path / "run"
    assert cli.main(["train", "--config", "vp/folder", "--workdir", str(wd), "--no-progress",
                     f"--config.data.root={root}", "--config.training.n_iters=3", "--config.training.batch_size=16",
                     "--config.model.hidden=32", "--config.training.snapshot_sampling=false"]) == 0
    saved = json.loads((wd / "config.json").read_text())
    assert (saved["data"]["num_channels"], saved["data"]["image_size"]) == (3, 12)
    assert saved["model"]["sigma_data"] <= 0                  # measured again from the same data when built
    assert cli.main(["sample", "--workdir", str(wd), "--method", "dpmpp_2m", "--steps", "3", "--n", "4"]) == 0
    assert np.load(wd / "samples" / "dpmpp_2m_3steps_seed0.npz")["samples"].shape == (4, 3, 12, 12)


def _benchmark(name):
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_folder_check_patches_and_mixture_baseline(tmp_path):
    """benchmarks/folder_check.py cuts the photos into non-overlapping grey patches, splits them
    80/20, writes them as a folder the folder config reads, and scores a Gaussian mixture on them
    with the bits/dim convention of score_sde.likelihood (a known answer: uniform data)."""
    fc = _benchmark("folder_check")
    split = fc.make_patch_folder(tmp_path, size=32, source="sklearn")
    n = sum(len(v) for v in split.values())
    assert n == 2 * (427 // 32) * (640 // 32) and len(split["test"]) == round(0.2 * n)
    assert split["train"].shape[1:] == (32, 32) and split["train"].dtype == np.uint8
    assert image_folder_shape(tmp_path) == (1, 32)
    with pytest.raises(ValueError, match="unknown source"):
        fc.source_images("flickr")
    # 8-bit values uniform over all 256 levels: the dequantised data is uniform on [-1, 1]^D, whose
    # density 2^-D gives exactly 8 bits/dim; one Gaussian fitted to it costs a bit more
    rng = np.random.default_rng(0)
    u = rng.integers(0, 256, (4000, 2, 2), dtype=np.uint8)
    b = fc.gmm_bits_per_dim(u[:3000], u[3000:], k=1)
    assert 8.0 < b < 8.0 + 0.5 * math.log2(math.pi * math.e / 6) + 0.05
    per = fc.gmm_bits_per_dim(u[:3000], u[3000:], k=1, per_patch=True)
    assert per.shape == (1000,) and abs(float(per.mean()) - b) < 1e-9


def test_folder_config_model_is_the_measured_one():
    """configs/vp/folder.py: the MLP with the per-pixel head (input clamped) and contrast inputs, the
    round-4 recipe of docs/training.md."""
    cfg = B.load_config("vp/folder")
    m = cfg.model
    assert (m.name, m.output, m.pixel_head, m.pixel_head_clip, m.input_contrast) == ("mlp", "edm", 32, 3.0, True)
    assert (cfg.training.weighting, cfg.training.time_sampling, cfg.training.n_iters) == ("likelihood", "importance", 12000)


def test_folder_check_denoise_table_known_answers():
    """``--denoise``'s table: the mixture's own posterior mean scores exactly what the mixture column
    says, and returning the noisy input scores 1 (its error is the noise, s^2 per pixel) at every
    level; flat and textured rows split the patches by their pixel std."""
    import torch

    from score_sde.analytic import GaussianMixture
    from score_sde.quantization import Dequantization
    from score_sde.sde import VPSDE

    fc = _benchmark("folder_check")
    sde = VPSDE()
    g = torch.Generator().manual_seed(0)
    flat = torch.full((500, 1, 2, 2), 128, dtype=torch.long) + torch.randint(0, 2, (500, 1, 2, 2), generator=g)
    textured = torch.randint(0, 256, (500, 1, 2, 2), generator=g)
    codes = torch.cat([flat, textured])
    deq = Dequantization(256, (-1.0, 1.0))
    x = deq.dequantize(codes, generator=g).reshape(1000, -1).double()
    mix = GaussianMixture(torch.stack([x[:500].mean(0), x[500:].mean(0)]),
                          torch.stack([torch.cov(x[:500].T), torch.cov(x[500:].T)]), [0.5, 0.5])
    levels = (0.003, 0.05, 1.0)

    def exact(xt, t):
        return mix.denoise(xt.double(), t.double(), sde).float()

    def noisy_input(xt, t):
        return xt / sde.alpha(t)[:, None, None, None]

    for row in fc.denoise_table(exact, sde, codes, deq, mix, levels=levels):
        assert abs(row["model"] - row["mixture"]) < 1e-3 * row["mixture"] + 1e-6
        assert row["mixture"] < 1.05
    rows = fc.denoise_table(noisy_input, sde, codes, deq, mix, levels=levels)
    assert [round(r["s"], 2) for r in rows] == [0.0, 0.05, 1.0] and rows[0]["s"] == pytest.approx(0.003, rel=0.01)
    for r in rows:
        assert abs(r["model"] - 1.0) < 0.1 and abs(r["flat_model"] - 1.0) < 0.15 and abs(r["textured_model"] - 1.0) < 0.15
    # the flat half (codes within one level) is denoised far better by its component than the textured half
    assert rows[1]["flat_mixture"] < 0.5 * rows[1]["textured_mixture"]
