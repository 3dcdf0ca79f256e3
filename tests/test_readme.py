"""The README's Python examples run as written (the checkpoint example needs a user's file: only its names)."""
import re
from pathlib import Path

import torch

import score_sde

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_first_example_and_sampling_block_run():
    blocks = _blocks()
    ns = {}
    exec(compile(blocks[0], "README.md (first example)", "exec"), ns)
    assert ns["out"].nfe == 20 and tuple(ns["out"].samples.shape) == (2000, 2)
    exact = float(-ns["gm"].log_prob(ns["x"]).mean())
    assert abs(float(-ns["ll"].logp.mean()) - exact) < 0.01      # ODE NLL vs exact NLL (nats)
    sampling = next(b for b in blocks if "sorted(SOLVERS)" in b)
    exec(compile(sampling, "README.md (sampling)", "exec"), ns)
    listed = set(re.findall(r"[a-z_0-9]+", sampling.split("sorted(SOLVERS)")[1].split("x, nfe")[0]))
    assert set(score_sde.SOLVERS) <= listed, "README's solver list is missing " + str(set(score_sde.SOLVERS) - listed)
    assert torch.isfinite(ns["x"]).all()


def test_checkpoint_example_names_exist():
    block = next(b for b in _blocks() if "load_reference_checkpoint" in b)
    from score_sde import interop
    for name in re.findall(r"import (.+)", block)[0].split(","):
        assert hasattr(interop, name.strip())
