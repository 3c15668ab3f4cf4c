"""Study files: a named study is configs/studies/<name with - as _>.yaml (see named.py) listing member configs.

A study file names its member configs (paths relative to the study file) with the labels its table
shows, default seeds and conditions, and overrides applied to every member. The commands take either
one study (a name or a study file) or plain config files, and `resolve()` turns both into Members.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from cnnlab.config import DATASET_CLASSES, DATASET_SHAPES, NAME_MAX, Config, Strict, closest_key, load_config, name_of_file, read_yaml, validate
from cnnlab import named
from cnnlab.errors import ConfigError

class MemberSpec(Strict):
    config: str  # a config file, relative to the study file
    label: str | None = None  # the name the table shows; default: the config's name

    @field_validator("label")
    @classmethod
    def _one_line(cls, v):
        # (a lone surrogate, "\ud800" in YAML, is no character: the tables' files could not be written)
        if v is not None and (not v.strip() or any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in v)):
            raise ValueError("a label is one line of visible text (the name of the member's rows in the table)")
        return v


class SweepSpec(Strict):
    """Defaults of `cnnlab shift-sweep` (each has a command-line option)."""

    max_shift: int = Field(5, ge=0, le=27)  # shifts -max_shift..+max_shift pixels
    axis: Literal["x", "y", "both"] = "x"
    mode: Literal["roll", "zero"] = "roll"  # roll wraps around (np.roll); zero fills with black
    image_index: int = Field(24150, ge=0)  # the single-image view (the study's Pullover)
    image_split: Literal["train", "test"] = "train"


class StudySpec(Strict):
    name: str = Field(min_length=1, max_length=NAME_MAX, pattern=r"^[A-Za-z0-9_.-]+$")  # default: the file name
    description: str = ""
    members: list[MemberSpec] = Field(min_length=1)
    seeds: int = Field(3, gt=0)  # seeds per cell: config.seed, +1, ...
    permute: bool = False  # compare: add the fixed-pixel-permutation condition
    overrides: list[str] = []  # KEY=VALUE applied to every member
    sweep: SweepSpec = SweepSpec()

    @field_validator("members", mode="before")
    @classmethod
    def _plain_paths(cls, v):
        return [{"config": m} if isinstance(m, str) else m for m in v] if isinstance(v, list) else v


@dataclass
class Member:
    label: str
    cfg: Config
    source: str  # the config file it came from


def load_study(path: Path) -> StudySpec:
    data = read_yaml(path, "study")
    data.setdefault("name", name_of_file(path))
    return validate(data, StudySpec, str(path))


def _as_study(arg: str) -> Path | None:
    """The study file arg gives or names, or None when arg is a config (its file or name)."""
    path = Path(arg)
    if path.is_file():
        data = read_yaml(path)
        if "members" in data:
            return path
        # a key nearer members than any config key: modes is model's typo, seeds (a study's and a sweep
        # file's key) is near seed
        keys = [*Config.model_fields, "members"]
        misspelt = [k for k in data if closest_key(str(k), keys) == "members"]
        if misspelt:  # not a config with a typo: a study file whose members' key is misspelt
            raise ConfigError(f"{path}: unknown key '{misspelt[0]}'; did you mean 'members' (a study file's list of configs)?")
        return None
    if not named.is_name(arg):
        named.config_path(arg, "study")  # a study of cnnlab's own given by a path that is not here: told its name
        return None  # a missing config file: load_config says so
    found = named.find(arg, "study")
    if found is None and named.find(arg, "config") is None:
        raise named.unknown(arg, "study", also="config")
    return found  # None: a config's name


def resolve(paths: list[str], overrides: list[str]) -> tuple[StudySpec, list[Member]]:
    """One study (name or file) or several config files -> the spec and its members' configs.

    The study's own overrides apply first, then `overrides` (the command line's).
    """
    study = _as_study(paths[0]) if len(paths) == 1 else None
    if study is not None:
        spec, base = load_study(study), study.parent
    else:
        for p in paths:
            if _as_study(p) is not None:
                raise ConfigError(f"{p} is a study file; give either one study or config files")
        name = "-vs-".join(name_of_file(p) for p in paths)[:80]
        spec, base = StudySpec(name=name, members=[MemberSpec(config=p) for p in paths]), Path(".")
    members = []
    for m in spec.members:
        source = named.relative_config(m.config, base)
        own = {text: f"{study}: override {text} (the study file's overrides, for member {source})" for text in spec.overrides}
        last = reversed(dict.fromkeys(reversed(spec.overrides + overrides)))  # a text given twice applies where it comes last
        cfg = load_config(source, {text: own.get(text) for text in last})  # None: the command line's
        members.append(Member(m.label or cfg.name, cfg, str(source)))
    labels = [m.label for m in members]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two members share a label ({', '.join(labels)}); give them labels in a study file")
    return spec, members


def check_models(members: list[Member]) -> None:
    """Build each member's model for its dataset: one that cannot take the dataset's images fails now,
    not after the others trained. Torch loads here: a command calls it after its cheaper checks."""
    from cnnlab.models import build_model

    for m in members:
        build_model(m.cfg.model, DATASET_SHAPES[m.cfg.dataset.name], DATASET_CLASSES[m.cfg.dataset.name])


def common_overrides(epochs: int | None, dataset: str | None, device: str | None) -> list[str]:
    """The KEY=VALUE form of the options every study command shares."""
    out = []
    if epochs is not None:
        out.append(f"train.epochs={epochs}")
    if dataset is not None:
        out.append(f"dataset.name={dataset}")  # load_config drops the article's number where this changes the dataset
    if device is not None:
        out.append(f"device={device}")
    return out
