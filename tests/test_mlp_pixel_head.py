"""The MLP's per-element head (``MLP(pixel_head=w)``): shapes, a zero start, one function shared by
every element, the per-pixel nonlinearity it exists for, and config / checkpoint compatibility."""
import pytest
import torch

from score_sde.config import build_net, default_config
from score_sde.models.mlp import MLP
from score_sde.training import ConfigMismatchError, check_config_compatible


@pytest.mark.parametrize("shape", [2, (1, 8, 8), (3, 4, 4)])
def test_head_shapes_and_zero_start(shape):
    torch.manual_seed(0)
    net = MLP(shape, hidden=32, num_blocks=1, embedding_dim=16, pixel_head=8)
    x = torch.randn(5, *((shape,) if isinstance(shape, int) else shape))
    out = net(x, torch.rand(5))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.detach().abs().max()) < 1e-3          # output layers start at (near) zero, the head too
    assert sum(p.numel() for p in net.parameters()) > sum(
        p.numel() for p in MLP(shape, hidden=32, num_blocks=1, embedding_dim=16).parameters())


def test_head_is_one_function_of_each_element():
    torch.manual_seed(0)
    net = MLP(16, hidden=32, num_blocks=1, embedding_dim=16, pixel_head=8, pixel_context=0)
    torch.nn.init.normal_(net.head_out.weight)     # a head that is not zero
    e = net.act(net.embed(torch.rand(3)))
    hn = torch.randn(3, 32)
    xe = torch.randn(3, 16, 1)
    base = net._head(xe, hn, e)
    xe2 = xe.clone()
    xe2[:, 5] += 1.0
    moved = (net._head(xe2, hn, e) - base).abs() > 1e-7
    assert moved[:, 5].all() and not moved[:, [i for i in range(16) if i != 5]].any()   # element-wise
    same = net._head(torch.full((3, 16, 1), 0.3), hn, e)
    assert torch.allclose(same, same[:, :1].expand_as(same))                           # shared by elements
    with pytest.raises(ValueError, match="pixel_head"):
        MLP(4, pixel_head=-1)


def _fit(net, steps=200):
    """Train ``net`` to map x to tanh(4 x) element-wise (a soft snap to +-1, like a denoiser's)."""
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        x = torch.randn(64, 24, generator=g)
        loss = (net(x, torch.rand(64, generator=g)) - torch.tanh(4 * x)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn(512, 24, generator=g)
    with torch.no_grad():
        return float((net(x, torch.rand(512, generator=g)) - torch.tanh(4 * x)).square().mean())


def test_head_learns_a_per_element_nonlinearity_the_plain_mlp_does_not(one_thread):
    torch.manual_seed(0)
    plain = _fit(MLP(24, hidden=48, num_blocks=1, embedding_dim=16))
    torch.manual_seed(0)
    head = _fit(MLP(24, hidden=48, num_blocks=1, embedding_dim=16, pixel_head=16))
    assert head < 0.3 * plain, (head, plain)


def test_head_from_config_and_checkpoint_compatibility():
    cfg = default_config()
    assert cfg.model.pixel_head == 0 and not build_net(cfg).pixel_head
    cfg.model.pixel_head = 8
    assert build_net(cfg).pixel_head == 8
    old = default_config().to_dict()
    del old["model"]["pixel_head"], old["model"]["pixel_context"]     # a config written before the key
    check_config_compatible(old, default_config().to_dict())           # absent means 0: compatible
    with pytest.raises(ConfigMismatchError, match="pixel_head"):
        check_config_compatible(old, cfg.to_dict())


def _nonzero_head_net(**kw):
    torch.manual_seed(0)
    net = MLP(16, hidden=32, num_blocks=2, embedding_dim=16, pixel_head=8, **kw)
    for lin in (net.output, net.head_out):         # output layers that are not zero
        torch.nn.init.normal_(lin.weight)
    return net


def test_clamped_head_keeps_the_output_bounded_far_from_the_data():
    x, t = torch.randn(4, 16), torch.rand(4)
    with torch.no_grad():
        for clip, bounded in ((3.0, True), (0.0, False)):
            net = _nonzero_head_net(pixel_head_clip=clip)
            near = net(x, t).abs().max()
            far = net(1e3 * x, t).abs().max()
            # the trunk passes a LayerNorm, so with the clamp nothing in the net grows with x;
            # unclamped, the head extrapolates linearly in x_i (the likelihood ODE's runaway)
            assert (far < 2 * near + 10) == bounded, (clip, float(near), float(far))
        net = _nonzero_head_net(pixel_head_clip=3.0)
        inside = torch.rand(4, 16) * 5.0 - 2.5
        assert torch.equal(net(inside.clamp(-2.5, 2.5), t), net(inside, t))


def test_clamped_head_gives_an_edm_score_that_points_back_far_from_the_data():
    from score_sde.models.wrappers import ScoreModel
    from score_sde.sde import VPSDE

    x, t = torch.randn(64, 16), torch.full((64,), 0.3)
    for clip, inward in ((3.0, True), (0.0, False)):
        net = _nonzero_head_net(pixel_head_clip=clip)
        with torch.no_grad():
            net.head_out.weight.abs_()                   # a head whose correction grows with x_i
            net.head_in.weight.abs_()
            net.head_out.weight.mul_(50.0)
        model = ScoreModel(net, VPSDE(), output="edm", time_label="edm", sigma_data=0.5)
        with torch.no_grad():
            s = model(1e3 * x, t)
        radial = (s * x).sum(1)                          # < 0: the score points towards the origin
        assert bool((radial < 0).all()) == inward, (clip, radial[:4])


def test_clamp_config_migration_and_compatibility():
    from score_sde.config.schema import migrate_config_dict

    cfg = default_config()
    cfg.model.pixel_head = 8
    assert build_net(cfg).pixel_head_clip == 3.0 and MLP(4, pixel_head=2).pixel_head_clip == 3.0
    old = cfg.to_dict()
    del old["model"]["pixel_head_clip"]                  # a head run written before the clamp
    migrated = migrate_config_dict(old)
    assert migrated["model"]["pixel_head_clip"] == 0.0   # it loads as the unclamped head it trained
    check_config_compatible(old, migrated)
    with pytest.raises(ConfigMismatchError, match="pixel_head_clip"):
        check_config_compatible(old, cfg.to_dict())      # resuming it under the clamped net: refused
    plain_old = default_config().to_dict()
    del plain_old["model"]["pixel_head_clip"]
    check_config_compatible(plain_old, default_config().to_dict())   # no head: the clamp is moot
    with pytest.raises(ValueError, match="pixel_head_clip"):
        MLP(4, pixel_head=2, pixel_head_clip=-1.0)
