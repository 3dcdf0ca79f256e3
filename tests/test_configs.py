"""Configs: every shipped config builds (SDE, model on the meta device, loss, training arguments,
data object); overrides are parsed with type checks; unknown keys are rejected with near matches."""
import pytest
import torch

from score_sde import VESDE, VPSDE, CosineVPSDE, LinearInterpolantSDE, subVPSDE
from score_sde import config as B

SHIPPED = B.list_configs()


def test_configs_are_shipped_for_every_sde():
    for sde in ("vp", "ve", "subvp"):
        assert f"{sde}/checkerboard" in SHIPPED and f"{sde}/digits" in SHIPPED
    assert "vp/cifar10_ddpmpp_continuous" in SHIPPED and "subvp/cifar10_ddpmpp_continuous" in SHIPPED
    assert "ve/cifar10_ncsnpp_continuous" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_builds(name, tmp_path, tmp_path_factory):
    cfg = B.load_config(name)
    if cfg.data.dataset == "folder":          # needs images: a generated folder (sigma_data is read from them)
        from test_recipe import write_image_folder
        assert cfg.data.image_size == cfg.data.num_channels == 0     # read from the images
        cfg.data.root = str(write_image_folder(tmp_path, 8, 1))
    sde = B.build_sde(cfg)
    expected = {"vp": VPSDE, "subvp": subVPSDE, "ve": VESDE, "cosine": CosineVPSDE,
                "rectified_flow": LinearInterpolantSDE}[name.split("/")[0]]
    assert type(sde) is expected
    with torch.device("meta"):
        model = B.build_model(cfg, sde)
    # the config's choices reach the objects (a factory that ignored a key would fail here)
    assert model.sde is sde and model.output == cfg.model.output
    assert type(model.net).__name__.lower() == cfg.model.name.lower()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params > 0
    loss = B.build_loss(cfg, sde)
    assert loss.sde is sde and (loss.weighting, loss.time_sampling) == (cfg.training.weighting,
                                                                       cfg.training.time_sampling)
    kw = B.train_kwargs(cfg)
    assert kw["n_steps"] > 0 and kw["batch_size"] > 0 and kw["lr"] > 0
    ds = B.build_data(cfg)                  # reads no files
    assert ds.event_shape == B.event_shape(cfg)
    samp = B.sampler_kwargs(cfg)
    from score_sde.sampling import SOLVERS
    assert samp["method"] in SOLVERS
    if "ddpmpp" in name:
        assert 61e6 < n_params < 63e6        # the paper's DDPM++ (continuous): about 62M parameters
    # a config round-trips through WORKDIR/config.json (what `train` stores, what the other commands read)
    import json
    wd = tmp_path_factory.mktemp("cfg")
    (wd / "config.json").write_text(json.dumps(cfg.to_dict()))
    again = B.load_run_config(wd)
    assert B.config_keys(again) == B.config_keys(cfg) and again.to_dict() == cfg.to_dict()


def test_small_configs_run_one_loss_evaluation():
    for name in ("vp/checkerboard", "ve/digits", "subvp/digits"):
        cfg = B.load_config(name, ["model.hidden=16", "model.num_blocks=1"])
        sde = B.build_sde(cfg)
        model = B.build_model(cfg, sde)
        ds = B.build_data(cfg)
        x = next(ds.batches(8, generator=torch.Generator().manual_seed(0)))
        loss = B.build_loss(cfg, sde)(model, x, generator=torch.Generator().manual_seed(0))
        assert loss.shape == (8,) and torch.isfinite(loss).all()


