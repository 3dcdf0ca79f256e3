"""Class labels through backbones, ScoreModel and the training loop; the noise-conditional
classifier; the controllable-generation commands end to end on tiny digits runs."""
import json

import numpy as np
import pytest
import torch

import score_sde
from score_sde import conditional as cond
from score_sde import controllable as ctl
from score_sde.classifier import NoiseClassifier, load_classifier, save_classifier, train_classifier
from score_sde.cli import main
from score_sde.models import DDPM, MLP, NCSNpp, ScoreModel
from score_sde.training import train

TINY = ["--config.model.hidden=32", "--config.model.num_blocks=1", "--config.training.n_iters=20",
        "--config.training.batch_size=32", "--config.training.snapshot_sampling=False",
        "--config.training.log_freq=10", "--config.sampling.steps=10", "--config.sampling.batch_size=64"]


def _nets():
    return [MLP((1, 8, 8), hidden=16, num_blocks=1, num_classes=3),
            DDPM(image_size=8, num_channels=1, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                 num_classes=3),
            NCSNpp(image_size=8, num_channels=1, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                   num_classes=3)]


@pytest.mark.parametrize("net", _nets(), ids=["mlp", "ddpm", "ncsnpp"])
def test_backbones_take_class_labels_with_a_null_class(net):
    torch.manual_seed(0)
    for p in net.class_embed.parameters():          # zero at init: give the classes distinct embeddings
        p.data.normal_()
    for mod in net.modules():                       # and make the output depend on the embedding
        if isinstance(mod, torch.nn.Conv2d) or isinstance(mod, torch.nn.Linear):
            if mod.weight.abs().max() < 1e-3:
                mod.weight.data.normal_(0, 0.1)
    m = ScoreModel(net, score_sde.VPSDE()).eval()       # no dropout
    assert m.num_classes == 3
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4) * 0.9 + 0.05
    a = m(x, t, torch.tensor([0, 0, 0, 0]))
    b = m(x, t, torch.tensor([1, 1, 1, 1]))
    assert (a - b).abs().max() > 1e-3 * a.abs().max()
    assert torch.equal(m(x, t, None), m(x, t, torch.full((4,), -1)))      # None = the null class
    assert torch.equal(m(x, t), m(x, t, None))
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 3\)"):
        m(x, t, torch.tensor([0, 1, 2, 3]))
    # classifier-free guidance at scale 1 is the conditional score
    assert torch.equal(cond.classifier_free_guidance(m, 2, 1.0)(x, t), m(x, t, torch.full((4,), 2)))


