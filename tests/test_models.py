"""Tests of the score networks: the paper's checkpoint layouts, shapes, FIR resampling against its
definition, attention against the explicit softmax formula, memory formats, autocast, the
checkpoint converter and its errors."""
import glob
import json
import math
import os

import ml_collections
import pytest
import torch
import torch.nn.functional as F

from score_sde.config import default_model_config, get_model, model_kwargs, reference_config
from score_sde.interop import load_reference_checkpoint, reference_score_model
from score_sde.models import MLP, MODELS, ScoreModel
from score_sde.models import layers
from score_sde.models import up_or_down_sampling as ud
from score_sde.interop import convert

torch.set_num_threads(1)

# the published layouts (names, shapes, counts; no weights), kept with the tests
REF_DIR = os.path.join(os.path.dirname(__file__), "data", "reference_layouts")
REF_FILES = sorted(glob.glob(os.path.join(REF_DIR, "*.json")))


# ------------------------------------------------------------------------------------------------
# the paper's released checkpoints: names, shapes, order and parameter counts


def test_reference_layouts_present():
    assert len(REF_FILES) == 6, f"expected the 6 reference layouts in {REF_DIR}"


@pytest.mark.parametrize("path", REF_FILES, ids=[os.path.basename(p)[:-5] for p in REF_FILES])
def test_reference_state_dict_layout(path):
    ref = json.load(open(path))
    name = os.path.basename(path)[:-5]
    with torch.device("meta"):
        net = get_model(reference_config(name))
    ours = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    theirs = [(k, list(v)) for k, v in ref["state_dict"].items()]
    missing = sorted(set(dict(theirs)) - set(dict(ours)))
    extra = sorted(set(dict(ours)) - set(dict(theirs)))
    assert not missing and not extra, (missing[:5], extra[:5])
    assert ours == theirs  # same names, shapes and order (so EMA shadow_params line up)
    assert sum(p.numel() for p in net.parameters()) == ref["params"]
    assert ref["model"] == reference_config(name).model.name


def test_ddpmpp_continuous_parameter_count_and_flops():
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        net = get_model(reference_config("ddpmpp_cifar10")).eval()
        x, lab = torch.randn(1, 3, 32, 32), torch.ones(1)
    assert sum(p.numel() for p in net.parameters()) == 61_804_419
    # issue 8 measured the paper's implementation at 21.7 GFLOP per image (forward)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x, lab)
    assert abs(counter.get_total_flops() / 1e9 - 21.7) < 0.05


# ------------------------------------------------------------------------------------------------
# forward shapes on small configs, every model type and path


