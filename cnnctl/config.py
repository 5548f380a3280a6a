"""Typed recipe configuration: TOML files -> dataclasses, with ``--set`` overrides.

A recipe is data, never code. Unknown keys and values of the wrong type are
errors that name the key and list the valid ones. The resolved recipe is
written back as TOML into every run directory.

Layout of a recipe (every section optional; missing keys keep the defaults)::

    base = "default.toml"        # optional: a recipe this one overrides
    [data]      source, path, val_split, cache, augment, ...
    [model]     name, plus keyword arguments of that architecture
    [optimizer] name, lr, momentum, weight_decay, nesterov, clipnorm
    [schedule]  name, warmup_epochs, step_epochs, gamma, ...
    [train]     epochs, batch_size, seed, precision, strategy, ...
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cnnctl.errors import CnnctlError

PIPELINES_DIR = Path(__file__).resolve().parent.parent / "pipelines"


@dataclass
class DataConfig:
    """Where the images come from and how they are fed."""

    source: str = "auto"          # registry name; "auto" picks from `path`
    path: str = ""                # folder, CSV, TFRecord dir, or "" for the bundled set
    val_split: float = 0.1        # fraction of train held out, stratified, seeded
    cache: bool = True            # decode files once into memory when they fit
    cache_limit_gb: float = 4.0   # above this the pipeline streams from disk instead
    skip_bad: bool = False        # skip unreadable images instead of stopping
    augment: list[str] = field(default_factory=list)  # "flip", "crop", "inception_crop", "mixup", "pca_color"; segment: "flip", "vflip"
    crop_padding: int = 4         # pixels of zero padding for "crop"
    # "inception_crop" (Szegedy et al. 2015 sec. 6): a patch of crop_area of the image's area with
    # aspect ratio (width / height) in crop_ratio, resized to the model's input. It crops the
    # full-size image when resize_short is set (evaluation then uses eval_resize_short), otherwise
    # the image at the model's size.
    crop_area: list[float] = field(default_factory=lambda: [0.08, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    mixup_alpha: float = 0.2
    pca_std: float = 0.1          # AlexNet's colour augmentation: alpha ~ N(0, pca_std)
    # ImageNet-style scale augmentation for image files: [S] resizes every training image's
    # shorter side to S (AlexNet: 256), [Smin, Smax] to a random S per image (VGG's scale
    # jittering: 256-512), then takes a random crop of the model's size. [] = off (the
    # image is resized to the model's size). Evaluation resizes to eval_resize_short
    # (0 = the mean of resize_short, VGG's Q = (Smin + Smax) / 2) and takes the centre crop.
    resize_short: list[int] = field(default_factory=list)
    eval_resize_short: int = 0
    # Fashion-MNIST scenes (--data scenes:grid, shared/SCENES.md): how many train / val / test scenes
    # ([] = 10000, 1000, 1000) and the seed they are a function of.
    scene_counts: list[int] = field(default_factory=list)
    scene_seed: int = 0
    # scenes:free for segmentation: [fewest, most] items in each training scene ([] = SCENES.md's 1-5;
    # validation and test scenes always keep 1-5). More items per canvas show the network more items
    # per second of training.
    scene_items: list[int] = field(default_factory=list)


@dataclass
class ModelConfig:
    """The architecture; every other key is a keyword argument of its builder."""

    name: str = "fashion_cnn"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    name: str = "adamw"           # sgd | adam | adamw | rmsprop | adagrad
    lr: float = 3e-3
    momentum: float = 0.9         # SGD momentum, RMSProp momentum
    nesterov: bool = False
    weight_decay: float = 1e-4    # sgd: L2 inside the momentum (as in the papers); others: decoupled
    clipnorm: float = 0.0         # 0 = off; global-norm clipping otherwise
    epsilon: float = 1e-7
    beta_1: float = 0.9           # adam / adamw (DCGAN: 0.5; WGAN-GP: 0.0)
    beta_2: float = 0.999         # adam / adamw (WGAN-GP: 0.9)


@dataclass
class ScheduleConfig:
    name: str = "cosine"          # constant | step | plateau | cosine | piecewise
    warmup_epochs: float = 0.0
    step_epochs: int = 30         # step: multiply by gamma every step_epochs
    gamma: float = 0.1
    boundaries: list[float] = field(default_factory=list)  # piecewise: epochs
    values: list[float] = field(default_factory=list)      # piecewise: lrs (len+1)
    patience: int = 2             # plateau: epochs without improvement
    min_lr: float = 0.0
    monitor: str = "val_loss"     # plateau: what to watch


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 128         # global batch; per replica = batch_size / replicas
    seed: int = 0
    precision: str = "auto"       # auto | float32 | mixed_bfloat16 | mixed_float16
    precision_why: str = ""       # written by the engine into the run's config.toml: why auto chose `precision`
    jit: bool = False
    deterministic: bool = False
    strategy: str = "auto"        # auto | default | mirrored | multiworker
    cluster: str = "tf_config"    # where a multi-worker job's layout comes from: tf_config (TF_CONFIG) | slurm
    devices: int = 0              # >0: that many logical CPU devices (for mirrored)
    checkpoint_every: int = 0     # steps between resume backups; 0 = each epoch only
    monitor: str = ""             # what best.keras tracks; "" = the task's (classify: val_accuracy)
    label_smoothing: float = 0.0
    name: str = ""                # run name; default <model>-<data>-<time>
    out_dir: str = "checkpoints"


@dataclass
class FinetuneConfig:
    """Start from a pretrained network (``cnnctl finetune``); empty ``freeze`` = ordinary training."""

    freeze: str = ""              # conv | features | partial:N | until:LAYER | none
    from_run: str = ""            # a cnnctl run directory as the pretrained network ...
    backbone: str = ""            # ... or a registered model with pretrained weights
    weights: str = "imagenet"     # imagenet, or a .pth / .weights.h5 / .keras file
    body_lr_scale: float = 0.1    # lr of unfrozen pretrained layers relative to the new head
    keep_head: bool = False       # keep the pretrained classifier (same classes) instead of a new one


@dataclass
class CaptionConfig:
    """Captioning (task = "caption"): the frozen encoder, the text and the decoding."""

    encoder: str = "efficientnet_lite0:imagenet"  # NAME:imagenet, or a cnnctl run folder
    image_size: int = 224         # the encoder's input side
    grid: int = 1                 # the feature map pooled to grid x grid cells (1 = one image vector)
    regions: str = "map"          # map: pool the encoder's feature map; cells: the whole encoder on each cell
    min_count: int = 5            # rarer training words become <unk> (Karpathy: 5)
    max_words: int = 20           # longer training captions are cut; decoding stops here
    beam: int = 3                 # beam width of evaluation and `cnnctl caption` (1 = greedy)
    length_norm: bool = False     # rank finished beams by log-probability per word
    allow_unk: bool = False       # let decoding write <unk> (by default it never does)
    fluent: bool = False          # decoding never writes a word twice in a row, nor ends on a word that almost
    #                               never ends a training caption ("in", "and", "a": the vocabulary's rarely_last)
    train_encoder: bool = False   # fine-tune the encoder with the decoder (at finetune.body_lr_scale x lr)
    word_vectors: str = ""        # "glove100": word embeddings start from GloVe 100d (needs model.embed_dim = 100)
    flip: bool = False            # each epoch, each training pair sees its image or its mirror image (features
    #                               of both computed once): im2txt's random flip, kept with a frozen encoder
    views: int = 0                # K > 0: each epoch, each training pair sees its image or one of K distorted
    #                               views (im2txt's crop, flip and colour distortions; features computed once)
    consensus: int = 0            # k > 0: of the beam's finished captions, choose the one agreeing most (CIDEr-D)
    #                               with the captions of the image's k nearest training images (Devlin et al. 2015)
    consensus_weight: float = 0.0  # + this x the candidate's log-probability per token in that choice
    val_images: int = 1000        # validation images captioned (as `beam`) after each epoch for val_bleu4 and
    #                               val_cider_d, the default monitor; 0 = none (then pass train.monitor = "val_loss")


@dataclass
class GenerateConfig:
    """GANs (task = "generate"): how the samples are scored and shown."""

    eval_samples: int = 5000      # generated images scored after each epoch (FID, KID, coverage); 0 = none
    final_samples: int = 10000    # generated images scored for metrics.json
    inception_samples: int = 0    # samples scored at the end in Inception pool3 space (standard FID/KID;
    #                               ~0.12 s each here, plus 2x as many real images once); 0 = none
    judge: str = ""               # a classify run whose features score the samples; "" = cnnctl trains one (cached)
    judge_epochs: int = 4         # epochs of that classifier
    grid: int = 10                # samples/epoch-NNN.png shows grid x grid images from fixed noise


@dataclass
class SegmentConfig:
    """Segmentation (task = "segment"): the loss weights, how training windows are drawn, and how the
    network's scores become labels."""

    weight_map: bool = False      # U-Net's weight map (sec. 3): class balance + w0 exp(-(d1 + d2)^2 / 2 sigma^2)
    class_balance: bool = False   # w_c: weight each class by n / (K n_c) (implied by weight_map)
    w0: float = 10.0
    sigma: float = 5.0            # pixels
    tiles_per_epoch: int = 0      # 0 = the windows that tile every image; N = N random windows per epoch
    elastic_sigma: float = 10.0   # data.augment "elastic": std (px) of the 3x3 grid's displacements (sec. 3.1)
    # how scores become labels, for the run's test scores and for `cnnctl segment` (cnnctl.segmenter.Decoding):
    tta: str = "none"             # "flip": the mean softmax of the image and its mirror image
    vote: str = "pixels"          # "objects": each connected foreground region takes one class, its most probable
    instances: str = "classes"    # objects (instance scores, --instances): components of each class, or "foreground"


