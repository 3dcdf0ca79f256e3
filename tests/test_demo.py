"""The demo's recipe (``score_sde.demo``): the config is the one measured (docs/cli.md), the
training schedule ends where the config says, and a run directory trained under the older demo
(no per-pixel head) is refused with the key named instead of being resumed into another network."""
import pytest

from score_sde import experiment as ex
from score_sde.config import build_net
from score_sde.demo import DEMO_SCHEDULE, demo_config, run_demo
from score_sde.training import ConfigMismatchError


def test_demo_config_is_the_measured_recipe():
    cfg = demo_config()
    assert (cfg.model.name, cfg.model.output, cfg.model.pixel_head) == ("mlp", "edm", 32)
    assert (cfg.training.weighting, cfg.training.time_sampling) == ("edm", "lognormal")
    assert cfg.model.sigma_data <= 0                      # measured from the digits
    assert cfg.training.n_iters == DEMO_SCHEDULE[-1][0] == 6000 and len(DEMO_SCHEDULE) == 1
    net = build_net(cfg)
    assert net.pixel_head == 32 and 0.95e6 < sum(p.numel() for p in net.parameters()) < 1.05e6


def test_demo_refuses_a_run_of_the_older_network(tmp_path, one_thread):
    cfg = demo_config()
    cfg.model.pixel_head = 0                              # the network the demo trained before the head
    cfg.model.hidden, cfg.model.num_blocks, cfg.training.batch_size = 32, 1, 16
    cfg.training.n_iters, cfg.training.snapshot_freq, cfg.training.snapshot_sampling = 2, 2, False
    ex.run_train(cfg, tmp_path, device="cpu", progress=False)
    with pytest.raises(ConfigMismatchError, match="model.pixel_head"):
        run_demo(tmp_path, quick=True, progress=False, overrides=["model.hidden=32", "model.num_blocks=1"])