def test_unconditional_model_refuses_a_label():
    m = ScoreModel(MLP((1, 8, 8), hidden=16, num_blocks=1), score_sde.VPSDE())
    assert m.num_classes == 0
    with pytest.raises(ValueError, match="unconditional"):
        m(torch.zeros(2, 1, 8, 8), torch.full((2,), 0.5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        cond.classifier_free_guidance(m, 1, 2.0)


def _labelled_data(n=64):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.1 + y.float().reshape(-1, 1, 1, 1) - 1
    return x, y


@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_training_feeds_labels_and_label_dropout_reaches_the_null_class(tmp_path, dropout):
    sde = score_sde.VPSDE()
    model = ScoreModel(MLP((1, 8, 8), hidden=16, num_blocks=1, num_classes=3), sde)
    x, y = _labelled_data()
    train(model, score_sde.DSMLoss(sde), (x, y), workdir=tmp_path, n_steps=5, batch_size=16, warmup=0,
          progress=False, tensorboard=False, label_dropout=dropout)
    w = model.net.class_embed.embedding.weight            # rows 0..2 the classes, row 3 the null class
    classes_moved = bool(w[:3].abs().sum() > 0)
    null_moved = bool(w[3].abs().sum() > 0)
    assert (classes_moved, null_moved) == ((True, False) if dropout == 0.0 else (False, True))


def test_training_a_conditional_model_needs_labels(tmp_path):
    sde = score_sde.VPSDE()
    x, y = _labelled_data()
    cmodel = ScoreModel(MLP((1, 8, 8), hidden=16, num_blocks=1, num_classes=3), sde)
    with pytest.raises(ValueError, match="carry no labels"):
        train(cmodel, score_sde.DSMLoss(sde), x, workdir=tmp_path / "a", n_steps=1, batch_size=16, progress=False,
              tensorboard=False)
    umodel = ScoreModel(MLP((1, 8, 8), hidden=16, num_blocks=1), sde)
    with pytest.raises(ValueError, match="label_dropout"):
        train(umodel, score_sde.DSMLoss(sde), (x, y), workdir=tmp_path / "b", n_steps=1, batch_size=16,
              progress=False, tensorboard=False, label_dropout=0.1)


def test_noise_classifier_learns_separable_classes_and_round_trips(tmp_path):
    sde = score_sde.VPSDE()
    x, y = _labelled_data(96)
    clf = NoiseClassifier(sde, (1, 8, 8), 3, hidden=32, num_blocks=1)
    ema = train_classifier(clf, x, y, n_steps=150, batch_size=32, lr=3e-3, ema_rate=0.9, seed=0)
    t = torch.full((96,), 0.05)
    assert float((ema(x, t).argmax(1) == y).float().mean()) > 0.9
    path = save_classifier(ema, tmp_path / "clf.pt")
    back = load_classifier(path, sde)
    assert torch.equal(back(x, t), ema(x, t))
    g = cond.classifier_guidance(lambda x, t: -x, back, 1, scale=2.0)
    assert g(x[:4], t[:4]).shape == (4, 1, 8, 8)


def test_parse_mask_patterns_and_files(tmp_path):
    from PIL import Image

    half = ctl.parse_mask("half", (1, 8, 8))
    assert half[0, :4].all() and not half[0, 4:].any()
    centre = ctl.parse_mask("centre", (3, 8, 8))
    assert centre.shape == (3, 8, 8) and not centre[:, 2:6, 2:6].any() and centre.sum() == 3 * 48
    r = ctl.parse_mask("random:0.25", (1, 8, 8), seed=1)
    assert torch.equal(r, ctl.parse_mask("random:0.25", (1, 8, 8), seed=1)) and 0 < r.sum() < 64
    img = np.zeros((8, 8), np.uint8)
    img[:, :3] = 255
    Image.fromarray(img).save(tmp_path / "m.png")
    m = ctl.parse_mask(str(tmp_path / "m.png"), (1, 8, 8))
    assert m[0, :, :3].all() and not m[0, :, 3:].any()
    np.save(tmp_path / "m.npy", np.ones((7, 8), bool))
    with pytest.raises(ValueError, match=r"shape \(7, 8\).*\(1, 8, 8\)"):
        ctl.parse_mask(str(tmp_path / "m.npy"), (1, 8, 8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="shape"):
        ctl.parse_mask(str(tmp_path / "small.png"), (1, 8, 8))
    with pytest.raises(ValueError, match="observes no pixel"):
        ctl.parse_mask(str(tmp_path / "small.png"), (1, 4, 4))
    with pytest.raises(ValueError, match="half"):
        ctl.parse_mask("diagonal", (1, 8, 8))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctl")
    cwd = root / "cond"
    uwd = root / "uncond"
    assert main(["train", "--config", "vp/digits_conditional", "--workdir", str(cwd), "--no-progress", *TINY]) == 0
    assert main(["train", "--config", "vp/digits_conditional", "--workdir", str(uwd), "--no-progress", *TINY,
                 "--config.model.num_classes=0", "--config.training.label_dropout=0.0"]) == 0
    return cwd, uwd


def _last_json(capsys):
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


def test_cli_classifier_free_sampling_and_bad_input(runs, capsys):
    cwd, _ = runs
    assert main(["sample", "--workdir", str(cwd), "--label", "3", "--guidance", "2", "--n", "6"]) == 0
    res = _last_json(capsys)
    assert res["guidance_kind"] == "classifier-free" and res["label"] == 3 and res["nfe"] == 10 + 1
    assert res["network_calls"] == 2 * res["nfe"]            # conditional and unconditional score per call
    assert 0.0 <= res["label_accuracy"] <= 1.0
    assert np.load(res["npz"])["samples"].shape == (6, 1, 8, 8)
    assert main(["sample", "--workdir", str(cwd), "--label", "1", "--n", "2"]) == 0
    res = _last_json(capsys)          # without --guidance: the documented classifier-free scale
    assert res["guidance"] == ctl.GUIDANCE_SCALES["classifier-free"] == 3.0
    for argv, msg in ((["--label", "10"], r"label must lie in \[0, 10\)"),
                      (["--label", "1", "--guidance", "-0.5"], "guidance scale must be"),
                      (["--guidance", "2"], "need --label")):
        assert main(["sample", "--workdir", str(cwd), "--n", "2", *argv]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and __import__("re").search(msg, err), err


def test_cli_classifier_guidance_needs_a_classifier_then_uses_it(runs, capsys):
    _, uwd = runs
    assert main(["sample", "--workdir", str(uwd), "--label", "2", "--n", "2"]) == 1
    err = capsys.readouterr().err
    assert "unconditional" in err and "train-classifier" in err and len(err.strip().splitlines()) == 1
    assert main(["train-classifier", "--workdir", str(uwd), "--steps", "20", "--batch-size", "32"]) == 0
    res = _last_json(capsys)
    assert (uwd / "classifier.pt").is_file() and set(res["test_accuracy"]) >= {"t=0.1"}
    assert main(["sample", "--workdir", str(uwd), "--label", "2", "--guidance", "3", "--n", "4"]) == 0
    res = _last_json(capsys)
    assert res["guidance_kind"] == "classifier" and res["n"] == 4


def test_cli_train_classifier_takes_the_run_lock(runs):
    from score_sde.training import RunLock, RunLockedError

    _, uwd = runs
    with RunLock(uwd, purpose="test"):
        with pytest.raises(RunLockedError):
            ctl.run_train_classifier(score_sde.config.load_run_config(uwd), uwd, n_steps=1, log=None)


def test_cli_inpaint_keeps_observed_pixels_and_colorize_refuses_grey_data(runs, capsys, tmp_path):
    cwd, _ = runs
    assert main(["inpaint", "--workdir", str(cwd), "--mask", "half", "--n", "3", "--samples-per", "2"]) == 0
    res = _last_json(capsys)
    assert res["max_observed_change"] == 0.0 and res["observed_fraction"] == 0.5
    # the documented default: replacement + reconstruction guidance + RePaint resampling
    assert (res["guidance"], res["resample"]) == (ctl.INPAINT_GUIDANCE, ctl.INPAINT_RESAMPLE) == (10.0, 4)
    assert res["nfe"] == 4 * 10 + 1
    arr = np.load(res["npz"])
    truth = np.repeat(arr["truth"], 2, axis=0)
    assert np.array_equal(arr["samples"][:, :, :4], truth[:, :, :4])          # the upper half, exactly
    assert not np.array_equal(arr["samples"][:, :, 4:], truth[:, :, 4:])
    from PIL import Image

    with Image.open(res["png"]) as im:       # 3 rows of observation + 2 samples + truth
        assert im.size[0] > im.size[1]
    np.save(tmp_path / "bad.npy", np.ones((3, 3), bool))
    assert main(["inpaint", "--workdir", str(cwd), "--mask", str(tmp_path / "bad.npy"), "--n", "1"]) == 1
    assert "shape (3, 3)" in capsys.readouterr().err
    assert main(["inpaint", "--workdir", str(cwd), "--guidance", "-1", "--n", "1"]) == 1
    err = capsys.readouterr().err
    assert "guidance scale must be" in err and len(err.strip().splitlines()) == 1
    assert main(["colorize", "--workdir", str(cwd), "--n", "1"]) == 1
    err = capsys.readouterr().err
    assert "RGB" in err and len(err.strip().splitlines()) == 1


def test_checkpoints_from_before_class_labels_still_resume():
    from score_sde.training.checkpoint import ConfigMismatchError, check_config_compatible

    old = score_sde.config.default_config().to_dict()
    del old["model"]["num_classes"], old["training"]["label_dropout"]
    now = score_sde.config.default_config().to_dict()
    check_config_compatible(old, now)                      # absent num_classes means 0: compatible
    now["model"]["num_classes"] = 10
    with pytest.raises(ConfigMismatchError, match="num_classes"):
        check_config_compatible(old, now)
    old.pop("schema_version", None)                        # a 0.1.0 config: still refused
    with pytest.raises(ConfigMismatchError, match="num_classes"):
        check_config_compatible(old, now)
    del old["model"]["sigma_data"]                         # 0.1.0 had no sigma_data: it meant 0.5
    now["model"]["num_classes"] = 0
    check_config_compatible(old, now)
    now["model"]["sigma_data"] = 0.71
    with pytest.raises(ConfigMismatchError, match="sigma_data"):
        check_config_compatible(old, now)


def test_cli_colorize_on_a_tiny_rgb_folder(tmp_path, capsys):
    from PIL import Image

    g = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 4)):
        (tmp_path / "imgs" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(g.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / split / f"{i}.png")
    wd = tmp_path / "run"
    args = [f"--config.data.root={tmp_path / 'imgs'}", "--config.data.dataset=folder", "--config.data.num_channels=3",
            "--config.data.image_size=8", "--config.model.num_classes=0", "--config.training.label_dropout=0.0"]
    assert main(["train", "--config", "vp/digits_conditional", "--workdir", str(wd), "--no-progress", *TINY,
                 *args]) == 0
    capsys.readouterr()
    assert main(["colorize", "--workdir", str(wd), "--n", "2", "--samples-per", "3"]) == 0
    res = _last_json(capsys)
    assert res["max_grey_change"] < 1e-5            # the grey level of every colouring is the observation's
    arr = np.load(res["npz"])
    assert arr["samples"].shape == (6, 3, 8, 8) and arr["truth"].shape == (2, 3, 8, 8)
    grey = lambda a: a.mean(1)                     # noqa: E731
    assert np.allclose(grey(arr["samples"]), np.repeat(grey(arr["truth"]), 3, axis=0), atol=1e-5)
    assert arr["samples"].std(1).mean() > 1e-3      # but the colours are not all grey
