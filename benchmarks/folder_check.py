"""Folder check (issue 13): 8x8 grey patches of real photographs vs a Gaussian mixture.

Cuts scikit-learn's two bundled photographs (``load_sample_images``: china.jpg, flower.jpg; or with
``--source skimage`` four of scikit-image's: astronaut, camera, coffee, chelsea) into
non-overlapping 8x8 grey patches, writes them as PNGs to DIR/train and DIR/test (a seeded 80/20
split), fits a 10-component full-covariance Gaussian mixture (sklearn) to the uniformly
dequantised train patches and reports its held-out bits/dim with the same dequantisation bound as
``score_sde.likelihood`` (``-(log p(y) + D log(2/256)) / (D ln 2)`` for y in [-1, 1]). With
``--train`` it then trains ``--config`` (default configs/vp/folder.py) on the folder and reports
its test bits/dim through the probability-flow ODE (the config reads the patches' size and channels).

    OMP_NUM_THREADS=2 python benchmarks/folder_check.py --dir runs/patches --train --workdir runs/folder

``--breakdown N`` (with or without ``--train``: the run in ``--workdir``) scores the first N test
patches one by one, the model with the exact divergence and the mixture on the same patches, and
prints both by the patches' contrast (pixel std in grey levels): where the model wins or loses, and
the worst patches with their ODE end point's norm (a runaway trajectory shows as a huge norm).

``--denoise N`` compares the run's denoiser with the mixture's exact posterior mean
(``score_sde.analytic.GaussianMixture.denoise``) on N dequantised test patches at a ladder of noise
levels ``s = sigma / alpha``: the mean squared error per pixel in units of ``s^2`` (1: no better
than returning the noisy input), overall and for flat (pixel std < 2 levels) and textured patches.
Where the model's error exceeds the mixture's is where its bits/dim are lost.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np


#: scikit-image's bundled photographs used by ``--source skimage`` (a second, independent check folder)
SKIMAGE_PHOTOS = ("astronaut", "camera", "coffee", "chelsea")


def source_images(source: str = "sklearn") -> list:
    """The photographs (uint8 arrays, grey or RGB) of ``source``: ``"sklearn"`` (scikit-learn's
    china.jpg and flower.jpg) or ``"skimage"`` (scikit-image's astronaut, camera, coffee, chelsea)."""
    if source == "sklearn":
        from sklearn.datasets import load_sample_images

        return list(load_sample_images().images)
    if source == "skimage":
        import skimage.data

        return [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]
    raise ValueError(f"unknown source {source!r}: 'sklearn' or 'skimage'")


def make_patch_folder(root: Path, size: int = 8, seed: int = 0, test_share: float = 0.2,
                      source: str = "sklearn") -> dict:
    from PIL import Image

    patches = []
    for img in source_images(source):
        grey = np.asarray(Image.fromarray(img).convert("L")) if img.ndim == 3 else img
        h, w = (grey.shape[0] // size) * size, (grey.shape[1] // size) * size
        p = grey[:h, :w].reshape(h // size, size, w // size, size).transpose(0, 2, 1, 3).reshape(-1, size, size)
        patches.append(p)
    patches = np.concatenate(patches)
    perm = np.random.default_rng(seed).permutation(len(patches))
    n_test = int(round(test_share * len(patches)))
    split = {"test": patches[perm[:n_test]], "train": patches[perm[n_test:]]}
    for name, arr in split.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(arr):
            Image.fromarray(a).save(d / f"{i:05d}.png")
    return split


def fit_mixture(train: np.ndarray, k: int = 10, seed: int = 0):
    """``(mixture, dequantise)``: a k-component full-covariance sklearn mixture fitted to the
    dequantised train patches (uint8 codes; values in [-1, 1]), and the dequantiser that drew their
    noise, whose next draws serve the test patches (so the baseline's figures do not depend on who asks)."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    D = train[0].size

    def deq(x):
        return -1.0 + 2.0 * (x.reshape(len(x), -1).astype(np.float64) + rng.random((len(x), D))) / 256.0

    return GaussianMixture(k, covariance_type="full", random_state=seed, max_iter=500).fit(deq(train)), deq


def gmm_bits_per_dim(train: np.ndarray, test: np.ndarray, k: int = 10, seed: int = 0,
                     per_patch: bool = False):
    """Held-out bits/dim of a k-component full-covariance mixture fit to the dequantised train
    patches (uint8 codes); the mean, or with ``per_patch`` the array of every test patch's."""
    gm, deq = fit_mixture(train, k, seed)
    D = train[0].size
    logp = gm.score_samples(deq(test)) + D * math.log(2.0 / 256.0)
    bpd = -logp / (D * math.log(2.0))
    return bpd if per_patch else float(bpd.mean())


#: patch contrast bins (pixel std in grey levels) of ``--breakdown``
CONTRAST_BINS = ((0, 2), (2, 5), (5, 15), (15, 40), (40, 256))


def breakdown(workdir, train: np.ndarray, n: int) -> dict:
    """Per-patch test bits/dim of the run in ``workdir`` (exact divergence, the first ``n`` test
    patches) and of the mixture on the same patches, by contrast bin; prints a table."""
    import torch

    from score_sde import experiment as ex
    from score_sde.likelihood import log_likelihood

    run = ex.load_trained(workdir, device=torch.device("cpu"))
    e = run.cfg.eval
    x, deq, _ = run.data.likelihood_data("test", n, 0, e.num_points)
    res = log_likelihood(run.sde, run.model, x, rtol=e.rtol, atol=e.atol, divergence="exact",
                         generator=torch.Generator().manual_seed(0), dequantization=deq)
    model = res.bpd.double().numpy()
    codes = x.reshape(len(x), -1).numpy()
    gmm = gmm_bits_per_dim(train, codes.round().astype(np.uint8), per_patch=True)
    std = codes.std(1)
    rows = []
    for lo, hi in CONTRAST_BINS:
        m = (std >= lo) & (std < hi)
        if m.any():
            rows.append({"std_levels": [lo, hi], "n": int(m.sum()), "model": float(model[m].mean()),
                         "gmm": float(gmm[m].mean()), "model_minus_gmm": float((model[m] - gmm[m]).mean())})
    znorm = res.z.reshape(len(x), -1).norm(dim=1).numpy()
    worst = np.argsort(model)[-3:][::-1]
    out = {"n": int(n), "model": float(model.mean()), "model_median": float(np.median(model)), "gmm": float(gmm.mean()),
           "by_contrast": rows, "worst": [{"index": int(i), "bits_per_dim": float(model[i]), "z_norm": float(znorm[i]),
                                           "std_levels": float(std[i])} for i in worst]}
    print(f"first {n} test patches: model {out['model']:.3f} (median {out['model_median']:.3f}), mixture {out['gmm']:.3f}")
    for r in rows:
        print(f"  std {r['std_levels'][0]:>3}-{r['std_levels'][1]:<3} levels  n {r['n']:4d}  model {r['model']:.3f}  "
              f"mixture {r['gmm']:.3f}  difference {r['model_minus_gmm']:+.3f}")
    for w in out["worst"]:
        print(f"  worst: patch {w['index']} {w['bits_per_dim']:.2f} bits/dim, |z| {w['z_norm']:.1f} "
              f"(sqrt(D) = {math.sqrt(codes.shape[1]):.1f})")
    return out


#: noise levels s = sigma / alpha of ``--denoise``
DENOISE_LEVELS = (2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0, 2.0)


def denoise_table(denoise, sde, codes, dequantization, mixture, levels=DENOISE_LEVELS, seed: int = 0) -> list:
    """Rows of ``--denoise``: for each noise level s in ``levels``, the first time t of a fine log grid
    where ``sigma(t) / alpha(t)`` reaches s (the row reports that t's exact ratio as s), test patches
    ``x0`` (integer ``codes`` ``(N, ...)``, dequantised with ``seed``) noised to
    ``x_t = alpha (x0 + s z)``, and the mean squared error per pixel in units of s^2 of
    ``denoise(x_t, t)`` (a ``(N, ...)`` float32 batch and ``(N,)`` times -> ``(N, ...)``) and of the
    mixture's exact posterior mean (:class:`score_sde.analytic.GaussianMixture`), overall and for
    flat (pixel std < 2 levels) and textured patches."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = len(codes)
    x0 = dequantization.dequantize(codes, generator=g).reshape(n, -1).double()
    flat = codes.reshape(n, -1).double().std(1, correction=0) < 2
    grid = torch.logspace(-7, math.log10(float(sde.T)), 20001, dtype=torch.float64)
    ratio = (sde.sigma(grid) / sde.alpha(grid)).double()
    rows = []
    for level in levels:
        i = int(torch.searchsorted(ratio, torch.tensor(level, dtype=torch.float64)).clamp(max=len(grid) - 1))
        t, s = float(grid[i]), float(ratio[i])             # the grid's first time at the level, and its exact s
        tt = torch.full((n,), t, dtype=torch.float64)
        xt = sde.alpha(tt)[:, None] * (x0 + s * torch.randn(x0.shape, generator=g, dtype=torch.float64))
        with torch.no_grad():
            dm = denoise(xt.float().reshape(codes.shape), tt.float())
        dg = mixture.denoise(xt, tt, sde)
        em = ((dm.reshape(n, -1).double() - x0) ** 2).mean(1) / s ** 2
        eg = ((dg.reshape(n, -1) - x0) ** 2).mean(1) / s ** 2
        rows.append({"s": s, "t": t, "model": float(em.mean()), "mixture": float(eg.mean()),
                     "flat_model": float(em[flat].mean()), "flat_mixture": float(eg[flat].mean()),
                     "textured_model": float(em[~flat].mean()), "textured_mixture": float(eg[~flat].mean())})
    return rows


def denoise_check(workdir, train: np.ndarray, n: int, seed: int = 0) -> dict:
    """``--denoise``: the run in ``workdir`` against the 10-component mixture fitted to the
    dequantised ``train`` patches, on the first ``n`` test patches (:func:`denoise_table`); prints a
    table and returns its rows."""
    import torch

    from score_sde import experiment as ex
    from score_sde.analytic import GaussianMixture

    run = ex.load_trained(workdir, device=torch.device("cpu"))
    codes, deq, _ = run.data.likelihood_data("test", n, 0, run.cfg.eval.num_points)
    sk, _ = fit_mixture(train, 10, seed)
    mixture = GaussianMixture(sk.means_, sk.covariances_, sk.weights_)
    rows = denoise_table(run.model.denoise, run.sde, codes, deq, mixture, seed=seed)
    flat = int((codes.reshape(len(codes), -1).double().std(1, correction=0) < 2).sum())
    print(f"denoising error, first {len(codes)} test patches ({flat} flat), MSE per pixel / s^2 "
          "(1: no better than the noisy input)")
    print("   noise s   model  mixture |  flat: model  mixture |  textured: model  mixture")
    for r in rows:
        print(f"  {r['s']:8.4f}  {r['model']:.4f}   {r['mixture']:.4f} |        {r['flat_model']:.4f}   "
              f"{r['flat_mixture']:.4f} |            {r['textured_model']:.4f}   {r['textured_mixture']:.4f}")
    return {"n": int(len(codes)), "n_flat": flat, "rows": rows}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", default="runs/patches")
    p.add_argument("--train", action="store_true")
    p.add_argument("--config", default="vp/folder")
    p.add_argument("--workdir", default="runs/folder")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--lik-n", type=int, default=0, help="test patches for the model's bits/dim (0: all)")
    p.add_argument("--source", default="sklearn", choices=["sklearn", "skimage"],
                   help="photographs to cut (skimage needs `pip install scikit-image`)")
    p.add_argument("--breakdown", type=int, default=0,
                   help="score the first N test patches one by one (model: exact divergence) against the mixture, "
                        "by patch contrast")
    p.add_argument("--denoise", type=int, default=0,
                   help="compare the run's denoiser with the mixture's exact posterior mean on N test patches, "
                        "by noise level")
    a = p.parse_args()
    root = Path(a.dir)
    split = make_patch_folder(root, source=a.source)
    out = {"source": a.source, "n_train": len(split["train"]), "n_test": len(split["test"]),
           "gmm10_full_bits_per_dim": gmm_bits_per_dim(split["train"], split["test"])}
    print(json.dumps(out), flush=True)
    if a.train:
        import torch
        from score_sde import experiment as ex
        from score_sde.config import load_config

        cfg = load_config(a.config, [f"data.root={root}", *a.set])
        t0 = time.perf_counter()
        res = ex.run_train(cfg, a.workdir, device=torch.device("cpu"), progress=False)
        out["train_seconds"], out["steps"] = time.perf_counter() - t0, res.step
        lik = ex.run_likelihood(cfg, a.workdir, split="test", n=a.lik_n or None, seed=0,
                                device=torch.device("cpu"))
        out["lik_n"] = lik["n"]
        out["bits_per_dim"], out["bits_per_dim_stderr"] = lik["bits_per_dim"], lik["bits_per_dim_stderr"]
        out["margin_vs_gmm"] = out["gmm10_full_bits_per_dim"] - out["bits_per_dim"]
        print(json.dumps(out), flush=True)
    if a.breakdown:
        out["breakdown"] = breakdown(a.workdir, split["train"], a.breakdown)
    if a.denoise:
        out["denoise"] = denoise_check(a.workdir, split["train"], a.denoise)
    if a.train or a.breakdown or a.denoise:
        path = Path(a.workdir, "folder_check.json")
        if not a.train and path.is_file():                  # keep an earlier --train's figures
            out = {**json.loads(path.read_text()), **out}
        path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
