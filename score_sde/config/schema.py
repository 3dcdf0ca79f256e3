"""The experiment config: its schema and defaults, config files, command-line overrides, run configs.

Configs are ``ml_collections.ConfigDict`` trees with these sections (see :func:`default_config` for
every key and its meaning):

``sde``       name ('vpsde' | 'subvpsde' | 'vesde' | a key of ``factories.SCHEDULE_SDES``: 'cosine' | 'edm' |
              'rectified_flow' | 'discrete'), beta_min, beta_max, sigma_min, sigma_max, N, and the
              schedule keys T, cosine_s, edm_sigma_min, edm_sigma_max, betas
``data``      dataset, root, image_size, num_channels, centered, uniform_dequantization, random_flip
``model``     name (a key of ``score_sde.models.MODELS``), output, time_label, label_scale, ema_rate,
              and the backbone's own constructor arguments (reference names: nf, ch_mult, ...)
``training``  batch_size, n_iters, loss weighting/time sampling, logging and checkpoint frequencies
``optim``     lr, beta1, beta2, eps, weight_decay, warmup, grad_clip
``sampling``  method (a key of ``score_sde.sampling.SOLVERS``), steps, eps, n, batch_size
``eval``      likelihood split/batch size/solver tolerances, sample-metric settings
``seed``      the global seed
``schema_version``  the version of this layout (:data:`SCHEMA_VERSION`), saved with every run

Config files are plain Python files defining ``get_config()``; :func:`load_config` imports one
by path (no absl flags) -- **a Python config file is code: it runs with your permissions, so load
only files you trust** -- and applies command-line overrides such as
``--config.training.batch_size=64`` with type checks; unknown keys are rejected with the nearest
valid names. A ``.json`` file (a run's saved ``config.json``) is read as data and runs nothing
(:func:`config_from_json`). :func:`load_run_config` reads the config a run saved in
``WORKDIR/config.json``.

Schema versions: version 1 is what score_sde 0.1.0 wrote (no ``schema_version`` key); version 2
adds the key. A saved config of an older version is migrated (:func:`migrate_config_dict`: missing
keys take their defaults); in every version a key the schema does not know is an error naming
the nearest valid keys (a typo in a hand-edited ``config.json`` would otherwise be ignored).
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from ml_collections import ConfigDict

__all__ = ["default_config", "load_config", "apply_overrides", "parse_override_args", "config_keys",
           "CONFIG_DIR", "find_config", "list_configs", "load_run_config", "SCHEMA_VERSION", "migrate_config_dict",
           "config_from_json"]

#: the version of the config layout written into every saved config (``schema_version``);
#: 1 = score_sde 0.1.0 (which wrote no version key)
SCHEMA_VERSION = 2

#: the ``configs/`` directory of a source checkout (None when installed without it)
CONFIG_DIR: Optional[Path] = next((p for p in [Path(__file__).resolve().parents[2] / "configs"] if p.is_dir()),
                                  None)


# ---------------------------------------------------------------------------------------------
# the default config
# ---------------------------------------------------------------------------------------------

def default_config() -> ConfigDict:
    """Every key a config may set, with defaults (a VP SDE on the 8x8 digits with an MLP)."""
    c = ConfigDict()
    c.schema_version = SCHEMA_VERSION   # layout version of saved configs (see the module docstring)
    c.seed = 42

    c.sde = sde = ConfigDict()
    sde.name = "vpsde"            # 'vpsde' | 'subvpsde' | 'vesde'
    sde.beta_min = 0.1            # VP / sub-VP: beta(t) = beta_min + t (beta_max - beta_min)
    sde.beta_max = 20.0
    sde.sigma_min = 0.01          # VE: noise levels sigma_min (sigma_max / sigma_min)^t
    sde.sigma_max = 50.0
    sde.N = 1000                  # discrete steps (DDPM / SMLD tables, discrete losses)
    # schedules of score_sde.schedules (config.factories.SCHEDULE_SDES)
    sde.T = 0.0                   # end time; 0: the SDE's default (cosine 0.9946, rectified_flow 0.99, discrete 1)
    sde.cosine_s = 0.008          # cosine: improved DDPM's offset s
    sde.edm_sigma_min = 0.002     # edm: t = sigma runs over [edm_sigma_min, edm_sigma_max]
    sde.edm_sigma_max = 80.0
    sde.betas = "ddpm_linear"     # discrete: 'ddpm_linear' | 'iddpm_cosine' (N steps) or a .pt/.npy/.txt file of betas

    c.data = d = ConfigDict()
    d.dataset = "digits"          # one of score_sde.data.DATASETS
    d.root = ""                   # directory for cifar10 / folder
    d.image_size = 8
    d.num_channels = 1
    d.centered = True             # images in [-1, 1] (else [0, 1])
    d.uniform_dequantization = True
    d.random_flip = False

    c.model = m = ConfigDict()
    m.name = "mlp"                # backbone for score_sde.models.get_model: 'mlp' | 'ddpm' | 'ncsnpp'
    m.output = "eps"              # what the net predicts: 'eps' | 'score' | 'x0' | 'edm' | 'v' | 'flow'
    m.time_label = "t"            # 't' | 'timestep' | 'sigma' | 'log_sigma' | 'edm'
    m.label_scale = 1.0           # labels = label_scale * t for time_label='t' (999 for DDPM nets)
    m.ema_rate = 0.999
    m.sigma_data = 0.5            # EDM's data std (output='edm', weighting='edm'); <= 0: measured from the train split
    m.num_classes = 0             # class labels the backbone takes (0: unconditional; digits: 10)
    # MLP keys (see score_sde.models.MLP); image backbones use the paper's keys instead
    m.hidden = 512
    m.num_blocks = 4
    m.embedding_type = "fourier"
    m.embedding_dim = 128
    m.fourier_scale = 16.0
    m.layer_norm = True
    m.dropout = 0.0
    m.nonlinearity = "swish"
    m.pixel_head = 0              # width of the MLP's per-element head (0: none; the demo uses 32)
    m.pixel_context = 4           # trunk features per element that the head sees
    m.pixel_head_clip = 3.0       # the head's input x_i clamped to [-c, c] (0: unclamped; models.MLP)
    m.input_fourier = ""          # MLP: input Fourier features' exponents n, e.g. "4,5,6,7" ("" off; models.MLP)
    m.input_contrast = False      # MLP: also feed the contrast-normalised input, its mean and log std (models.MLP)

    c.training = t = ConfigDict()
    t.batch_size = 128
    t.n_iters = 20000
    t.weighting = "likelihood"    # DSM weighting: 'sigma2' | 'likelihood' | 'none' | 'flow'
    t.time_sampling = "importance"  # 'uniform' | 'importance' | 'discrete'
    t.loss = "dsm"                # 'dsm' (continuous) | 'ddpm' | 'smld' (discrete special cases)
    t.reduce_mean = False         # mean instead of sum over data dimensions
    t.eps = 1e-5                  # smallest training time
    t.p_mean = -1.2               # time_sampling='lognormal': log(sigma/alpha) ~ N(p_mean, p_std^2) (EDM)
    t.p_std = 1.2
    t.log_freq = 100
    t.snapshot_freq = 5000        # checkpoint every this many steps (and at the end)
    t.snapshot_sampling = True    # write a sample grid at every checkpoint
    t.mixed_precision = "no"      # 'no' | 'bf16' | 'fp16' (GPU only)
    t.label_dropout = 0.0         # class-conditional models: P(label -> null class) (classifier-free guidance)

    c.optim = o = ConfigDict()     # Adam (score_sde.training.train)
    o.lr = 2e-4
    o.beta1 = 0.9
    o.beta2 = 0.999
    o.eps = 1e-8
    o.weight_decay = 0.0
    o.warmup = 500                # linear learning-rate warmup steps
    o.decay = "none"              # after the warmup: 'none' (constant lr) | 'cosine' (down to decay_final * lr)
    o.decay_final = 0.1           # decay='cosine': lr of the last step as a fraction of lr
    o.grad_clip = 1.0             # max global gradient norm (<= 0: off)

    c.sampling = s = ConfigDict()
    s.method = "euler_maruyama"   # a key of score_sde.sampling.SOLVERS
    s.steps = 100
    s.eps = 0.0                   # end time; <= 0 means the SDE's sampling_eps
    s.snr = 0.0                   # Langevin corrector snr for the pc family; <= 0: the solver's own (0.16)
    s.n = 64                      # number of samples written by `score-sde sample`
    s.batch_size = 256

    c.eval = e = ConfigDict()
    e.split = "test"
    e.batch_size = 500
    e.num_points = 10000          # fresh points for likelihood on toy data
    e.rtol = 1e-5                 # probability-flow ODE tolerances for likelihoods
    e.atol = 1e-5
    e.divergence = "auto"         # 'exact' | 'hutchinson' (one Rademacher probe, unbiased) | 'auto' (exact if D<=64)
    e.n_probes = 1                # Hutchinson probes per example
    e.num_samples = 1000          # samples for metrics in `score-sde evaluate`
    return c


# ---------------------------------------------------------------------------------------------
# loading and overrides
# ---------------------------------------------------------------------------------------------

def find_config(name: Union[str, Path]) -> Path:
    """Resolve a config file: an existing path, or a name such as ``vp/digits`` under ``configs/``."""
    p = Path(name).expanduser()
    if p.is_file():
        return p
    tried = [str(p)]
    if CONFIG_DIR is not None:
        for cand in (CONFIG_DIR / p, CONFIG_DIR / p.with_suffix(".py")):
            if cand.is_file():
                return cand
            tried.append(str(cand))
    shipped = ", ".join(list_configs()) or "(configs/ not found)"
    raise FileNotFoundError(f"config file not found: tried {tried}. Pass a path to a Python file defining "
                            f"get_config(), or one of: {shipped}")


def list_configs() -> List[str]:
    """Names (``vp/digits``, ...) of the config files shipped in ``configs/``."""
    if CONFIG_DIR is None:
        return []
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.glob("*/*.py")
                  if not p.name.startswith("_"))


def load_config(path: Union[str, Path, None] = None, overrides: Sequence[str] = ()) -> ConfigDict:
    """Import a config file by path (or shipped name) and apply ``overrides``.

    Args:
        path: a Python file with ``get_config() -> ConfigDict`` (or ``vp/digits`` etc.; the file
            is executed: load only files you trust), or a ``.json`` config (a run's saved
            ``config.json``, read as data by :func:`config_from_json`); None gives
            :func:`default_config`.
        overrides: strings ``"training.batch_size=64"`` (an optional ``--config.`` / ``config.``
            prefix is stripped).
    """
    if path is None:
        cfg = default_config()
    elif str(path).lower().endswith(".json"):
        cfg = config_from_json(find_config(path))
    else:
        file = find_config(path)
        mod_name = f"_score_sde_config_{abs(hash(str(file.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, file)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise ValueError(f"config file {file} failed to import: {e!r}") from e
        if not hasattr(module, "get_config"):
            raise ValueError(f"config file {file} must define get_config() returning an ml_collections.ConfigDict")
        cfg = module.get_config()
        if not isinstance(cfg, ConfigDict):
            raise ValueError(f"get_config() in {file} returned {type(cfg).__name__}, expected ml_collections.ConfigDict")
    return apply_overrides(cfg, overrides)


def config_keys(cfg: ConfigDict, prefix: str = "") -> List[str]:
    """All dotted leaf keys of a config."""
    out = []
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, ConfigDict):
            out.extend(config_keys(v, key + "."))
        else:
            out.append(key)
    return out


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _parse_value(key: str, text: str, current):
    """Parse ``text`` into the type of ``current`` (ValueError naming the key otherwise)."""
    def fail(what):
        raise ValueError(f"--config.{key}={text!r}: expected {what} (current value {current!r})")

    if isinstance(current, bool):
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        fail("a boolean (true/false)")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                fail("an integer")
            if f.is_integer():
                return int(f)
            fail("an integer")
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            fail("a number")
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            v = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            v = tuple(s.strip() for s in text.split(",") if s.strip())
        if isinstance(v, (int, float, str)):
            v = (v,)
        if not isinstance(v, (tuple, list)):
            fail("a tuple like (1,2,2)")
        if current and all(isinstance(a, bool) for a in current) is False:
            elem_type = type(current[0])
            try:
                v = tuple(elem_type(a) if elem_type in (int, float) else a for a in v)
            except (TypeError, ValueError):
                fail(f"a tuple of {elem_type.__name__}")
        return type(current)(v)
    # None or other types: a Python literal if it parses, else the string
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(cfg: ConfigDict, overrides: Sequence[str]) -> ConfigDict:
    """Set ``"a.b.c=value"`` overrides on ``cfg`` (in place, returned), parsing by the current type.

    Unknown keys raise ValueError listing the nearest valid keys.
    """
    keys = config_keys(cfg)
    for item in overrides:
        item = str(item)
        for pre in ("--config.", "config."):
            if item.startswith(pre):
                item = item[len(pre):]
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like --config.section.key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in keys:
            near = difflib.get_close_matches(key, keys, n=5, cutoff=0.5)
            leaf = key.rsplit(".", 1)[-1]
            near += [k for k in keys if k.rsplit(".", 1)[-1] == leaf and k not in near]
            hint = f"; did you mean {', '.join(near)}?" if near else f"; valid keys start with {sorted({k.split('.')[0] for k in keys})}"
            raise ValueError(f"unknown config key {key!r}{hint}")
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = _parse_value(key, text, node[leaf])
    return cfg


def parse_override_args(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Split command-line words into (config overrides, the rest).

    Accepts ``--config.a.b=v`` and ``--config.a.b v``.
    """
    overrides, rest = [], []
    i = 0
    argv = list(argv)
    while i < len(argv):
        a = argv[i]
        if a.startswith("--config."):
            if "=" in a:
                overrides.append(a)
            elif i + 1 < len(argv):
                overrides.append(f"{a}={argv[i + 1]}")
                i += 1
            else:
                raise ValueError(f"{a} needs a value: {a}=VALUE")
        else:
            rest.append(a)
        i += 1
    return overrides, rest