@dataclass
class DetectConfig:
    """Detection (task = "detect"): images larger than the network's input (``cnnctl.detection.tiles``)."""

    tile: bool = False            # cut large images into input-sized tiles instead of resizing them
    tile_overlap: int = 32        # pixels consecutive tiles share at least: more than the largest object


@dataclass
class Config:
    task: str = ""                # classify, ...; "" = the task the model's registry entry names
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        model = d.pop("model")
        d["model"] = {"name": model["name"], **model["options"]}
        return d


CHOICES = {
    "optimizer.name": ("sgd", "adam", "adamw", "rmsprop", "adagrad"),
    "schedule.name": ("constant", "step", "plateau", "cosine", "piecewise"),
    "train.precision": ("auto", "float32", "mixed_bfloat16", "mixed_float16"),
    "train.strategy": ("auto", "default", "mirrored", "multiworker"),
    "train.cluster": ("tf_config", "slurm"),
    "segment.tta": ("none", "flip"),
    "segment.vote": ("pixels", "objects"),
    "segment.instances": ("classes", "foreground"),
}
POSITIVE = {"train.epochs", "train.batch_size", "caption.image_size", "caption.grid", "caption.min_count",
            "caption.max_words", "caption.beam",
            "generate.final_samples", "generate.judge_epochs", "generate.grid"}
