"""The config schema (pydantic), YAML loading, dotted overrides and one-line validation errors.

Imports neither torch nor anything heavy, so `cnnlab --help` and config errors answer at once.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
import re
import select
import stat
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Sequence, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, ValidationInfo, field_validator, model_validator

from cnnlab.errors import ConfigError, shell_word
from cnnlab.named import config_path

# Image shape (C, H, W) and class count per dataset: models and validators derive sizes from these.
DATASET_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "toy": (1, 4, 4),  # the first article's two built-in 4x4 examples (no files)
}
DATASET_CLASSES: dict[str, int] = {"mnist": 10, "fashion-mnist": 10, "cifar10": 10, "toy": 2}
SEEDS_BELOW = 2**63  # seeds are int64: what torch's generators take
DEVICES = r"auto|cpu|cuda(:\d+)?"  # the device names a config (and --device) takes
DEVICE_NAMES = "auto, cpu, cuda, cuda:N"  # the same, as error messages list them


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # optimizer.lr=.inf would only fail later, as a NaN loss


# ---------------------------------------------------------------------------- data and transforms
class DatasetConfig(Strict):
    name: Literal["mnist", "fashion-mnist", "cifar10", "toy"] = "mnist"
    data_dir: str | None = None  # after --data-dir, before $CNNLAB_DATA_DIR and ./data; relative: to the working directory
    download: bool = True  # fetch through torchvision when the files are missing
    train_subset: StrictInt | None = Field(None, gt=0)  # first N training images (smoke runs)
    test_subset: StrictInt | None = Field(None, gt=0)  # first N test images


FLOAT32_TINY, FLOAT32_MAX = 1.1754944e-38, 3.4028235e38  # float32's smallest normal and largest numbers
NAME_MAX = 100  # characters of a run's, study's or sweep's name, which goes into its directory's name (and the
# names of files and cells after it), where a file system takes at most 255 bytes
WIDEST = 2**20  # units or channels in one layer (new configs): far above any study's (1,000), far below what overflowed torch (2**63)


class MeanStd(Strict):
    mean: list[StrictFloat]
    std: list[StrictFloat]

    @model_validator(mode="after")
    def _check(self):
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std must have the same length")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        # the images are float32: a std below its smallest normal number divides by 0 there, a mean past its largest is inf
        if any(not FLOAT32_TINY <= s <= FLOAT32_MAX for s in self.std) or any(abs(m) > FLOAT32_MAX for m in self.mean):
            raise ValueError(f"mean and std must fit float32, in which the images are normalized: std from {FLOAT32_TINY:.3g} to {FLOAT32_MAX:.3g}, |mean| up to {FLOAT32_MAX:.3g}")
        return self


class ShiftConfig(Strict):
    dx: StrictInt = 0  # pixels to the right (negative: left)
    dy: StrictInt = 0  # pixels down (negative: up)
    mode: Literal["roll", "zero"] = "roll"  # roll wraps around (np.roll), zero fills with black


class AugmentConfig(Strict):
    hflip: bool = False  # random horizontal flip, p=0.5
    grayscale: StrictFloat = Field(0.0, ge=0.0, le=1.0)  # probability of turning an image grayscale
    crop_padding: StrictInt = Field(0, ge=0)  # random crop of the original size after padding by N
    crop_padding_mode: Literal["constant", "reflect", "edge"] = "constant"  # the padding: black, mirrored edges (airbench), or the edge pixels repeated (Keras' fill_mode "nearest")
    translate: StrictInt = Field(0, ge=0)  # random translation by up to +-N pixels, zero fill
    mixup: StrictFloat = Field(0.0, ge=0.0)  # mixup alpha; 0 switches it off


class TransformConfig(Strict):
    normalize: Literal["dataset", "none"] | MeanStd = "dataset"
    normalize_test: bool = True  # false reproduces study D's bug: test images left unnormalized
    permute: bool = False  # one fixed random permutation of the pixels, same for every image
    permute_seed: StrictInt | None = Field(None, ge=-SEEDS_BELOW, lt=SEEDS_BELOW)  # seed of that permutation; default: the run's seed
    shift: ShiftConfig = ShiftConfig()  # fixed translation of every train and test image
    augment: AugmentConfig = AugmentConfig()  # random, training batches only

    def permutation_seed(self, run_seed: int) -> int:
        """The seed of the pixel permutation: permute_seed, else the run's."""
        return self.permute_seed if self.permute_seed is not None else run_seed


# ---------------------------------------------------------------------------- models
class FCModel(Strict):
    name: Literal["fc"]
    hidden: list[Annotated[StrictInt, Field(gt=0)]] = [8, 8]  # [8, 8]: study A; [1000]: study B


class CNNModel(Strict):
    name: Literal["cnn"]
    n_feature: StrictInt = Field(6, gt=0)  # channels of both conv layers; 6 -> 6,422 params on MNIST
    relu_first: bool = False  # conv-ReLU-pool as the study writes it; default pool-ReLU (same function, faster)


class LeNetModel(Strict):
    name: Literal["lenet"]
    activation: Literal["sigmoid", "tanh", "relu"] = "sigmoid"
    pooling: Literal["avg", "max"] = "avg"
    init: Literal["xavier", "default"] = "xavier"


class LeNet5ClassicModel(Strict):
    name: Literal["lenet5_classic"]  # tanh, 32x32 input (zero-padded MNIST), C5 with 120 maps


class TrashNetModel(Strict):
    name: Literal["trashnet"]


class KerasCNNModel(Strict):
    name: Literal["keras_cnn"]  # the classic Keras cifar10_cnn example
    dropout: bool = True
    init: Literal["keras", "default"] = "keras"  # keras: glorot-uniform weights, zero biases (Keras' defaults)


class FastNetModel(Strict):
    name: Literal["fastnet"]  # airbench-style fast CIFAR-10 net (configs/cifar10_fast.yaml)
    widths: list[Annotated[StrictInt, Field(gt=0)]] = Field([64, 256, 256], min_length=1)  # each conv group's channels
    bn_momentum: StrictFloat = Field(0.4, gt=0, le=1)  # PyTorch's convention (airbench writes 0.6 = 1 - this)
    scale: StrictFloat = Field(1 / 9, gt=0)  # multiplies the logits
    bn_eps: StrictFloat = Field(1e-12, gt=0)  # BatchNorm's epsilon (airbench's 1e-12; MNIST needs more, see mnist_fast.yaml)


class ToyModel(Strict):
    name: Literal["toy"]  # Conv2d(1,1,3)-MaxPool2-ReLU-Flatten-Linear(1,1)-Sigmoid, 12 params