def _tuples(v):
    """JSON lists back to tuples (configs hold tuples)."""
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    return v


def _model_keys(model: dict) -> set:
    """Keys a ``model`` section may hold: the default (MLP) keys, the named backbone's constructor
    parameters (every backbone's when the name is unknown), the checked reference keys, and the
    reference configs' copies of the SDE parameters."""
    import inspect

    from ..models import MODELS
    from .networks import CHECKED_KEYS

    name = str(model.get("name", "")).lower()
    classes = [MODELS[name]] if name in MODELS else list(MODELS.values())
    keys = set(default_config().model.keys()) | set(CHECKED_KEYS) | set(default_config().sde.keys())
    keys |= {"num_scales", "event_shape"}
    for cls in classes:
        keys |= {p for p in inspect.signature(cls.__init__).parameters if p != "self"}
    return keys


def _unknown_keys(saved: dict) -> List[Tuple[str, List[str]]]:
    """``(dotted key, near matches)`` for every key of ``saved`` the schema does not know."""
    ref = default_config().to_dict()
    out = []
    for k, v in saved.items():
        if k not in ref:
            out.append((k, difflib.get_close_matches(k, list(ref), n=3, cutoff=0.6)))
        elif isinstance(ref[k], dict):
            if not isinstance(v, dict):
                out.append((k, [f"{k} must be a section (a JSON object)"]))
                continue
            valid = _model_keys(v) if k == "model" else set(ref[k])
            for kk in v:
                if kk not in valid:
                    near = difflib.get_close_matches(kk, sorted(valid), n=3, cutoff=0.6)
                    out.append((f"{k}.{kk}", [f"{k}.{n}" for n in near]))
    return out