NON_NEGATIVE = {"train.devices", "caption.views", "caption.consensus", "caption.consensus_weight",
                "train.checkpoint_every", "optimizer.lr", "optimizer.weight_decay",
                "optimizer.clipnorm", "schedule.warmup_epochs", "data.crop_padding",
                "data.eval_resize_short", "finetune.body_lr_scale",
                "generate.eval_samples", "generate.inception_samples", "segment.w0", "segment.sigma", "segment.elastic_sigma",
                "segment.tiles_per_epoch", "detect.tile_overlap"}


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check ``value`` against the annotation ``typ``; ints are accepted as floats."""
    origin = typing.get_origin(typ)
    if typ is Any:
        return value
    if origin is list:
        (item,) = typing.get_args(typ)
        if not isinstance(value, list):
            value = [value] if isinstance(value, (str, int, float)) else value
        if not isinstance(value, list):
            raise CnnctlError(f"{key} must be a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise CnnctlError(f"{key} must be a table, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CnnctlError(f"{key} must be a number, got {value!r}",
                              hint=f"e.g. --set {key}=0.1")
        return float(value)
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise CnnctlError(f"{key} must be an integer, got {value!r}", hint=f"e.g. --set {key}=10")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise CnnctlError(f"{key} must be true or false, got {value!r}", hint=f"e.g. --set {key}=true")
        return value
    if typ is str:
        if not isinstance(value, str):
            return str(value)
        return value
    return value


def _apply(cfg: Config, key: str, value: Any) -> None:
    """Set dotted ``key`` (``train.epochs``) on ``cfg`` with type checking."""
    parts = key.split(".")
    if parts in (["task"], ["task", "name"]):   # `task = "classify"` or `[task] name = "classify"`
        cfg.task = _coerce(key, value, str)
        return
    sections = {f.name for f in fields(Config) if f.name != "task"}
    if parts[0] == "base" and len(parts) == 1:
        return
    if parts[0] not in sections or len(parts) != 2:
        raise CnnctlError(
            f"unknown recipe key {key!r}",
            hint="keys are SECTION.NAME with SECTION one of " + ", ".join(sorted(sections))
            + " (e.g. train.epochs)")
    section, name = parts
    if section == "model":
        if name == "name":
            cfg.model.name = _coerce(key, value, str)
        else:
            cfg.model.options[name] = value  # checked against the builder's signature later
        return
    obj = getattr(cfg, section)
    hints = _field_types(type(obj))
    if name not in hints:
        import difflib
        close = difflib.get_close_matches(name, list(hints), n=1)
        raise CnnctlError(
            f"unknown recipe key {key!r}",
            hint=(f"did you mean {section}.{close[0]}? " if close else "")
            + f"valid keys in [{section}]: " + ", ".join(hints))
    setattr(obj, name, _coerce(key, value, hints[name]))


def validate(cfg: Config) -> Config:
    """Check value ranges and choices; return ``cfg``."""
    flat = cfg.to_dict()
    for key, choices in CHOICES.items():
        sect, _, name = key.partition(".")
        val = flat[sect][name] if name else flat[sect]
        if val not in choices:
            raise CnnctlError(f"{key} = {val!r} is not valid", hint="choose one of: " + ", ".join(choices))
    for key in POSITIVE | NON_NEGATIVE:
        sect, name = key.split(".")
        val = flat[sect][name]
        if (key in POSITIVE and val <= 0) or val < 0 or (isinstance(val, float) and not math.isfinite(val)):
            need = "a positive" if key in POSITIVE else "a non-negative"
            raise CnnctlError(f"{key} = {val!r} is out of range", hint=f"{key} must be {need} number")
    if not 0.0 <= cfg.data.val_split < 1.0:
        raise CnnctlError(f"data.val_split = {cfg.data.val_split} is out of range",
                          hint="use a fraction in [0, 1), e.g. 0.1")
    for aug in cfg.data.augment:
        if aug not in ("flip", "vflip", "elastic", "crop", "inception_crop", "mixup", "pca_color"):
            raise CnnctlError(f"unknown augmentation {aug!r} in data.augment",
                              hint="valid: flip, crop, inception_crop, mixup, pca_color; for segmentation flip, "
                                   "vflip, elastic; for detection flip")
    area, ratio = cfg.data.crop_area, cfg.data.crop_ratio
    if len(area) != 2 or not 0 < area[0] <= area[1] <= 1:
        raise CnnctlError(f"data.crop_area = {area} is not valid",
                          hint="use [min, max] fractions of the image's area with 0 < min <= max <= 1, e.g. [0.08, 1.0]")
    if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
        raise CnnctlError(f"data.crop_ratio = {ratio} is not valid",
                          hint="use [min, max] aspect ratios (width / height) with 0 < min <= max, e.g. [0.75, 1.3333]")
    if len(cfg.data.resize_short) > 2 or any(int(s) <= 0 for s in cfg.data.resize_short) or (
            len(cfg.data.resize_short) == 2 and cfg.data.resize_short[0] > cfg.data.resize_short[1]):
        raise CnnctlError(f"data.resize_short = {cfg.data.resize_short} is not valid",
                          hint="use [] (off), [S] or [Smin, Smax] with 0 < Smin <= Smax, e.g. [256, 512]")
    freeze = cfg.finetune.freeze
    if freeze and not (freeze in ("conv", "features", "none") or freeze.startswith(("partial:", "until:"))):
        raise CnnctlError(f"finetune.freeze = {freeze!r} is not valid",
                          hint="choose conv, features, partial:N, until:LAYER or none")
    if freeze.startswith("partial:") and not freeze[len("partial:"):].isdigit():
        raise CnnctlError(f"--freeze {freeze}: N must be a whole number of stages", hint="e.g. --freeze partial:3")
    return cfg


def resolve_recipe_path(recipe: str | os.PathLike) -> Path:
    """A path, or a bare name found in ``pipelines/`` (``resnet20-fashion``)."""
    p = Path(recipe)
    candidates = [p, PIPELINES_DIR / p, PIPELINES_DIR / f"{p}.toml"]
    for c in candidates:
        if c.is_file():
            return c
    available = sorted(x.stem for x in PIPELINES_DIR.glob("*.toml")) if PIPELINES_DIR.is_dir() else []
    raise CnnctlError(f"recipe {str(recipe)!r} not found",
                      hint="give a TOML file path or one of: " + ", ".join(available))


def _read_toml(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """Return [(path, table)] from the deepest ``base`` to ``path`` itself."""
    if path.resolve() in seen:
        raise CnnctlError(f"recipe {path} includes itself through 'base'")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise CnnctlError(f"cannot read recipe {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise CnnctlError(f"recipe {path} is not valid TOML: {e}",
                          hint="check quotes and [section] headers") from None
    chain: list[tuple[Path, dict]] = []
    base = table.get("base")
    if base is not None:
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        if not base_path.is_file():
            base_path = resolve_recipe_path(base)
        chain = _read_toml(base_path, seen + (path.resolve(),))
    return chain + [(path, table)]


def _flatten(table: dict[str, Any], where: str) -> list[tuple[str, Any]]:
    out = []
    for k, v in table.items():
        if k == "base":
            continue
        if isinstance(v, dict):
            for k2, v2 in v.items():
                out.append((f"{k}.{k2}", v2))
        elif k == "task":
            out.append((k, v))
        else:
            raise CnnctlError(f"{where}: top-level key {k!r} is not a section",
                              hint="put it under [data], [model], [optimizer], [schedule] or [train]")
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``train.epochs=30`` -> ("train.epochs", 30). Values parse as TOML, else as strings."""
    if "=" not in text:
        raise CnnctlError(f"malformed --set {text!r}", hint="use --set section.key=value, e.g. --set train.epochs=30")
    key, _, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not key:
        raise CnnctlError(f"malformed --set {text!r}: no key before '='")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def load(recipe: str | os.PathLike | None = None, overrides: list[str] | None = None,
         values: dict[str, Any] | None = None) -> Config:
    """A validated ``Config`` from a recipe (default: pipelines/default.toml), ``--set`` strings, then values."""
    cfg = Config()
    if recipe is None and not (PIPELINES_DIR / "default.toml").is_file():
        chain = []  # installed without the pipelines/ folder: Config() defaults are the default recipe
    else:
        chain = _read_toml(resolve_recipe_path(recipe if recipe is not None else "default"))
    for src, table in chain:
        for key, value in _flatten(table, str(src)):
            _apply(cfg, key, value)
    return apply_overrides(cfg, overrides, values)