def tiny(name, size, **over):
    cfg = ml_collections.ConfigDict()
    cfg.model = default_model_config(name)
    cfg.data = ml_collections.ConfigDict(dict(image_size=size, num_channels=1 if size == 8 else 3,
                                              centered=reference_config(name).data.centered))
    levels = {8: (1, 2), 16: (1, 2, 2), 32: (1, 2, 2, 2)}[size]
    cfg.model.update(dict(nf=16, ch_mult=levels, num_res_blocks=1, attn_resolutions=(size // 2,), dropout=0.0))
    cfg.model.update(over)
    return cfg


VARIANTS = {
    "ddpm": ("ddpm_cifar10", {}),
    "ddpmpp": ("ddpmpp_cifar10", {}),
    "ncsnpp": ("ncsnpp_cifar10", {}),
    "ncsnpp_skip_cat": ("ncsnpp_cifar10", dict(progressive="output_skip", progressive_input="input_skip",
                                                progressive_combine="cat")),
    "ncsnpp_residual_ddpmblocks": ("ncsnpp_cifar10", dict(progressive="residual", resblock_type="ddpm")),
    "ddpmpp_residual_nofir": ("ddpmpp_cifar10", dict(progressive="residual", progressive_input="input_skip",
                                                      resblock_type="ddpm")),
}


def labels_for(cfg, batch):
    if str(cfg.model.get("embedding_type", "positional")) == "fourier" and cfg.model.name == "ncsnpp":
        return torch.exp(torch.linspace(math.log(0.02), math.log(40.0), batch))  # sigmas
    return torch.linspace(0.0, 999.0, batch)  # time steps


@pytest.mark.parametrize("size", [8, 32])  # 16x16: the channels_last and bf16 tests
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_forward_shape(variant, size):
    name, over = VARIANTS[variant]
    cfg = tiny(name, size, **over)
    net = get_model(cfg)
    x = torch.randn(3, cfg.data.num_channels, size, size)
    y = net(x, labels_for(cfg, 3))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("shape", [(2,), (1, 8, 8), (3, 4)])
def test_mlp_forward_shape(shape):
    net = MLP(shape, hidden=32, num_blocks=2)
    x = torch.randn(5, *shape)
    y = net(x, torch.rand(5))
    assert y.shape == x.shape
    # output layer starts at ~0: the initial net is (almost) the zero function
    assert y.abs().max() < 1e-4


def test_ddpm_unconditional_builds_and_runs():
    # the paper's code raises UnboundLocalError for conditional=False
    net = get_model(tiny("ddpm_cifar10", 8, conditional=False))
    x = torch.randn(2, 1, 8, 8)
    assert net(x, torch.zeros(2)).shape == x.shape


# ------------------------------------------------------------------------------------------------
# memory formats, autocast, compile-friendliness


@pytest.mark.parametrize("variant", ["ddpmpp", "ncsnpp", "ddpm"])
def test_channels_last_same_output(variant):
    name, over = VARIANTS[variant]
    cfg = tiny(name, 16, init_scale=1.0, **over)
    torch.manual_seed(0)
    net = get_model(cfg).eval()
    torch.nn.init.normal_(net.all_modules[-1].weight, std=0.05)  # DDPM's output conv starts at ~0
    x = torch.randn(2, 3, 16, 16)
    lab = labels_for(cfg, 2)
    with torch.no_grad():
        y = net(x, lab)
        y_cl = net.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last), lab)
    assert y.abs().mean() > 1e-3  # a non-trivial output
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-4 * float(y.abs().max()))  # float32 reordering only


def test_ddpmpp_keeps_channels_last():
    net = get_model(tiny("ddpmpp_cifar10", 16)).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 16).to(memory_format=torch.channels_last)
    assert net(x, torch.ones(2)).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("variant", ["ddpmpp", "ncsnpp"])
def test_bf16_autocast_close_to_fp32(variant):
    name, over = VARIANTS[variant]
    cfg = tiny(name, 16, init_scale=1.0, **over)
    torch.manual_seed(1)
    net = get_model(cfg).eval()
    x = torch.randn(2, 3, 16, 16)
    lab = labels_for(cfg, 2)
    y = net(x, lab)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = net(x, lab)
    assert y16.dtype == torch.float32 and torch.isfinite(y16).all()
    rel = (y16 - y).norm() / y.norm()
    assert rel < 0.05, rel


def test_eval_is_deterministic_and_dropout_active_in_train():
    cfg = tiny("ddpmpp_cifar10", 8, dropout=0.5, init_scale=1.0)
    net = get_model(cfg)
    x, lab = torch.randn(2, 1, 8, 8), torch.ones(2)
    net.eval()
    assert torch.equal(net(x, lab), net(x, lab))
    net.train()
    assert not torch.equal(net(x, lab), net(x, lab))


# ------------------------------------------------------------------------------------------------
# layers against their definitions