ModelConfig = Annotated[
    Union[FCModel, CNNModel, LeNetModel, LeNet5ClassicModel, TrashNetModel, KerasCNNModel, FastNetModel, ToyModel],
    Field(discriminator="name"),
]


# ---------------------------------------------------------------------------- optimization
class SGDConfig(Strict):
    name: Literal["sgd"]
    lr: StrictFloat = Field(0.01, gt=0)
    momentum: StrictFloat = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: StrictFloat = Field(0.0, ge=0)
    bn_lr_scale: StrictFloat = Field(1.0, gt=0)  # BatchNorm parameters: lr x this, weight_decay / this

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self):
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum above 0 (e.g. optimizer.momentum=0.9)")
        return self


Beta = Annotated[StrictFloat, Field(ge=0, lt=1)]  # Adam's decay rates: torch refuses 1 and above


class AdamConfig(Strict):
    name: Literal["adam"]
    lr: StrictFloat = Field(1e-3, gt=0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: StrictFloat = Field(1e-8, gt=0)
    weight_decay: StrictFloat = Field(0.0, ge=0)


class AdamWConfig(Strict):
    name: Literal["adamw"]
    lr: StrictFloat = Field(1e-3, gt=0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: StrictFloat = Field(1e-8, gt=0)
    weight_decay: StrictFloat = Field(0.01, ge=0)


class RMSpropConfig(Strict):
    name: Literal["rmsprop"]
    lr: StrictFloat = Field(1e-2, gt=0)
    alpha: StrictFloat = Field(0.99, gt=0, lt=1)  # Keras calls it rho (0.9 there)
    eps: StrictFloat = Field(1e-8, gt=0)
    momentum: StrictFloat = Field(0.0, ge=0, lt=1)
    weight_decay: StrictFloat = Field(0.0, ge=0)


OptimizerConfig = Annotated[
    Union[SGDConfig, AdamConfig, AdamWConfig, RMSpropConfig], Field(discriminator="name")
]


class StepSchedule(Strict):
    name: Literal["step"]
    step_size: StrictInt = Field(gt=0)  # epochs between decays
    gamma: StrictFloat = Field(0.1, gt=0)


class CosineSchedule(Strict):
    name: Literal["cosine"]
    warmup_epochs: StrictFloat = Field(0.0, ge=0)
    min_lr_ratio: StrictFloat = Field(0.0, ge=0, le=1)


class OneCycleSchedule(Strict):
    name: Literal["onecycle"]  # linear warm-up to lr, then linear decay (start_ratio -> 1 -> end_ratio)
    pct_start: StrictFloat = Field(0.25, gt=0, lt=1)
    start_ratio: StrictFloat = Field(0.0, ge=0, le=1)  # the lr the warm-up rises from, as a fraction of lr
    end_ratio: StrictFloat = Field(0.0, ge=0, le=1)  # the lr the decay ends at, as a fraction of lr


class InverseTimeSchedule(Strict):
    name: Literal["inverse_time"]  # lr / (1 + decay * step): the `decay` argument of Keras 2's optimizers
    decay: StrictFloat = Field(gt=0)  # per batch


ScheduleConfig = Annotated[
    Union[StepSchedule, CosineSchedule, OneCycleSchedule, InverseTimeSchedule], Field(discriminator="name")
]


class LossConfig(Strict):
    name: Literal["cross_entropy", "bce"] = "cross_entropy"
    label_smoothing: StrictFloat = Field(0.0, ge=0, lt=1)


class TrainConfig(Strict):
    epochs: StrictInt = Field(1, gt=0)
    batch_size: StrictInt = Field(64, gt=0)
    eval_batch_size: StrictInt = Field(1000, gt=0)
    max_steps: StrictInt | None = Field(None, gt=0)  # cap on steps per epoch (smoke runs, benchmarks)
    amp: Literal["none", "bf16"] = "none"  # bf16 autocast on CUDA or CPU (fast on CPUs with bf16 instructions)
    channels_last: bool = True  # NHWC layout for conv models: faster on CPU (oneDNN) and on CUDA
    compile: bool = False  # torch.compile: on the CPU the whole training step (compiled_step.py), on CUDA the model
    cuda_graphs: bool = True  # on CUDA, replay each step's forward and backward as a CUDA graph (not with compile)
    deterministic: bool = True  # on CUDA, only cuDNN's deterministic algorithms: the same numbers on every run
    tta: Literal["none", "flip", "flip_translate"] = "none"  # test-time augmentation of the test split
    # false: evaluate as a test loop that never calls model.eval() does: BatchNorm normalizes each test
    # batch by its own statistics, dropout stays on (what study D's article reads, see the README)
    eval_mode: bool = True
    # CPU threads; default: 1 for steps under 10 MFLOP, else torch's choice. Bounded: torch asked for
    # 100,000 runs out of memory starting them, and dies in a segfault
    threads: StrictInt | None = Field(None, gt=0, le=1024)
    checkpoint: bool = True  # write a resumable checkpoint after every epoch
    tensorboard: bool = False  # also log each epoch's metrics for `tensorboard --logdir runs` (needs tensorboardX)


class Reported(Strict):
    """What the original article reported, shown beside cnnlab's result."""

    test_acc: StrictFloat | None = Field(None, ge=0, le=1)  # a fraction, like cnnlab's own: 0.716 for 71.6%
    # an article that gives a range over its epochs (study D's 52% to 61%): its low end, test_acc the high
    test_acc_low: StrictFloat | None = Field(None, ge=0, le=1)
    test_acc_permuted: StrictFloat | None = Field(None, ge=0, le=1)  # the same with transform.permute (study A)
    source: str = ""

    @model_validator(mode="after")
    def _range(self):
        if self.test_acc_low is not None and (self.test_acc is None or self.test_acc_low > self.test_acc):
            raise ValueError("reported.test_acc_low is the low end of a range: give test_acc, its high end, at least as large")
        return self


def article_test_acc(reported: dict | None, permuted: bool) -> float | None:
    """The article's test accuracy for a run's condition, from its summary's `reported`: a run with
    permuted pixels gets the article's permuted number (none where the article gives none); the
    high end of a range."""
    if not isinstance(reported, dict):
        return None
    return reported.get("test_acc_permuted" if permuted else "test_acc")


def article_range(reported: dict | None, permuted: bool) -> tuple[float | None, float | None]:
    """(low, high): article_test_acc, and the low end where the article gives a range over its
    epochs (None otherwise; never for permuted pixels, which no range is given for)."""
    high = article_test_acc(reported, permuted)
    return (reported.get("test_acc_low") if high is not None and not permuted else None), high


def article_text(reported: dict | None, permuted: bool, spec: str = ".1%") -> str | None:
    """article_test_acc as people read it: '96.0%', or '52.0-61.0%' for a range over the article's
    epochs; a value that is not a number (a summary edited by hand) as it is."""
    low, high = article_range(reported, permuted)
    if high is None:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (high, low or 0)):
        return str(high)
    return format(high, spec) if low is None else f"{format(low, spec).rstrip('%')}-{format(high, spec)}"


class Config(Strict):
    name: str = Field(min_length=1)
    seed: StrictInt = Field(0, ge=-SEEDS_BELOW, lt=SEEDS_BELOW)  # what torch's generators take
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    description: str = ""
    dataset: DatasetConfig = DatasetConfig()
    transform: TransformConfig = TransformConfig()
    model: ModelConfig
    optimizer: OptimizerConfig = SGDConfig(name="sgd")
    schedule: ScheduleConfig | None = None
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    reported: Reported | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str, info: ValidationInfo) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError("name may hold only letters, digits, '_', '-' and '.'")
        return fitting_name(v, info, "run")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(DEVICES, v):
            raise ValueError(f"unknown device {v!r}; valid: {DEVICE_NAMES}")
        return v

    @model_validator(mode="after")
    def _fits_dataset(self):
        c, h, w = DATASET_SHAPES[self.dataset.name]
        shift = self.transform.shift
        if abs(shift.dx) >= w or abs(shift.dy) >= h:
            raise ValueError(f"transform.shift ({shift.dx}, {shift.dy}) must be smaller than the {h}x{w} image")
        for name in ("crop_padding", "translate"):
            if getattr(self.transform.augment, name) >= w:
                raise ValueError(f"transform.augment.{name} must be smaller than the image width {w}")
        norm = self.transform.normalize
        if isinstance(norm, MeanStd) and len(norm.mean) not in (1, c):
            values = "1 mean/std value" if c == 1 else f"1 or {c} mean/std values"
            raise ValueError(f"transform.normalize needs {values} for {self.dataset.name}")
        if self.train.tta != "none" and self.transform.permute:
            # the test images are already scrambled: a flipped or moved copy of them is an image
            # the model never saw (training flips before permuting)
            raise ValueError("train.tta flips and moves images, which transform.permute has scrambled: use one or the other")
        if self.model.name == "toy" or self.loss.name == "bce":
            if self.loss.name != "bce":  # cross_entropy is the default: say what to change, not what was asked
                raise ValueError("model toy has one sigmoid output: it needs loss bce (set loss.name=bce)")
            if self.model.name != "toy":
                raise ValueError(f"loss bce needs one sigmoid output (model toy); model {self.model.name} has one per class: "
                                 "set loss.name=cross_entropy")
            if DATASET_CLASSES[self.dataset.name] != 2:
                raise ValueError(f"model toy (one sigmoid output, loss bce) needs a two-class dataset (toy), not {self.dataset.name}")
            if self.transform.augment.mixup:
                raise ValueError("transform.augment.mixup needs loss cross_entropy (soft targets over classes), not bce")
        return self

    @model_validator(mode="after")
    def _does_what_it_says(self, info: ValidationInfo):
        """Settings that would be ignored or never take effect. Refused in configs given now, not in
        the stored configs of runs, studies and sweeps that an earlier cnnlab accepted (they must stay
        resumable)."""
        if (info.context or {}).get("stored"):
            return self
        sizes = {"n_feature": [getattr(self.model, "n_feature", 0)], "hidden": getattr(self.model, "hidden", []), "widths": getattr(self.model, "widths", [])}
        for key, values in sizes.items():
            if any(v > WIDEST for v in values):
                raise ValueError(f"model.{key}: at most {WIDEST:,} units or channels a layer (got {max(values)})")
        if self.transform.augment.grayscale and DATASET_SHAPES[self.dataset.name][0] == 1:
            raise ValueError(f"transform.augment.grayscale turns colour images gray; {self.dataset.name}'s are gray already (it would do nothing)")
        if self.loss.name == "bce" and self.loss.label_smoothing:
            raise ValueError("loss.label_smoothing smooths cross_entropy's targets over classes; loss bce takes none")
        schedule = self.schedule
        if isinstance(schedule, CosineSchedule) and schedule.warmup_epochs >= self.train.epochs:
            raise ValueError(f"schedule.warmup_epochs ({schedule.warmup_epochs:g}) must be below train.epochs ({self.train.epochs}): "
                             "the rate would never reach optimizer.lr")
        return self