def test_overrides_are_typed():
    cfg = B.load_config("vp/digits", ["--config.training.batch_size=64", "config.optim.lr=3e-4",
                                      "data.centered=false", "sde.name=vesde", "model.hidden=1e2"])
    assert cfg.training.batch_size == 64 and isinstance(cfg.training.batch_size, int)
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.data.centered is False
    assert cfg.sde.name == "vesde" and cfg.model.hidden == 100
    cfg = B.load_config("vp/cifar10_ddpmpp_continuous", ["model.ch_mult=(1,2,2)", "model.attn_resolutions=8"])
    assert cfg.model.ch_mult == (1, 2, 2) and cfg.model.attn_resolutions == (8,)
    with pytest.raises(ValueError, match="training.batch_size.*expected an integer"):
        B.load_config("vp/digits", ["training.batch_size=big"])
    with pytest.raises(ValueError, match="expected an integer"):
        B.load_config("vp/digits", ["training.batch_size=1.5"])
    with pytest.raises(ValueError, match="boolean"):
        B.load_config("vp/digits", ["data.centered=maybe"])
    with pytest.raises(ValueError, match="must look like"):
        B.load_config("vp/digits", ["training.batch_size"])


def test_unknown_keys_rejected_with_near_matches():
    with pytest.raises(ValueError, match=r"unknown config key 'training.batch_sise'.*training.batch_size"):
        B.load_config("vp/digits", ["training.batch_sise=3"])
    with pytest.raises(ValueError, match=r"unknown config key 'optim.warmpu'.*optim.warmup"):
        B.apply_overrides(B.default_config(), ["optim.warmpu=10"])
    # a key that exists in another section is suggested by its leaf name
    with pytest.raises(ValueError, match=r"training.n_iters"):
        B.apply_overrides(B.default_config(), ["optim.n_iters=10"])


def test_parse_override_args_forms():
    ov, rest = B.parse_override_args(["train", "--config.a.b=1", "--config.c.d", "2", "--workdir", "w"])
    assert ov == ["--config.a.b=1", "--config.c.d=2"] and rest == ["train", "--workdir", "w"]
    with pytest.raises(ValueError, match="needs a value"):
        B.parse_override_args(["--config.a.b"])


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="vp/digits"):
        B.load_config(tmp_path / "missing.py")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ValueError, match="must define get_config"):
        B.load_config(bad)
    own = tmp_path / "own.py"
    own.write_text("from score_sde.config import default_config\n\ndef get_config():\n"
                   "    c = default_config()\n    c.data.dataset = 'moons'\n    return c\n")
    assert B.load_config(own).data.dataset == "moons"
    cfg = B.default_config()
    cfg.sde.name = "sigmoid"
    with pytest.raises(ValueError, match="config.sde.name"):
        B.build_sde(cfg)
    cfg = B.default_config()
    cfg.training.loss = "l1"
    with pytest.raises(ValueError, match="config.training.loss"):
        B.build_loss(cfg)


def test_config_sampling_snr_reaches_the_pc_family_only(monkeypatch):
    """``config.sampling.snr`` is the Langevin snr of the pc family (the demo sets the one measured
    for its model); other solvers never see it, and an explicit option wins."""
    import torch

    from score_sde import experiment as ex
    from score_sde.config import default_config, solver_options
    from score_sde.sampling import SampleOutput

    cfg = default_config()
    assert solver_options(cfg, "pc") == {}                        # 0: the solver's own 0.16
    cfg.sampling.snr = 0.01
    assert solver_options(cfg, "pc") == {"snr": 0.01}
    assert solver_options(cfg, "pc", {"snr": 0.2}) == {"snr": 0.2}
    assert solver_options(cfg, "ddim") == {} and solver_options(cfg, "dpmpp_2m", {"order": 2}) == {"order": 2}

    seen = []

    def fake_sample(sde, model, shape, **kw):
        seen.append(kw)
        return SampleOutput(torch.zeros(shape), 1)

    monkeypatch.setattr(ex, "sample", fake_sample)
    sde = B.build_sde(cfg)
    run = ex.TrainedRun(cfg, None, sde, None, B.build_data(cfg), None, 0, torch.device("cpu"))
    run.draw(4, "pc", 10)
    run.draw(4, "ddim", 10)
    assert seen[0]["snr"] == 0.01 and "snr" not in seen[1]