def naive_upfirdn(x, k, up, down, pad):
    """upfirdn2d straight from its definition: zero insertion, pad, true convolution, decimate."""
    B, C, H, W = x.shape
    z = torch.zeros(B, C, H * up, W * up, dtype=x.dtype)
    z[:, :, ::up, ::up] = x
    z = F.pad(z, (pad[0], pad[1], pad[0], pad[1]))
    K = k.shape[0]
    n = z.shape[-1] - K + 1
    out = torch.zeros(B, C, n, n, dtype=x.dtype)
    for a in range(K):
        for b in range(K):
            out += z[:, :, a:a + n, b:b + n] * k[K - 1 - a, K - 1 - b]
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("kernel", [(1, 3, 3, 1), (1, 1), (1, 2, 1), (1, 5, 10, 10, 5, 1)])
@pytest.mark.parametrize("up,down", [(2, 1), (1, 2), (1, 1)])
def test_upfirdn2d_matches_definition(kernel, up, down):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    k = ud.setup_kernel(kernel, dtype=torch.float64) * (up * up)
    p = k.shape[0] - 2
    pad = ((p + 1) // 2 + up - 1, p // 2) if up > 1 else ((p + 1) // 2, p // 2)
    torch.testing.assert_close(ud.upfirdn2d(x, k, up, down, pad), naive_upfirdn(x, k, up, down, pad))


def test_fir_resampling_properties():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    # a constant image stays constant away from the border (kernels are normalised)
    c = torch.full((1, 1, 8, 8), 2.5, dtype=torch.float64)
    torch.testing.assert_close(ud.upsample_2d(c)[..., 2:-2, 2:-2], torch.full((1, 1, 12, 12), 2.5, dtype=torch.float64))
    torch.testing.assert_close(ud.downsample_2d(c)[..., 1:-1, 1:-1], torch.full((1, 1, 2, 2), 2.5, dtype=torch.float64))
    # the fused ops equal "resample then conv" / "conv then resample" away from the border
    up = ud.upsample_conv_2d(x, w)
    assert up.shape == (2, 4, 16, 16)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], F.conv2d(ud.upsample_2d(x), w, padding=1)[..., 2:-2, 2:-2])
    down = ud.conv_downsample_2d(x, w)
    assert down.shape == (2, 4, 4, 4)
    torch.testing.assert_close(down[..., 1:-1, 1:-1], ud.downsample_2d(F.conv2d(x, w, padding=1))[..., 1:-1, 1:-1])
    # without FIR: nearest / 2x2 mean
    torch.testing.assert_close(ud.naive_upsample_2d(x), x.repeat_interleave(2, -1).repeat_interleave(2, -2))
    torch.testing.assert_close(ud.naive_downsample_2d(x), x.reshape(2, 3, 4, 2, 4, 2).mean((3, 5)))


def test_attention_matches_softmax_formula():
    torch.manual_seed(0)
    blk = layers.AttnBlock(16, skip_rescale=True, init_scale=1.0).double()
    x = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    B, C, H, W = x.shape
    h = blk.GroupNorm_0(x)
    nin = lambda m, t: torch.einsum("bchw,cd->bdhw", t, m.W) + m.b[None, :, None, None]  # noqa: E731
    q, k, v = nin(blk.NIN_0, h), nin(blk.NIN_1, h), nin(blk.NIN_2, h)
    w = torch.einsum("bchw,bcij->bhwij", q, k) * C ** -0.5
    w = F.softmax(w.reshape(B, H, W, H * W), dim=-1).reshape(B, H, W, H, W)
    out = nin(blk.NIN_3, torch.einsum("bhwij,bcij->bchw", w, v))
    torch.testing.assert_close(blk(x), (x + out) / math.sqrt(2.0))


def test_nin_and_embeddings_match_definitions():
    torch.manual_seed(0)
    nin = layers.NIN(5, 7, init_scale=1.0)
    x = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(nin(x), torch.einsum("bchw,cd->bdhw", x, nin.W) + nin.b[None, :, None, None])
    t = torch.tensor([0.0, 3.0, 999.0])
    e = layers.timestep_embedding(t, 8)
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / 3)
    torch.testing.assert_close(e, torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], 1))
    g = layers.GaussianFourierProjection(4, scale=16.0)
    assert not g.W.requires_grad
    log_sigma = torch.tensor([-4.6, 0.0, 3.9])
    arg = 2 * math.pi * log_sigma[:, None] * g.W[None]
    torch.testing.assert_close(g(log_sigma), torch.cat([torch.sin(arg), torch.cos(arg)], 1), rtol=1e-4, atol=1e-4)


