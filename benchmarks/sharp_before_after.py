"""Before/after check on the sharp mixture: run with PYTHONPATH set to any checkout (the per-mode
metrics are loaded from this checkout by file, so an old checkout without them can be measured).

    PYTHONPATH=/path/to/checkout python benchmarks/sharp_before_after.py
"""
import os
import torch
import score_sde
from score_sde.sampling import sample

src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "score_sde", "evaluation", "modes.py")).read().replace("from ..analytic import GaussianMixture", "from score_sde.analytic import GaussianMixture")
mod = {}
exec(compile(src, "modes", "exec"), mod)
torch.set_num_threads(1)
print(score_sde.__file__)
gm = mod["sharp_mixture"](0)
n = 4096
fl = mod["mode_metrics_floor"](gm, n, repeats=3)["mean"]
print("floor spread %.2f%%" % (100 * fl["spread"]))
for sn, cls in [("vp", score_sde.VPSDE), ("subvp", score_sde.subVPSDE), ("ve", score_sde.VESDE)]:
    sde = cls()
    sf = gm.score_fn(sde)
    for meth, per in [("dpmpp_2m", 1), ("dpmpp_3m", 1), ("heun", 2), ("unipc", 1)]:
        row = []
        for nfe in (10, 20, 50):
            out = sample(sde, sf, (n, 1, 8, 8), method=meth, steps=(nfe - 1) // per, generator=torch.Generator().manual_seed(1))
            m = mod["mode_metrics"](gm, out.samples)
            row.append("%d: %.2f%% c%.1f" % (out.nfe, 100 * m["spread"], m["centre"] / fl["centre"]))
        print(sn, meth, " | ".join(row), flush=True)
