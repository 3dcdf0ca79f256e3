"""Shared test fixtures.

``count_calls``: wrap a ``score_fn(x, t)`` so that the test can read how often it was called
(``.calls``) and which times it saw (``.t_min``, ``.t_max``); it also checks the contract every
solver must keep: one time per sample (``t.shape == (B,)``). Used by the sampling and likelihood
tests to assert exact NFE and the integration range.

``one_thread``: run the test with one torch thread (training tests compare runs bit for bit).
``child_env``: the environment for a child Python process that runs this checkout (PYTHONPATH set,
one OpenMP thread, no torchrun variables).
"""
import math
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


class CountingScore:
    """``score_fn`` wrapper: counts calls, records the range of times, checks ``t``'s shape."""

    def __init__(self, fn):
        self.fn, self.calls, self.t_min, self.t_max = fn, 0, math.inf, -math.inf

    def __call__(self, x, t):
        assert t.shape == (x.shape[0],), f"a solver passed t of shape {tuple(t.shape)} for x {tuple(x.shape)}"
        self.calls += 1
        self.t_min = min(self.t_min, float(t.min()))
        self.t_max = max(self.t_max, float(t.max()))
        return self.fn(x, t)


@pytest.fixture
def count_calls():
    """A factory: ``count_calls(score_fn) -> CountingScore``."""
    return CountingScore


@pytest.fixture
def one_thread():
    """One torch thread for the test, restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def child_env():
    """A factory: ``child_env() -> dict`` for ``subprocess.Popen(..., env=child_env())``."""
    def make():
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["OMP_NUM_THREADS"] = "1"
        for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(k, None)
        return env
    return make