def test_mlp_learns_gaussian_noise_predictor():
    """Regress the exact eps-prediction of a 2-D Gaussian under VP noising (a known answer)."""
    torch.manual_seed(0)
    mu, s = torch.tensor([1.0, -0.5]), 0.5
    net = MLP(2, hidden=32, num_blocks=2, fourier_scale=2.0, embedding_dim=32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def eps_star(xt, a, sg):  # E[eps | x_t] for x0 ~ N(mu, s^2 I), x_t = a x0 + sg eps
        var = a ** 2 * s ** 2 + sg ** 2
        return sg * (xt - a * mu) / var

    for _ in range(150):
        t = torch.rand(128, 1) * 0.98 + 0.02
        a, sg = torch.exp(-t), torch.sqrt(-torch.expm1(-2 * t))
        xt = a * (mu + s * torch.randn(128, 2)) + sg * torch.randn(128, 2)
        loss = (net(xt, t[:, 0]) - eps_star(xt, a, sg)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    t = torch.rand(1000, 1) * 0.98 + 0.02
    a, sg = torch.exp(-t), torch.sqrt(-torch.expm1(-2 * t))
    xt = a * (mu + s * torch.randn(1000, 2)) + sg * torch.randn(1000, 2)
    target = eps_star(xt, a, sg)
    with torch.no_grad():
        err = (net(xt, t[:, 0]) - target).pow(2).mean() / target.pow(2).mean()
    assert err < 0.01, err


# ------------------------------------------------------------------------------------------------
# get_model and configs


def test_every_registered_network_builds_from_its_signature():
    """get_model passes every constructor argument the config sets (no key lists to forget)."""
    import inspect
    for name, cls in MODELS.items():
        cfg = tiny("ddpm_cifar10" if name == "ddpm" else "ddpmpp_cifar10", 8) if name != "mlp" else \
            ml_collections.ConfigDict(dict(model=dict(name="mlp", hidden=8, num_blocks=1), data=dict(dim=3)))
        cfg.model.name = name
        kw = model_kwargs(cfg)
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        assert set(kw) <= params
        set_in_config = {k for k in params if k in cfg.model or (k in ("image_size", "num_channels") and k in cfg.data)}
        assert set_in_config <= set(kw)
        assert type(get_model(cfg)) is cls


def test_get_model_names_and_errors():
    cfg = tiny("ddpmpp_cifar10", 8)
    cfg.model.name = "unet9000"
    with pytest.raises(ValueError, match="mlp.*ncsnpp"):
        get_model(cfg)
    cfg = tiny("ddpmpp_cifar10", 8, normalization="InstanceNorm")
    with pytest.raises(ValueError, match="normalization"):
        get_model(cfg)
    with pytest.raises(ValueError, match="image_size"):
        get_model(tiny("ddpmpp_cifar10", 8, ch_mult=(1, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match="progressive"):
        get_model(tiny("ncsnpp_cifar10", 8, progressive="sideways"))
    with pytest.raises(ValueError, match="unknown reference config"):
        reference_config("ddpmpp_imagenet")
    net = get_model(tiny("ddpmpp_cifar10", 8))
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.randn(2, 3, 8, 8), torch.ones(2))
    with pytest.raises(ValueError, match="labels"):
        net(torch.randn(2, 1, 8, 8), torch.ones(3))


def test_mlp_from_config():
    cfg = ml_collections.ConfigDict(dict(model=dict(name="mlp", hidden=32, num_blocks=1), data=dict(dim=2)))
    assert get_model(cfg)(torch.randn(4, 2), torch.rand(4)).shape == (4, 2)
    cfg = ml_collections.ConfigDict(dict(model=dict(name="mlp", hidden=32), data=dict(image_size=8, num_channels=1)))
    assert get_model(cfg).event_shape == (1, 8, 8)


def test_default_model_configs_are_the_papers():
    m = default_model_config("ddpmpp_cifar10")
    assert (m.name, m.embedding_type, m.fir, m.num_res_blocks, m.scale_by_sigma) == ("ncsnpp", "positional", False, 4, False)
    m = default_model_config("ncsnpp_cifar10")
    assert (m.embedding_type, m.fir, m.progressive_input, m.scale_by_sigma) == ("fourier", True, "residual", True)
    assert reference_config("ncsnpp_cifar10").data.centered is False
    assert default_model_config("ddpm_cifar10").name == "ddpm"


# ------------------------------------------------------------------------------------------------
# the checkpoint converter


def _fake_reference_checkpoint(cfg, path):
    torch.manual_seed(3)
    net = get_model(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    shadow = [p.detach() * 0.5 for p in net.parameters() if p.requires_grad]
    ckpt = {"model": {"module." + k: v for k, v in net.state_dict().items()},
            "ema": {"decay": 0.999, "num_updates": 11, "shadow_params": shadow},
            "optimizer": {"state": {}, "param_groups": []}, "step": 1234}
    torch.save(ckpt, path)
    return net


@pytest.mark.parametrize("name", ["ncsnpp_cifar10", "ddpmpp_cifar10"])  # ddpm: test_converter_command_line
def test_converter_round_trip(tmp_path, name):
    cfg = tiny(name, 8)
    src = tmp_path / "checkpoint_1.pth"
    ref = _fake_reference_checkpoint(cfg, src)
    net, ema = load_reference_checkpoint(src, cfg)
    for (k, a), b in zip(net.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), k
    trainable = {n for n, p in ref.named_parameters() if p.requires_grad}
    for k, v in ref.state_dict().items():
        expect = v * 0.5 if k in trainable else v  # Fourier W and sigmas: not in the reference EMA
        assert torch.equal(ema[k], expect), k
    if name == "ncsnpp_cifar10":
        assert "all_modules.0.W" not in trainable
    # through our checkpoint format
    from score_sde.training.checkpoint import load_model
    dst = convert(src, tmp_path / "ours.pt", cfg)
    fresh = load_model(dst, get_model(cfg), ema=True)
    x, lab = torch.randn(2, 1, 8, 8), labels_for(cfg, 2)
    net.load_state_dict(ema)
    torch.testing.assert_close(fresh.eval()(x, lab), net.eval()(x, lab))


@pytest.mark.parametrize("entry", ["score-sde convert", "python -m score_sde.interop"])
def test_converter_command_line(tmp_path, entry):
    from score_sde import cli
    from score_sde.interop.reference import main
    from score_sde.training.checkpoint import load_model
    cfg_file = tmp_path / "tiny_ddpm.py"
    cfg_file.write_text(
        "from score_sde.config import reference_config\n"
        "def get_config():\n"
        "    c = reference_config('ddpm_cifar10')\n"
        "    c.model.update(dict(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,)))\n"
        "    c.data.update(dict(image_size=8, num_channels=1))\n"
        "    return c\n")
    cfg = tiny("ddpm_cifar10", 8, dropout=0.1)
    src = tmp_path / "checkpoint_3.pth"
    ref = _fake_reference_checkpoint(cfg, src)
    args = [str(src), str(tmp_path / "c.pt"), "--config", str(cfg_file)]
    if entry == "score-sde convert":
        assert cli.main(["convert", *args]) == 0
        out = tmp_path / "c.pt"
    else:
        out = main(args)
    net = load_model(out, get_model(cfg), ema=False)
    for a, b in zip(net.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)


def test_converter_errors(tmp_path):
    cfg = tiny("ddpmpp_cifar10", 8)
    src = tmp_path / "checkpoint_2.pth"
    _fake_reference_checkpoint(cfg, src)
    # a different architecture: mismatched keys and shapes are listed, with the file name
    other = tiny("ddpmpp_cifar10", 8, nf=32)
    with pytest.raises(ValueError, match=r"checkpoint_2\.pth.*shape mismatches"):
        load_reference_checkpoint(src, other)
    other = tiny("ddpmpp_cifar10", 8, num_res_blocks=2)
    with pytest.raises(ValueError, match=r"checkpoint_2\.pth.*(missing|unexpected) keys"):
        load_reference_checkpoint(src, other)
    # a truncated file
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(src.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"truncated\.pth"):
        load_reference_checkpoint(bad, cfg)
    # an EMA of the wrong length
    obj = torch.load(src, weights_only=True)
    obj["ema"]["shadow_params"] = obj["ema"]["shadow_params"][:-1]
    torch.save(obj, tmp_path / "short_ema.pth")
    with pytest.raises(ValueError, match=r"short_ema\.pth.*EMA holds"):
        load_reference_checkpoint(tmp_path / "short_ema.pth", cfg)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_reference_checkpoint(tmp_path / "nowhere.pth", cfg)


def test_reference_score_model_conditioning():
    from score_sde.sde import VESDE, VPSDE

    class Probe(torch.nn.Module):
        def forward(self, x, labels):
            return labels[:, None].expand_as(x).clone()

    x, t = torch.randn(4, 3), torch.tensor([1e-5, 1e-3, 0.5, 1.0])
    vp = VPSDE()
    sf = reference_score_model(Probe(), vp, "ddpmpp_cifar10")
    torch.testing.assert_close(sf(x, t), -(999 * t)[:, None].expand_as(x) / vp.sigma(t)[:, None])
    ve = VESDE()
    sf = reference_score_model(Probe(), ve, "ncsnpp_cifar10")
    assert isinstance(sf, ScoreModel) and sf.output == "score"
    torch.testing.assert_close(sf(x, t)[:, 0], ve.sigma(t).clamp_min(0.01))


def test_torch_compile_full_graph():
    """The whole U-Net forward traces into one graph (no graph breaks): fullgraph=True raises
    otherwise. The eager backend keeps this cheap on CPU; GPU runs use the inductor backend."""
    cfg = tiny("ncsnpp_cifar10", 8, init_scale=1.0, progressive="residual")
    net = get_model(cfg).eval()
    x, lab = torch.randn(2, 1, 8, 8), labels_for(cfg, 2)
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, lab), net(x, lab))


def test_forward_throughput_benchmark_tiny(tmp_path):
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "forward_throughput.py")
    spec = importlib.util.spec_from_file_location("forward_throughput", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "fwd.json"
    rows = mod.main(["--tiny", "--device", "cpu", "--batch", "2", "--runs", "2", "--warmup", "0", "--out", str(out)])
    assert len(rows) == 1 and rows[0]["images_per_s"] > 0
    assert json.loads(out.read_text())["params"] == sum(
        p.numel() for p in get_model(mod.make_config("ddpmpp_cifar10", True)).parameters())


def test_float64_models_run_in_float64():
    import score_sde

    for emb in ("fourier", "positional"):
        net = MLP(2, embedding_type=emb)
        model = ScoreModel(net, score_sde.VPSDE()).double()
        out = model(torch.randn(3, 2, dtype=torch.float64), torch.rand(3, dtype=torch.float64))
        assert out.dtype == torch.float64


def test_mlp_input_fourier_features_match_definition():
    """input_fourier feeds [x, sin(2^n pi x), cos(2^n pi x)] to the first layer; off by default."""
    torch.manual_seed(0)
    net = MLP((1, 2, 2), hidden=16, num_blocks=1, input_fourier="3, 5")
    assert net.input_fourier == (3, 5) and net.input.in_features == 4 * 5
    assert MLP((1, 2, 2), hidden=16, num_blocks=1).input.in_features == 4
    assert MLP((1, 2, 2), hidden=16, num_blocks=1, input_fourier=(3, 5)).input_fourier == (3, 5)
    x = torch.randn(3, 1, 2, 2)
    v = x.reshape(3, 4)
    a = torch.cat([v * math.pi * 8, v * math.pi * 32], 1)
    seen = {}
    net.input.register_forward_hook(lambda m, inp, out: seen.update(inp=inp[0]))
    net(x, torch.rand(3))
    feats = seen["inp"]
    torch.testing.assert_close(feats[:, :4], v)
    # features ordered pixel-major: (pixel, exponent) for sin, then the same for cos
    ang = (v.unsqueeze(-1) * torch.tensor([8.0, 32.0]) * math.pi).flatten(1)
    torch.testing.assert_close(feats[:, 4:12], torch.sin(ang))
    torch.testing.assert_close(feats[:, 12:], torch.cos(ang))
    assert torch.allclose(torch.sort(ang.flatten()).values, torch.sort(a.flatten()).values)
    assert "_freqs" not in net.state_dict()          # nothing new in checkpoints
    for bad in ("4,x", (-1,), "13"):
        with pytest.raises(ValueError, match="input_fourier"):
            MLP(4, hidden=8, num_blocks=1, input_fourier=bad)


def test_mlp_input_fourier_resolves_fine_scale_structure():
    """A target that varies on the 2^-6 scale (like 8-bit levels) is learnt with input_fourier and
    not without it, in the same 200 Adam steps."""
    def fit(spec):
        torch.manual_seed(0)
        net = MLP(1, hidden=32, num_blocks=1, input_fourier=spec, layer_norm=False)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(200):
            x = torch.rand(256, 1) * 2 - 1
            loss = (net(x, torch.full((256,), 0.5)) - torch.sin(64 * math.pi * x)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        x = torch.rand(2000, 1) * 2 - 1
        with torch.no_grad():
            return float((net(x, torch.full((2000,), 0.5)) - torch.sin(64 * math.pi * x)).pow(2).mean())
    assert fit("6") < 0.05 < 0.3 < fit("")


def test_mlp_input_contrast_features_match_definition():
    """input_contrast feeds [x, (x - mean) / std, mean, log std] to the first layer and
    [x_i, (x_i - mean) / std, log std] (then the context) to the per-element head; off by default."""
    torch.manual_seed(0)
    net = MLP((1, 2, 3), hidden=16, num_blocks=1, input_contrast=True, pixel_head=4, pixel_context=2)
    assert net.input.in_features == 6 + 6 + 2 and net.head_in.in_features == 1 + 2 + 2
    assert MLP((1, 2, 3), hidden=16, num_blocks=1).input.in_features == 6
    x = torch.randn(3, 1, 2, 3) * torch.tensor([0.01, 0.3, 2.0]).view(3, 1, 1, 1)
    v = x.reshape(3, 6)
    m = v.mean(1, keepdim=True)
    sd = ((v - m).square().mean(1, keepdim=True) + 1e-6).sqrt()      # the std, floored at 1e-3
    seen = {}
    net.input.register_forward_hook(lambda mod, inp, out: seen.update(trunk=inp[0]))
    net.head_in.register_forward_hook(lambda mod, inp, out: seen.update(head=inp[0]))
    net(x, torch.rand(3))
    torch.testing.assert_close(seen["trunk"][:, :6], v)
    torch.testing.assert_close(seen["trunk"][:, 6:12], (v - m) / sd, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(seen["trunk"][:, 12:], torch.cat([m, torch.log(sd)], 1), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(seen["head"][..., 1], (v - m) / sd, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(seen["head"][..., 2], torch.log(sd).expand(3, 6), rtol=1e-3, atol=1e-3)
    with torch.no_grad():                                 # the head's inputs stay bounded far out
        net(1e6 * x, torch.rand(3))
    assert float(seen["head"][..., :3].abs().max()) <= 3.0