# ---------------------------------------------------------------------------- loading
_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")  # a decimal integer written with leading zeros: 0042, 0089
_YAML11_FLOAT = next(regex for tag, regex in yaml.SafeLoader.yaml_implicit_resolvers["1"] if tag == "tag:yaml.org,2002:float")


class _Loader(yaml.SafeLoader):
    """yaml's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last
    silently, so a second `model:` section would replace the first unseen), merging `<<:` keys as
    YAML has them, and reading numbers as they read (and as YAML 1.2 reads them), not as YAML 1.1,
    which PyYAML follows, does: 1e-3 is a number (1.1 needs a dot, 1.0e-3, or it is a string),
    seed: 0042 is 42 (1.1: octal, 34) and 0089 is 89 (1.1: the text 0089, no octal), and 1:30 is the
    text it is (1.1: base 60, 90: train.epochs=1:30 would train for 90 epochs)."""

    def construct_object(self, node, deep=False):
        """The base class's; a value its explicit tag cannot build (`!!int abc`, `!!bool maybe`), which
        PyYAML lets out as a ValueError or a KeyError, is a YAML error that says where it is."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError, AttributeError):
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise yaml.constructor.ConstructorError(None, None, f"{node.value!r} is not a valid {tag}", node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        """The base class's, from a copy of node with the pairs of the mappings it merges in. Not
        PyYAML's own merging (flatten_mapping), which rewrites the merged mappings, and lets the
        first or the last of two that give a key win by whether Python shares the key's string
        (`e`: the first, `epochs`: the last)."""
        if isinstance(node, yaml.MappingNode):
            node = yaml.MappingNode(node.tag, self._merged_pairs(node, ()), node.start_mark, node.end_mark)
        return yaml.constructor.BaseConstructor.construct_mapping(self, node, deep)

    def _merged_pairs(self, node, within: tuple) -> list:
        """node's pairs after those of the mappings it merges, so that building the mapping pair
        after pair lets the right one win: node's own, else the first merged mapping's that gives
        the key (`<<: [*a, *b]`: a's). within: the mappings node is merged into (a mapping that
        merges one of them, or itself, gets nothing more from it)."""
        merged, own, seen = [], [], set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                for source in value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]:
                    if not isinstance(source, yaml.MappingNode):
                        raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                                f"expected a mapping or list of mappings for merging, but found {source.id}", source.start_mark)
                    if source is not node and source not in within:
                        merged.append(self._merged_pairs(source, (*within, node)))
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice", key_node.start_mark)
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so in YAML's own words
                pass
            own.append((key_node, value_node))
        return [pair for pairs in reversed(merged) for pair in pairs] + own

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        if ":" in text:
            return text
        if _LEADING_ZERO.fullmatch(text):
            return int(text.replace("_", ""), 10)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node):
        text = self.construct_scalar(node)
        return text if ":" in text else super().construct_yaml_float(node)


class _Dumper(yaml.SafeDumper):
    """yaml's safe dumper, quoting a string that _Loader would read as a number: PyYAML writes the
    string 1e5 (a config named 1e5.yaml) bare, which would come back as 100000.0."""


class _StoredLoader(_Loader):
    """_Loader for a file cnnlab wrote itself (a run's config.yaml, a sweep's): a cnnlab from before
    0089 was the number 89, or 1e5 the number 100000.0, wrote the text 0089 or 1e5 bare (YAML 1.1's
    text), as a name or a description; here it stays that text. cnnlab writes no number with leading
    zeros, and its floats as YAML 1.1 reads them (1.0e-05), so nothing else differs."""

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        return text if _LEADING_ZERO.fullmatch(text) and re.search("[89]", text) else super().construct_yaml_int(node)

    def construct_yaml_float(self, node):
        text = self.construct_scalar(node)
        return super().construct_yaml_float(node) if _YAML11_FLOAT.match(text) else text


for _kind in (_Loader, _StoredLoader):  # the base class's table holds its own functions, not these overrides
    _kind.add_constructor("tag:yaml.org,2002:int", _kind.construct_yaml_int)
    _kind.add_constructor("tag:yaml.org,2002:float", _kind.construct_yaml_float)
for _kind in (_Loader, _Dumper):
    _kind.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*[eE][-+]?\d+|\.\d+([eE][-+]?\d+)?)$"), list("-+.0123456789"))
    _kind.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(f"^{_LEADING_ZERO.pattern}$"), list("-+0"))  # 1.1: 0089 is text


def _plain_as_text(tag: str, first_characters: str) -> None:
    """Make _Loader read the plain scalars YAML 1.1 resolves to tag as the text typed, as YAML 1.2 does."""
    for first in first_characters:
        _Loader.yaml_implicit_resolvers[first] = [r for r in _Loader.yaml_implicit_resolvers[first] if r[0] != tag]


# yes, no, on and off are YAML 1.1's booleans; as in YAML 1.2 they stay the words typed (a switch takes
# them, pydantic reading yes/on as true, as before: train.compile=yes), so that a number refused
# (transform.augment.grayscale=yes) is told "got 'yes'", not "got True"; the dumper still quotes them
_plain_as_text("tag:yaml.org,2002:bool", "yYnNoO")
# a date (2024-05-01) is YAML 1.1's timestamp, which no key takes: name=2024-05-01 was refused as "got
# datetime.date(2024, 5, 1)", and an impossible one (2024-02-30) ended in a traceback; the dumper still quotes it
_plain_as_text("tag:yaml.org,2002:timestamp", "0123456789")
# a plain = is YAML 1.1's "value key", a tag no safe loader constructs: a key `=:` ended in PyYAML's "could
# not determine a constructor for the tag 'tag:yaml.org,2002:value'"
_plain_as_text("tag:yaml.org,2002:value", "=")


MAX_YAML_BYTES = 10 * 2**20  # far above any config, sweep or study file


def _read_stream(f, limit: int) -> bytes:
    """Up to limit bytes of a pipe or device, waiting at most a quarter second at a time. Python runs a
    signal handler only between bytecodes: a SIGINT or SIGTERM that lands after one read() returned and
    before the next one blocks would wait for the writer (forever, if it never writes) in a plain read."""
    raw = bytearray()
    while len(raw) < limit:
        if not select.select([f], [], [], 0.25)[0]:
            continue  # nothing to read yet; a handler that is due runs on the way round
        chunk = f.read(limit - len(raw))
        if not chunk:
            break
        raw += chunk
    return bytes(raw)


def _read_text(path: Path, what: str) -> str:
    """path's text, read up to MAX_YAML_BYTES: a device that never ends (/dev/zero, /dev/urandom), now
    that more than regular files are read, is refused rather than read until memory runs out."""
    with path.open("rb", buffering=0) as f:
        raw = f.read(MAX_YAML_BYTES + 1) if stat.S_ISREG(os.fstat(f.fileno()).st_mode) else _read_stream(f, MAX_YAML_BYTES + 1)
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: more than {MAX_YAML_BYTES:,} bytes: not a {what} file")
    return raw.decode()


def read_yaml(path: str | Path, what: str = "config", stored: bool = False) -> dict:
    """Read a YAML mapping safely; every failure becomes one ConfigError line. stored: a file cnnlab
    wrote itself (see _StoredLoader)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a {what} file")
    if not path.exists():  # not is_file(): a pipe is read too (cnnlab train <(make_config), /dev/stdin)
        raise ConfigError(f"{what} file not found: {path}")
    try:
        data = yaml.load(_read_text(path, what), Loader=_StoredLoader if stored else _Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    except RecursionError:  # PyYAML's parser recurses per level: a few hundred [[[...]]] exhaust it
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    if data is None:
        raise ConfigError(f"{path}: the {what} file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the {what} must be a mapping of keys to values, not {_given(data)}")
    if _holds_itself(data):  # `a: &x [*x]`: every later step would recurse without end
        raise ConfigError(f"{path}: not valid YAML for a {what}: an alias refers to a value it is part of")
    return data


def _holds_itself(value) -> bool:
    """Whether a list or mapping contains itself, at any depth (a YAML alias inside its own anchor).
    Without recursion (PyYAML reads a few hundred levels) and each value once: aliases make a graph,
    which walked as a tree grows tenfold a level (`l2: &l2 [*l1, *l1, ...]`)."""
    done: set[int] = set()
    path: set[int] = set()  # the values whose insides are being walked
    stack = [(value, False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            path.discard(id(node))
            done.add(id(node))
        elif isinstance(node, (dict, list)) and id(node) not in done:
            if id(node) in path:
                return True
            path.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in (node.values() if isinstance(node, dict) else node))
    return False


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")  # a hyphen too: train.max-steps is told train.max_steps


# KEY=VALUE texts applied to a config, in order: a list's typed on the command line; a dict's each with
# how an error names it (a study file's own), None for one typed on the command line
Overrides = list[str] | dict[str, str | None]


def parse_override(text: str, where: str | None = None) -> tuple[str, Any]:
    """'train.epochs=3' -> ('train.epochs', 3); the value is parsed as a YAML scalar. where: how an
    error names the text; None: as typed on the command line, override 'TEXT'."""
    where = where or f"override {text!r}"
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq:
        raise ConfigError(f"{where} must look like KEY=VALUE, e.g. train.epochs=3")
    check_key(key, where)
    try:
        parsed = yaml.load(value, Loader=_Loader) if value.strip() else None  # noqa: S506 (a SafeLoader)
        comment = _trailing_comment(value)
    except (yaml.YAMLError, RecursionError):  # RecursionError: nested too deeply, as read_yaml says
        raise ConfigError(f"{where}: the value is not valid YAML") from None
    if _holds_itself(parsed):  # train=&a {x: *a}
        raise ConfigError(f"{where}: an alias refers to a value it is part of")
    if comment:  # description=run #5 would be 'run', and dataset.data_dir=#2 null: silently
        quoted = value.strip().replace("'", "''")
        raise ConfigError(f"{where}: YAML drops {comment!r} as a comment; leave it out, or quote a text that holds it: {key}='{quoted}'")
    return key, parsed


def check_key(key: str, where: str) -> None:
    """Refuse a key that is not dotted like train.epochs (model.hidden.0: a list position); where: how
    the error names it."""
    if not _KEY.fullmatch(key):
        item = re.fullmatch(r"(?P<list>.+?)\.\d+(\..*)?", key)
        if item and _KEY.fullmatch(item["list"]):  # model.hidden.0=5
            raise ConfigError(f"{where}: a key names fields, not list positions; set a list whole, e.g. model.hidden=[16, 16]")
        raise ConfigError(f"{where}: {key!r} is not a dotted key like train.epochs")


def _trailing_comment(value: str) -> str:
    """What YAML drops from the end of value as a comment: '#5' of 'run #5'; '' if nothing."""
    tokens = [t for t in yaml.scan(value, Loader=_Loader) if not isinstance(t, yaml.StreamEndToken)]
    return value[max(t.end_mark.index for t in tokens):].strip()


def _section_classes(schema: type[BaseModel], section: list[str]) -> list[type[BaseModel]]:
    """The classes a section may be: one for a plain section (dataset), the kinds of a choice
    section (optimizer: SGDConfig, AdamConfig, ...), [] for a path outside the schema."""
    cls: type[BaseModel] | None = schema
    models: list[type[BaseModel]] = []
    for part in section:
        field = cls.model_fields.get(part) if cls is not None else None
        models = _model_classes(field.annotation) if field is not None else []
        cls = models[0] if len(models) == 1 else None
    return models


def _may_be_none(schema: type[BaseModel], section: list[str]) -> bool:
    """Whether the section at this path may be left out, as null (schedule, reported)."""
    parents = _section_classes(schema, section[:-1]) if len(section) > 1 else [schema]
    field = parents[0].model_fields.get(section[-1]) if len(parents) == 1 and section else None
    return field is not None and type(None) in typing.get_args(field.annotation)


def _choices(schema: type[BaseModel], section: list[str]) -> list[type[BaseModel]]:
    """The kinds a choice section may be (optimizer: SGDConfig, AdamConfig, ...); [] for a plain
    section that merely has a name (dataset) or a path outside the schema."""
    models = _section_classes(schema, section)
    return models if len(models) > 1 else []


def is_choice_section(section: str) -> bool:
    """Whether a dotted config section is a choice of kinds by its name (model, optimizer, schedule;
    not dataset or loss, whose name is a plain setting)."""
    return bool(_choices(Config, section.split(".")))


def model_names() -> list[str]:
    """Every model.name the schema accepts (cnnlab.models builds each; it needs torch, this does not)."""
    return [typing.get_args(m.model_fields["name"].annotation)[0] for m in _choices(Config, ["model"])]


def _section(data: dict, parts: list[str]) -> dict | None:
    """The raw config's section at parts (["optimizer"]), None when it is not there or not a mapping."""
    node: Any = data
    for part in parts:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def switch_variants(data: dict, names: dict[str, Any], explicit: set[str], schema: type[BaseModel], every: set[str] = frozenset()) -> None:
    """For each `section.name` in names (its value before) that changes the section's kind
    (optimizer sgd -> adam), start the section afresh: the new kind's defaults plus the keys in
    explicit (set on purpose here: kept, and checked) and those in `every` (a sweep's keys for all
    its trials: kept where the new kind has them). The old kind's settings (momentum 0.9, lr 0.01)
    would not mean the same for the new one."""
    for key, old_name in names.items():
        *section, _ = key.split(".")
        node = _section(data, section)
        if node is None or node.get("name") in (old_name, None):  # None: no kind to start from
            continue
        kind = [m for m in _choices(schema, section) if typing.get_args(m.model_fields["name"].annotation) == (node["name"],)]
        fields = set(kind[0].model_fields) if kind else set()
        for k in [k for k in node if k != "name"]:
            dotted = ".".join([*section, k])
            if not _set_on_purpose(dotted, explicit) and not (dotted in every and k in fields):
                del node[k]


def _set_on_purpose(dotted: str, explicit: set[str]) -> bool:
    """Whether dotted is among the explicit keys, or holds one: a mapping given for a key
    (optimizer.betas={a: 1}) counts as its leaves (optimizer.betas.a) there, and is kept to be refused."""
    return dotted in explicit or any(key.startswith(dotted + ".") for key in explicit)


def leaf_keys(values: dict) -> set[str]:
    """The dotted keys a set of values really sets: {"optimizer": {"name": "adam"}} -> optimizer.name."""
    return {k for key, value in values.items() for k in (flatten({key: value}) if isinstance(value, dict) else {key: value})}


def section_names(data: dict, keys: list[str], schema: type[BaseModel]) -> dict[str, Any]:
    """{"optimizer.name": "sgd"}: the current kind of every choice section whose `name` is among keys."""
    names = {}
    for key in keys:
        section = key.split(".")[:-1]
        if key.endswith(".name") and section and _choices(schema, section):
            node = _section(data, section)
            names[key] = node.get("name") if node is not None else None
    return names


def _labelled(overrides: Overrides | None) -> list[tuple[str, str | None]]:
    """overrides as (text, how an error names it) pairs, in order; None: typed on the command line."""
    return list(overrides.items()) if isinstance(overrides, dict) else [(text, None) for text in overrides or []]


def parsed_overrides(overrides: Overrides | None) -> list[tuple[str, Any, str]]:
    """Override texts as set_dotted's (key, value, how an error names it) each."""
    parsed = []
    for text, label in _labelled(overrides):
        where = label or f"override {text!r}"
        parsed.append((*parse_override(text, where), where))
    return parsed


def set_dotted(data: dict, values: list[tuple[str, Any, str]], schema: type[BaseModel], every: set[str] = frozenset()) -> dict:
    """Set dotted keys in a raw config dict, in order: (key, value, how an error names it) each.
    Unknown keys are reported by validation afterwards. A key that switches a section's kind
    (optimizer.name=adam) starts that section from the new kind's defaults, whatever the data set
    for the old kind (every: see switch_variants)."""
    names = section_names(data, [key for key, _, _ in values], schema)
    for key, value, where in values:
        parts = key.split(".")
        node, cls = data, schema
        for i, part in enumerate(parts[:-1]):
            field = cls.model_fields.get(part) if cls is not None else None
            default = field.default if field is not None else None
            cls = type(default) if isinstance(default, BaseModel) else None
            child = node.get(part)
            if _a_word_for_a_section(child, field):  # normalize: none, then transform.normalize.mean=...
                child = None
            if child is None:  # a section the file left out: only what its default sets (e.g. optimizer's
                # name), so that switching optimizer.name leaves no other optimizer's keys behind
                child = node[part] = default.model_dump(mode="json", exclude_unset=True) if cls is not None else {}
            if not isinstance(child, dict):
                raise ConfigError(f"{where}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    switch_variants(data, names, leaf_keys({key: value for key, value, _ in values}), schema, every)
    return data


def _a_word_for_a_section(value, field) -> bool:
    """Whether value is one of the words a key takes that may be a section too (normalize: dataset |
    none | {mean, std}): a dotted key under it sets the section instead, as where the file left it out."""
    if field is None or not isinstance(value, str) or not _model_classes(field.annotation):
        return False
    return any(typing.get_origin(arg) is Literal and value in typing.get_args(arg) for arg in typing.get_args(field.annotation))


def _model_classes(annotation) -> list[type[BaseModel]]:
    """The BaseModel classes inside an annotation, through Optional, Union and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _model_classes(arg)]


def _walk(schema: type[BaseModel], loc: tuple) -> tuple[type[BaseModel] | None, list[str]]:
    """Follow a validation error's location through the schema, skipping union tags.

    Returns the section class reached after loc[:-1] (None when it leaves the schema) and the
    dotted location without tags: ('model', 'cnn', 'n_feature') -> (CNNModel, ['model', 'n_feature']).
    """
    cls: type[BaseModel] | None = schema
    path: list[str] = []
    i = 0
    while i < len(loc):
        part = loc[i]
        path.append(str(part))
        if isinstance(part, int) and i < len(loc) - 1:  # an item of a list of sections (a study's members.0): its section goes on
            i += 1
            continue
        field = cls.model_fields.get(part) if cls is not None and isinstance(part, str) else None
        if i == len(loc) - 1:
            break
        cls = None
        if field is not None:
            models = _model_classes(field.annotation)
            if len(models) == 1:
                cls = models[0]
            elif len(models) > 1 and i + 1 < len(loc):
                tagged = [m for m in models if typing.get_args(m.model_fields["name"].annotation) == (loc[i + 1],)]
                if tagged:
                    cls = tagged[0]
                    i += 1  # skip the tag
        i += 1
    return cls, path


@functools.cache
def _class_names(schema: type[BaseModel]) -> frozenset[str]:
    """The class names of schema and of every section under it."""
    names = {schema.__name__}
    for field in schema.model_fields.values():
        for model in _model_classes(field.annotation):
            names |= _class_names(model)
    return frozenset(names)


def _is_member_name(part, schema: type[BaseModel]) -> bool:
    """Whether an error location's part is a name pydantic adds for the member of a plain union
    that failed ("literal['dataset','none']", "function-after[_check(), MeanStd]", "constrained-float",
    a section's class name), not a key: keys typed in capitals (Train.Epochs) are keys."""
    return isinstance(part, str) and (part.startswith(("literal[", "function-", "constrained-")) or part in _class_names(schema))


def closest_key(typed: str, keys) -> str | None:
    """The key of keys a user most likely meant by typed (Epochs, epoch: epochs), or None."""
    close = difflib.get_close_matches(typed.lower(), keys, n=1, cutoff=0.5)
    return close[0] if close else None


def key_below(schema: type[BaseModel], typed: str, data: dict) -> str | None:
    """The dotted key, in a section under schema that the raw config data has, whose last part is
    typed: a key given without its section (crop_padding=3 for transform.augment.crop_padding=3),
    or None. Only a key of data's own kinds counts: n_feature is model.n_feature for a cnn, not for an fc net."""
    for name, field in schema.model_fields.items():
        section = data.get(name)
        for model in _kinds_of(field, section):
            below = typed.lower() if typed.lower() in model.model_fields else key_below(model, typed, section if isinstance(section, dict) else {})
            if below:
                return f"{name}.{below}"
    return None


def _kinds_of(field, section) -> list[type[BaseModel]]:
    """The classes a raw section validates as: a plain section's one class (dataset); of a choice
    section (optimizer: SGDConfig, AdamConfig, ...) the kind its name picks, else, left out, its default's."""
    models = _model_classes(field.annotation)
    if len(models) < 2:
        return models
    if section is None:
        return [type(field.default)] if isinstance(field.default, BaseModel) else []  # schedule: none
    name = section.get("name") if isinstance(section, dict) else None
    return [m for m in models if typing.get_args(m.model_fields["name"].annotation) == (name,)]


def _describe(err: dict, schema: type[BaseModel], data: dict, names: dict[str, str]) -> str:
    kind = err["type"]
    loc = _user_loc(err, schema)
    if kind == "extra_forbidden":
        cls, path = _walk(schema, loc)
        fields = list(cls.model_fields) if cls is not None else []
        prefix = "".join(p + "." for p in path[:-1])
        close = closest_key(path[-1], fields) or (key_below(cls, path[-1], _section(data, path[:-1]) or {}) if cls is not None else None)
        hint = f"; did you mean '{prefix}{close}'?" if close else f"; valid keys here: {', '.join(fields)}"
        return f"unknown key '{'.'.join(path)}'{hint}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        what = ".".join(_walk(schema, loc)[1])
        # pydantic leaves the tags out for an optional section (schedule): name them from the schema
        expected = err.get("ctx", {}).get("expected_tags") or _choice_names(schema, what)
        given = err.get("input")
        if kind == "union_tag_not_found" or (isinstance(given, dict) and given.get("name") is None):  # name: (empty)
            return f"{what}: missing 'name'; valid names: {expected}"
        tag = err.get("ctx", {}).get("tag")
        return f"unknown {what} {tag!r}; valid names: {expected}"
    if kind == "missing" and isinstance(loc[-1], int):  # betas=[0.9]: a tuple given too few values
        cls, path = _walk(schema, loc[:-1])
        field = cls.model_fields.get(path[-1]) if cls is not None else None
        if field is not None:
            takes = len(typing.get_args(field.annotation))
            return f"{'.'.join(path)}: takes {takes} values, not {len(err['input'])} (got {err['input']})"
    path = _walk(schema, loc)[1]
    shown = names.get(".".join(path), ".".join(path))
    if (kind == "missing" or err.get("input") is None) and _choices(schema, path):  # no model section, or `model:` with nothing
        return f"{shown}: missing; give {shown}.name, one of {_choice_names(schema, '.'.join(path))}"
    sections = _section_classes(schema, path)  # the classes the key's value may be, if it is a section
    msg = err["msg"]
    if kind == "literal_error":
        msg = f"must be one of {err['ctx']['expected']}"
        if len(sections) == 1:  # normalize: dataset | none | {mean, std}
            msg += ", or {" + ", ".join(f"{key}: ..." for key in sections[0].model_fields) + "}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    got = err.get("input")
    is_section = kind in ("model_type", "model_attributes_type") and sections
    if is_section and _may_be_none(schema, path) and str(got).lower() in ("off", "none", "no", "false", "0"):
        return f"{shown}: a section, not {_as_typed(got)}; for no {shown}: {shown}=null (or leave it out)"
    if got is not None and is_section and all("name" in m.model_fields for m in sections):  # model=fc, loss=5
        kinds = [name for m in sections for name in typing.get_args(m.model_fields["name"].annotation)]
        name = got if got in kinds else f"NAME, one of {', '.join(map(repr, kinds))}"  # schedule=off: not a schedule's name
        return f"{shown}: a section, not {_given(got)}; to choose one by name: {shown}.name={name}"
    if is_section:  # train=fast, `dataset:` with nothing under it
        return f"{shown}: a section of keys ({', '.join(sections[0].model_fields)}), not {_given(got)}; leave it out for its defaults"
    got_text = "" if isinstance(got, (dict, list)) or kind.startswith("value_error") else f" (got {_as_typed(got)})"
    return f"{shown}: {msg}{got_text}" if shown else f"{msg}{got_text}"


def _as_typed(value) -> str:
    """A value refused, as the user typed it: 'yes', 0.5, true (not Python's True), no value."""
    return "no value" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)


def _given(value) -> str:
    """A value given where a section belongs, in words: empty, a list, 5, 'fast'."""
    return "empty" if value is None else "a list" if isinstance(value, list) else _as_typed(value)


def _choice_names(schema: type[BaseModel], section: str) -> str:
    """The names a choice section takes, as its errors list them: 'fc', 'cnn', ..."""
    return ", ".join(repr(typing.get_args(m.model_fields["name"].annotation)[0]) for m in _choices(schema, section.split(".")))


def _says_most(err: dict) -> int:
    """How much an error of one alternative of a plain union tells: a value of the right type out of
    its bounds most (resources.gpus=-1: '>= 0', not "must be one of 'auto'"), then, for anything but
    a mapping, the words it may be (normalize=3: dataset | none | {mean, std}), then a wrong type."""
    if err["type"] == "literal_error":
        return 0 if isinstance(err.get("input"), dict) else 1
    return 0 if err["type"].endswith(("_type", "_parsing")) else 2


def validate(
    data: dict, schema: type[BaseModel] = Config, source: str = "config", stored: bool = False,
    names: dict[str, str] | None = None, overrides: Overrides | None = None, owners: Sequence[tuple[str, str | None]] = (),
    without: Callable[[Sequence[str]], dict] | None = None,
):
    """Validate a raw dict against a schema; the first problem becomes one ConfigError line. stored:
    a config cnnlab wrote itself (a run's, a study's plan), held to the checks it was written under.
    names: what the user typed for a key (max_shift: --max-shift), as the error names it; source '':
    no prefix. overrides: the KEY=VALUE texts applied to data (see Overrides); the one that brought in
    an unknown key is named in place of source, as its label says, else as 'SOURCE, override TEXT'. A
    sweep gives the dotted KEYs of its command line's space and set, labelled, in place of texts.
    owners: dotted keys in the order they were set, each with how an error names it (None: as source);
    any other problem at or below one is named as the last that holds it (a sweep's trial). without:
    data made again with the given overrides left out, to name the override any other problem comes
    from (see blamed_override)."""
    try:
        return schema.model_validate(data, context={"stored": stored})
    except ValidationError as e:
        # of the alternatives of a plain union, the deepest error is the one that says most; at equal
        # depth, an unknown key (`spce:`) is the likelier mistake than the key it leaves missing (`space`)
        error = max(e.errors(), key=lambda err: (len(err["loc"]), err["type"] == "extra_forbidden", _says_most(err)))
        labels = dict(_labelled(overrides))
        given = _override_of(error, schema, labels)  # a typo on the command line, not in the file
        if given is None and not owners and without is not None:  # optimizer.lr=abc: the override's value, not the file's
            given = blamed_override(error, schema, stored, list(labels), without)
        where = (labels[given] or override_named(source, given)) if given else _owner_of(error, schema, owners) or source
        raise ConfigError((f"{where}: " if where else "") + _describe(error, schema, data, names or {})) from None


def override_named(source: str | Path, text: str) -> str:
    """How an error names an override typed on the command line: 'configs/x.yaml, override train.epoch=3'."""
    return f"{source}, override {text}" if source else f"override {text}"


def _override_of(err: dict, schema: type[BaseModel], overrides) -> str | None:
    """The override (KEY=VALUE as typed, or KEY) that brought in the unknown key err names, if one did."""
    if err["type"] != "extra_forbidden":
        return None
    unknown = ".".join(_walk(schema, _user_loc(err, schema))[1]) + "."
    # optimzer.lr=0.1 names optimzer; train={epoch: 3} replaces train, so the typo below it is its own
    keys = {text: text.partition("=")[0].strip() + "." for text in overrides}
    return next((text for text, key in keys.items() if key.startswith(unknown) or unknown.startswith(key)), None)


def blamed_override(error: dict, schema: type[BaseModel], stored: bool, texts: list[str], without) -> str | None:
    """The override error comes from: None where the data fails so with none of them (the file's own
    mistake), else the last one it needs: the earliest k such that leaving out texts[k:] mends it,
    given texts[k + 1:] alone do not (optimizer.nesterov=true optimizer.momentum=0 optimizer.lr=0.1:
    momentum)."""
    def fails_so(left_out: Sequence[str]) -> bool:
        try:
            schema.model_validate(without(left_out), context={"stored": stored})
        except ValidationError as e:
            return any(_same_error(err, error) for err in e.errors())
        except ConfigError:  # the other overrides cannot be set without these
            return True
        return False

    if fails_so(texts):
        return None
    return next((texts[k] for k in reversed(range(len(texts))) if not fails_so(texts[k:])), None)


def _same_error(a: dict, b: dict) -> bool:
    """Whether two validation errors are one problem: the place, the kind, and a value (not a section,
    which the other keys of it differ in; NaN as NaN) alike."""
    x, y = a.get("input"), b.get("input")
    same_value = isinstance(y, dict) or x == y or (x != x and y != y)
    return (a["loc"], a["type"], a["msg"]) == (b["loc"], b["type"], b["msg"]) and same_value


def _owner_of(err: dict, schema: type[BaseModel], owners) -> str | None:
    """How owners names the key that last set err's location, or a section holding it (None: none did)."""
    loc = ".".join(_walk(schema, _user_loc(err, schema))[1]) + "."
    return next((named for key, named in reversed(owners) if loc.startswith(key + ".")), None)


def _user_loc(err: dict, schema: type[BaseModel]) -> tuple:
    """err's location as the user wrote it: without the union members' class names pydantic adds
    (an unknown key is the user's, even one named like a class)."""
    key = len(err["loc"]) - 1 if err["type"] == "extra_forbidden" else None
    return tuple(p for i, p in enumerate(err["loc"]) if i == key or not _is_member_name(p, schema))


def read_config_yaml(path: str | Path, stored: bool = False) -> dict:
    """read_yaml of a config file; a sweep or study file given instead is told where it belongs."""
    data = read_yaml(path, stored=stored)
    for key, kind, command in (("space", "sweep", "sweep"), ("members", "study", "compare")):
        if key in data and "model" not in data:
            raise ConfigError(f"{path} is a {kind} file, not a config: run it with cnnlab {command} {shell_word(path)}")
    return data


def fitting_name(name: str, info: ValidationInfo, named: str) -> str:
    """A validator's check of a run's, study's or sweep's name against NAME_MAX (named: what its
    directory is); a stored file's longer name, which an older cnnlab took, stays resumable."""
    if len(name) > NAME_MAX and not (info.context or {}).get("stored"):
        raise ValueError(f"at most {NAME_MAX} characters (got {len(name)}): the {named} directory is named after it")
    return name


def as_name(text: str) -> str:
    """text as a name, or a name's part in a file's name: other characters than a name takes made
    '_' ("my exp" -> my_exp), cut to NAME_MAX."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:NAME_MAX]


def name_within(name: str, suffix: str = "") -> str:
    """A name cnnlab makes from one a user gave (a study's cell, a sweep's trial, best.yaml's): name
    cut so that name + suffix stays within NAME_MAX."""
    return name[: NAME_MAX - len(suffix)] + suffix


def name_of_file(path: str | Path) -> str:
    """The name a file gives what it holds when that sets none: its stem, other characters than a
    name takes made '_' ("my exp.yaml" -> my_exp)."""
    return as_name(Path(path).stem)


def load_config(path: str | Path, overrides: Overrides | None = None, stored: bool = False) -> Config:
    """Load a YAML config (a file, or the name of one: see named.py), apply KEY=VALUE overrides,
    validate (stored, overrides: see validate). Raises ConfigError."""
    if not stored:
        path = config_path(path)
    data = read_config_yaml(path, stored)
    data.setdefault("name", name_of_file(path))
    return config_from_dict(data, overrides, str(path), stored)


def overridden(data: dict, overrides: Overrides | None, first: Callable[[dict, Sequence[str]], Sequence[str]] | None = None) -> Callable[..., dict]:
    """A function of override texts to leave out, giving a copy of the raw config data with the
    other overrides set (and a `reported` they make foreign dropped). first(copy, left_out), if
    given, sets keys of its own before them and returns those it set (a sweep's `set`)."""
    experiment = model_and_dataset(data)
    texts = [text for text, _ in _labelled(overrides)]
    values = parsed_overrides(overrides)

    def applied(left_out: Sequence[str] = ()) -> dict:
        out = copy.deepcopy(data)
        own = first(out, left_out) if first is not None else ()
        # copies: set_dotted keeps a value given whole (a section), which a later override may change
        kept = copy.deepcopy([value for text, value in zip(texts, values) if text not in left_out])
        set_dotted(out, kept, Config)
        drop_foreign_reported(out, experiment, [*own, *(key for key, _, _ in kept)])
        return out

    return applied


def model_and_dataset(data: dict) -> tuple:
    """A raw config's model and dataset names (None where not given; a dataset left out, or its name,
    is the default's: dataset.name=mnist in a file without a dataset is the same experiment)."""
    model, dataset = (data.get(section) if isinstance(data.get(section), dict) else {} for section in ("model", "dataset"))
    return model.get("name"), dataset.get("name", DatasetConfig().name)


def drop_foreign_reported(data: dict, experiment: tuple, keys) -> None:
    """Drop `reported` from a raw config whose model or dataset name is no longer experiment's (its
    file's own, see model_and_dataset): the article's number is for that model on that dataset. A
    reported among the dotted keys the user set (overrides, a sweep's set or space) stays."""
    if model_and_dataset(data) != experiment and "reported" not in {key.split(".")[0] for key in keys}:
        data.pop("reported", None)


def config_from_dict(data: dict, overrides: Overrides | None = None, source: str = "config", stored: bool = False) -> Config:
    applied = overridden(data, overrides)
    return validate(applied(), Config, source, stored, overrides=overrides, without=applied)


def flatten(data: dict, prefix: str = "") -> dict:
    """{"train": {"epochs": 2}} -> {"train.epochs": 2}: the dotted keys overrides use."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_to_dict(cfg: BaseModel) -> dict:
    return cfg.model_dump(mode="json")


def dump_yaml(data: dict) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None)