def migrate_config_dict(saved: dict, where: str = "config") -> dict:
    """A saved config (plain dict, any :data:`SCHEMA_VERSION` up to the current) in the current layout.

    Version 1 (score_sde 0.1.0, no ``schema_version`` key) had the same keys: migrating adds the
    version. Then keys added to the defaults since the config was written take their default
    values (every section but ``model``, whose keys depend on the backbone; an MLP's
    ``pixel_head_clip`` takes 0, the unclamped head such runs trained). Raises ValueError for a
    version newer than this package, or for keys the schema does not know (naming near matches).
    """
    if not isinstance(saved, dict):
        raise ValueError(f"{where} must hold a JSON object (a config), got {type(saved).__name__}")
    saved = dict(saved)
    version = saved.pop("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{where}: schema_version must be a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ValueError(f"{where} has schema_version {version}, newer than this score_sde understands "
                         f"({SCHEMA_VERSION}): upgrade score_sde")
    # migrations, oldest first: version 1 -> 2 renamed nothing (it adds the version key only)
    bad = _unknown_keys(saved)
    if bad:
        parts = [f"{k!r}" + (f" (did you mean {', '.join(n)}?)" if n else "") for k, n in bad[:6]]
        raise ValueError(f"{where} has unknown config keys: {'; '.join(parts)}; fix or remove them")
    merged = default_config().to_dict()
    for k, v in saved.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict) and k != "model":
            merged[k].update(v)
        else:
            merged[k] = v
    model = merged.get("model")
    if isinstance(model, dict) and model.get("name") == "mlp" and "pixel_head_clip" not in model:
        model["pixel_head_clip"] = 0.0      # written before the clamp existed: the head it trained had none
    merged["schema_version"] = SCHEMA_VERSION
    return merged


def config_from_json(path) -> ConfigDict:
    """Read a JSON config (a run's ``config.json``) as data -- nothing in it is executed -- and
    migrate it (:func:`migrate_config_dict`)."""
    path = Path(path)
    try:
        saved = _tuples(json.loads(path.read_text(encoding="utf-8")))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a JSON config (not UTF-8 text: {e.reason})") from None
    except ValueError as e:
        raise ValueError(f"{path} is not a valid JSON config: {e}") from None
    return ConfigDict(migrate_config_dict(saved, where=str(path)))


def load_run_config(workdir, config: Optional[str] = None, overrides: Sequence[str] = ()) -> ConfigDict:
    """The config of a run: ``config`` (a file or shipped name) if given, else ``WORKDIR/config.json``
    (migrated from older schema versions; keys added to the defaults since the run was trained
    take their default values; unknown keys are an error); then ``overrides``."""
    if config:
        return load_config(config, overrides)
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train first (score-sde train --config ... --workdir {workdir}) "
                                f"or pass --config")
    return apply_overrides(config_from_json(path), overrides)