def apply_overrides(cfg: Config, overrides: list[str] | None = None, values: dict[str, Any] | None = None) -> Config:
    for text in overrides or []:
        _apply(cfg, *parse_override(text))
    for key, value in (values or {}).items():
        _apply(cfg, key, value)
    return validate(cfg)


def from_dict(table: dict[str, Any]) -> Config:
    """Rebuild a ``Config`` from ``to_dict()`` output (a run's config.toml)."""
    cfg = Config()
    for key, value in _flatten(table, "config"):
        _apply(cfg, key, value)
    return validate(cfg)


def load_run_config(run_dir: str | os.PathLike) -> Config:
    """The resolved recipe saved in a run directory."""
    path = Path(run_dir) / "config.toml"
    try:
        return from_dict(tomllib.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise CnnctlError(f"{run_dir} is not a cnnctl run directory (no config.toml)",
                          hint="give a folder written by `cnnctl train`") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CnnctlError(f"cannot read {path}: {e}") from None


# ----------------------------------------------------------------------------- TOML writing

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if v is None:
        return '""'
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps(cfg: Config) -> str:
    """Serialise ``cfg`` as TOML that ``tomllib`` reads back to the same Config."""
    d = cfg.to_dict()
    lines = [f"task = {_toml_value(d.pop('task'))}"]
    for section, table in d.items():
        lines.append(f"\n[{section}]")
        for k, v in table.items():
            lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"
