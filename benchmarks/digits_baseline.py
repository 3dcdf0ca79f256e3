"""Classical density baseline on the 8x8 digits: a full-covariance Gaussian mixture (scikit-learn).

Same data and split as score_sde (``score_sde.data.load_digits``: train_test_split(test_size=0.2,
random_state=0)); the 17 grey levels are uniformly dequantised to [0, 1] as ``y = (x + u) / 17``
(``score_sde.data.to_float(..., centered=False)``), and test bits/dim is the discrete bound
``(-log p(y) + 64 log 17) / (64 log 2)`` (``score_sde.likelihood.Dequantization(17, (0, 1))``), averaged over
``--repeats`` dequantisation draws of the test set.

    python benchmarks/digits_baseline.py            # prints a JSON line
"""
import argparse
import json
import math
import time

import numpy as np
import torch

from score_sde.data import load_digits, to_float
from score_sde.likelihood import Dequantization


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--components", type=int, nargs="+", default=[10])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5, help="dequantisation draws of the train/test data")
    args = p.parse_args(argv)
    from sklearn.mixture import GaussianMixture

    g = torch.Generator().manual_seed(args.seed)
    train_raw, test_raw = load_digits("train"), load_digits("test")
    # several dequantisation draws of the training set help the GMM see the bins' width
    train = torch.cat([to_float(train_raw, 17, centered=False, generator=g) for _ in range(args.repeats)])
    train = train.reshape(train.shape[0], -1).double().numpy()
    deq = Dequantization(17, (0.0, 1.0))  # (k + u) / 17: the same cells as to_float(centered=False)
    results = []
    for k in args.components:
        t0 = time.perf_counter()
        gmm = GaussianMixture(n_components=k, covariance_type="full", random_state=args.seed, max_iter=500,
                              reg_covar=1e-6).fit(train)
        bpd = []
        for _ in range(args.repeats):
            test = to_float(test_raw, 17, centered=False, generator=g).reshape(test_raw.shape[0], -1).double()
            logp = torch.from_numpy(gmm.score_samples(test.numpy()))
            bpd.append(-(deq.discrete_logp(logp, 64)).mean().item() / (64 * math.log(2)))
        results.append({"model": f"GaussianMixture(n_components={k}, covariance_type='full')",
                        "test_bits_per_dim": float(np.mean(bpd)), "std_over_dequantisation": float(np.std(bpd)),
                        "fit_seconds": round(time.perf_counter() - t0, 2)})
        print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main()
