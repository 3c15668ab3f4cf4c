"""Sweeps: the sweep file, its expansion into trials, and what a finished sweep writes.

A sweep file (configs/sweeps/*.yaml) names a base config, a search space over dotted config keys,
the seeds every point is repeated over, the search method and the metric. It is validated like a
train config before Ray starts (nothing here imports ray or torch). cnnlab.ray_backend runs the
trials on Ray Tune, each an ordinary run directory in <sweep>/trials/; this module turns those run
directories into trials.csv, results.csv/.md (sorted by the metric), best.yaml and the figure.
"""

from __future__ import annotations

import copy
import glob
import itertools
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from cnnlab import runs
from cnnlab.config import (
    Config, Strict, check_key, closest_key, config_to_dict, drop_foreign_reported, dump_yaml, flatten, is_choice_section, key_below, load_config, leaf_keys,
    fitting_name, name_of_file, name_within, overridden, override_named, parse_override, parsed_overrides, read_yaml, set_dotted, validate,
)
from cnnlab.errors import CnnlabError, ConfigError, RunError, counted, first_line, in_run, shell_word, signal_name
from cnnlab.interrupts import Interrupted
from cnnlab.named import config_path, relative_config

SWEEP_FILE, BASE_FILE, TRIALS = "sweep.yaml", "base.yaml", "trials"
METRIC_LABELS = {"test_acc": "test accuracy (%)", "train_acc": "train accuracy (%)", "test_loss": "test loss", "train_loss": "train loss"}
DONE = ("completed", "stopped")  # trial statuses whose metric counts
MAX_POINTS = 10_000  # a grid is expanded in memory: num: 1e9 must be refused, not exhaust it
MAX_CHECKED = 256  # random and tpe: the combinations of the keys' bounds checked before the sweep starts (more: each bound alone)


# ---------------------------------------------------------------------------- the sweep file
class SpaceEntry(Strict):
    """One swept key: a list of values, or a range from low to high."""

    values: list[Any] | None = None  # the grid points (method grid) or the choices (random, tpe)
    low: float | None = None  # a range: `num` grid points (grid), or sampled (random, tpe)
    high: float | None = None
    num: int | None = Field(None, ge=2)  # grid points over [low, high]
    log: bool = False  # geometric grid points, log-uniform sampling, log axis in the figure
    integer: bool = False  # whole numbers only (a range of batch sizes, widths, ...)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        if isinstance(data, list):  # `optimizer.lr: [0.01, 0.1]` is short for {values: [...]}
            return {"values": data}
        if not isinstance(data, dict):
            raise ValueError("give a list of values or a range {low: ..., high: ...}")
        return data

    @model_validator(mode="after")
    def _check(self):
        if self.values is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give values or low/high, not both")
            if not self.values:
                raise ValueError("values is empty")
            given = [k for k, used in (("num", self.num is not None), ("integer", self.integer)) if used]
            if given:  # they shape a range: with values they would be ignored (log sets the figure's axis)
                raise ValueError(f"{given[0]} is for a range (low, high), not for values")
            repeated = [v for i, v in enumerate(self.values) if any(_same(v, w) for w in self.values[:i])]
            if repeated:  # one point run twice would pass for two seeds of it
                raise ValueError(f"{show(repeated[0])} is given twice")
        elif self.low is None or self.high is None:
            raise ValueError("needs values: [...] or both low and high")
        elif self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        elif self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        elif self.integer and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"an integer range needs whole bounds, not {self.low:g} and {self.high:g}")
        return self

    def grid(self) -> list:
        """The values a grid sweep visits."""
        if self.values is not None:
            return list(self.values)
        steps = [i / (self.num - 1) for i in range(self.num)]
        if self.log:
            points = [self.low * (self.high / self.low) ** t for t in steps]
        else:
            points = [self.low + (self.high - self.low) * t for t in steps]
        if self.integer:
            return list(dict.fromkeys(round(p) for p in points))
        # 0.1, not 0.10000000000000002; a range too narrow for 6 digits gives a point once, not twice
        return list(dict.fromkeys(float(f"{p:.6g}") for p in points))

    def bounds(self) -> list:
        """Values that stand for the whole entry when checking it against the config schema."""
        if self.values is not None:
            return list(self.values)
        return [round(self.low), round(self.high)] if self.integer else [self.low, self.high]


class Scheduler(Strict):
    name: Literal["asha"] = "asha"  # asynchronous successive halving: stop the worst trials early
    grace_period: int = Field(1, gt=0)  # epochs every trial runs before it can be stopped
    reduction_factor: float = Field(2.0, gt=1)  # at each rung, keep the best 1/reduction_factor

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        return {"name": data} if isinstance(data, str) else data  # `scheduler: asha`


class Resources(Strict):
    cpus: float = Field(1.0, gt=0)  # CPU cores per trial (also the most torch threads it uses)
    gpus: Annotated[float, Field(ge=0)] | Literal["auto"] = "auto"  # auto: one per trial where the cluster has GPUs


class SweepFile(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")  # default: the file name
    description: str = ""
    base: str  # the base config: a path relative to the sweep file, or a config's name (named.py)
    set: dict[str, Any] = {}  # dotted config keys fixed for every trial, e.g. {train.epochs: 3}
    space: dict[str, SpaceEntry] = Field(min_length=1)  # dotted config key -> values or range
    seeds: list[int] = Field([0], min_length=1)  # every point runs once per seed
    method: Literal["grid", "random", "tpe"] = "grid"  # tpe: Optuna's Tree-structured Parzen Estimator
    samples: int = Field(10, gt=0)  # points drawn by random and tpe
    metric: Literal["test_acc", "test_loss", "train_acc", "train_loss"] = "test_acc"  # at a trial's last epoch
    mode: Literal["max", "min"] | None = None  # default: min for losses, max for accuracies
    scheduler: Scheduler | None = None  # early stopping; null: every trial runs all its epochs
    resources: Resources = Resources()
    max_failures: int = Field(2, ge=0)  # retries of a trial whose worker or node died
    max_concurrent: int | None = Field(None, gt=0)  # default: as many as the cluster's resources allow

    @field_validator("name")
    @classmethod
    def _fits(cls, v: str, info: ValidationInfo) -> str:
        return fitting_name(v, info, "sweep")

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be different from each other")
        return v


# ---------------------------------------------------------------------------- a resolved sweep
@dataclass
class Sweep:
    spec: SweepFile
    base: Config  # the base config with `set` and the command line's config overrides applied
    source: str  # where the sweep came from, for messages
    points: list[dict] = field(default_factory=list)  # the grid's points (method grid)
    max_epochs: int = 1  # the most epochs any trial plans
    models: str = ""  # the model names the trials train, comma-separated
    datasets: str = ""
    explicit: tuple[str, ...] = ()  # config keys the user set for every trial (set:, command line)
    configs: list[Config] = field(default_factory=list)  # trials that stand for the space: each grid point, else each bound
    given: dict[str, str] = field(default_factory=dict)  # space keys from the command line -> how an error names each
    owners: list[tuple[str, str]] = field(default_factory=list)  # config keys the command line set for every trial (set.X=, X=), in order, each with how an error names it

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def keys(self) -> list[str]:
        return list(self.spec.space)

    @property
    def metric(self) -> str:
        return self.spec.metric

    @property
    def mode(self) -> str:
        return self.spec.mode or ("min" if self.metric.endswith("loss") else "max")

    @property
    def n_points(self) -> int:
        return len(self.points) if self.spec.method == "grid" else self.spec.samples

    @property
    def n_trials(self) -> int:
        return self.n_points * len(self.spec.seeds)

    def trial_config(self, point: dict, seed: int, name: str | None = None) -> Config:
        data = set_keys(config_to_dict(self.base), point, named_keys(self.source, "space", point, self.given), self.explicit)
        drop_foreign_reported(data, (self.base.model.name, self.base.dataset.name), [*point, *self.explicit])  # an FC point of a CNN base: not the CNN's number
        data.update(seed=seed, name=name or name_within(self.base.name))  # (a base an older cnnlab took may be longer)
        # set.model.init=xavier that a point's model refuses is named as that override; a key the point sets, as the point's
        owners = [*self.owners, *((key, self.given.get(key)) for key in point)]
        return validate(data, Config, f"{self.source}: space", overrides=self.given, owners=owners)

    def describe(self) -> str:
        how = "grid" if self.spec.method == "grid" else f"{self.spec.method}, {counted(self.spec.samples, 'sample')}"
        stop = f", {self.spec.scheduler.name} early stopping" if self.spec.scheduler else ""
        return f"{self.n_points} point(s) ({how}) x {len(self.spec.seeds)} seed(s) = {counted(self.n_trials, 'trial')}{stop}, {self.mode} {self.metric}"


def set_keys(data: dict, values: dict, named: dict[str, str], explicit=()) -> dict:
    """Set dotted config keys to values of any type (numbers, lists, whole sections) in a raw config;
    a value that switches a section's kind (optimizer.name: adam) starts it from that kind's defaults
    and the keys in explicit (the sweep's `set` and command-line keys, meant for every trial).
    named: how an error names each key (see named_keys)."""
    for key in values:
        check_key(key, named[key])
    return set_dotted(data, [(key, copy.deepcopy(value), named[key]) for key, value in values.items()], Config, set(explicit))


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> Sweep:
    """Read and validate a sweep file. KEY=VALUE overrides set sweep keys (seeds=[0], method=tpe,
    space.optimizer.lr=[0.1,0.5]) or, for any other key, the base config (train.epochs=2). path: a
    file, or the name of one (see named.py)."""
    path = config_path(path, "sweep")
    data = read_yaml(path, "sweep")
    if "model" in data and "space" not in data:  # `seed` would be offered as "did you mean 'seeds'?"
        raise ConfigError(f"{path} is a config, not a sweep file: train it with cnnlab train {shell_word(path)}, or name it as a sweep file's base")
    if "members" in data and "space" not in data:
        raise ConfigError(f"{path} is a study file, not a sweep file: run it with cnnlab compare {shell_word(path)}")
    config_overrides, unknown = [], []  # config_overrides: (text, (key, value, how an error names it)) each
    given = {"space": {}, "set": {}}  # the command line's space and set keys -> how an error names each
    typed = []  # (sweep key, how an error names it) for the command line's other sweep keys (seeds=[], samples=0)
    for text, (key, value, where) in zip(overrides or [], parsed_overrides(overrides)):
        top = key.split(".")[0]
        if top in ("space", "set") and "." in key:  # their keys hold dots themselves: space.optimizer.lr=[...]
            inner = key[len(top) + 1:]
            given[top][inner] = override_named(path, text)
            section = data.setdefault(top, {})
            if not isinstance(section, dict):
                raise ConfigError(f"{path}: {top} must be a mapping of dotted config keys to values")
            if value is None:
                section.pop(inner, None)
            else:
                section[inner] = value
        elif top in SweepFile.model_fields:
            set_dotted(data, [(key, value, where)], SweepFile)
            typed.append((key, override_named(path, text)))
            if key in given:  # set={...}: the whole section, so all its keys, the command line's
                given[key] = dict.fromkeys(value if isinstance(value, dict) else (), override_named(path, text))
        elif key == "seed":  # each trial runs with one of the sweep's seeds, whatever the base config says
            raise ConfigError(f"{path}: {text}: a sweep's trials take their seeds from seeds=[...], e.g. seeds={value if isinstance(value, list) else [value]}")
        elif top not in Config.model_fields:
            unknown.append(text)  # said once the base config is known: what it suggests is a key the base has
        else:
            config_overrides.append((text, (key, value, where)))
    data.setdefault("name", name_of_file(path))
    spec = validate_spec(data, str(path), given["space"], owners=typed)
    base_path = relative_config(spec.base, path.parent)
    base = read_yaml(base_path, "base config")
    base.setdefault("name", name_of_file(base_path))
    config_values = [parsed for _, parsed in config_overrides]

    def with_set(out: dict, left_out) -> list[str]:  # set's keys, but those typed as set.KEY=... left out
        kept = {key: value for key, value in spec.set.items() if key not in left_out}
        set_keys(out, kept, named_keys(path, "set", kept, given["set"]))
        return list(kept)

    applied = overridden(base, [text for text, _ in config_overrides], first=with_set)
    if unknown:
        raise unknown_override(path, unknown[0], applied())
    explicit = sorted(leaf_keys(spec.set) | leaf_keys({key: value for key, value, _ in config_values}))
    # the base holds set's keys (a trial adds space's, trial_config): a mistake in one is named as the
    # sweep file's set.KEY or the command line's set.KEY=..., not as the base config's
    in_file = {key: f"{path}: set.{key}" for key in spec.set if key not in given["set"]}
    typed = dict.fromkeys(text for text, _ in config_overrides) | in_file | given["set"]
    source = f"{path}: base {base_path}"
    owners = [*given["set"].items(), *((key, override_named(source, text)) for text, (key, _, _) in config_overrides)]
    return resolve(spec, validate(applied(), Config, source, overrides=typed, without=applied), str(path), explicit, given["space"], owners)


def named_keys(path: Path | str, section: str, keys, given: dict[str, str]) -> dict[str, str]:
    """How an error names each key of the sweep's space or set: given's words for one the command
    line gave (FILE, override space.seed.x=[1]), else as the sweep file's own (FILE: space.seed.x)."""
    return {key: given.get(key) or f"{path}: {section}.{key}" for key in keys}


def unknown_override(path: Path, text: str, base: dict) -> ConfigError:
    """A command-line override (KEY=VALUE) whose key is neither a sweep key nor a config section
    (metrc=test_acc): the closest of both, where the base config's own check would offer config
    keys only. base: the base config's raw data, with the sweep's set and overrides."""
    top = parse_override(text)[0].split(".")[0]
    keys = list(dict.fromkeys([*SweepFile.model_fields, *Config.model_fields]))
    close = closest_key(top, keys) or key_below(Config, top, base)
    hint = f"did you mean '{close}'?" if close else f"valid: a sweep key ({', '.join(SweepFile.model_fields)}) or a config key ({', '.join(Config.model_fields)})"
    return ConfigError(f"{override_named(path, text)}: unknown key '{top}' (neither a sweep key nor a config key); {hint}")


def validate_spec(data: dict, source: str, given: dict[str, str] | None = None, stored: bool = False, owners=()) -> SweepFile:
    """Validate a raw sweep file; each space entry first, so a typo there names its own key.
    given: the command line's space keys -> how an error names each (see named_keys); owners: the
    command line's other sweep keys, each with how an error names it (see config.validate)."""
    if isinstance(data.get("space"), dict):
        if not data["space"]:  # pydantic would say "Dictionary should have at least 1 item"
            raise ConfigError(f"{source}: space is empty: nothing to sweep; give at least one key, e.g. space.optimizer.lr=[0.01, 0.1]")
        named = named_keys(source, "space", data["space"], given or {})
        for key, entry in data["space"].items():
            validate(entry, SpaceEntry, named[key])
    return validate(data, SweepFile, source, stored, owners=owners)


def _kind_key(key: str) -> bool:
    """model.name, optimizer.name, schedule.name: the kind of a choice section."""
    section, _, last = key.rpartition(".")
    return last == "name" and is_choice_section(section)


def resolve(
    spec: SweepFile, base: Config, source: str, explicit=(), given: dict[str, str] | None = None, owners=(), reopened: bool = False,
) -> Sweep:
    """Check the space against the config schema (every grid point, else every bound) and expand it.
    given: the command line's space keys -> how an error names each (see named_keys); owners: see Sweep;
    reopened: a sweep directory's own, for --resume."""
    sweep = Sweep(spec, base, source, explicit=tuple(explicit), given=dict(given or {}), owners=list(owners))
    for key in ("seed", "name"):
        if key in spec.space:
            where = sweep.given.get(key) or f"{source}: space"  # space.seed=[1] on the command line: that override
            raise ConfigError(f"{where}: '{key}' is set by the sweep itself (use seeds: [...] for seeds)")
    if "seed" in spec.set:  # trial_config replaces it with one of the seeds: it would be ignored
        where = dict(sweep.owners).get("seed") or f"{source}: set.seed"  # set.seed=1 on the command line: that override
        value = spec.set["seed"]
        raise ConfigError(f"{where}: a sweep's trials take their seeds from seeds=[...], e.g. seeds={value if isinstance(value, list) else [value]}")
    for key in spec.space:  # a section and a key inside it: one would silently overwrite the other
        inside = [other for other in spec.space if other.startswith(key + ".")]
        if inside:
            raise ConfigError(f"{source}: space: {key} and {inside[0]} overlap; sweep the whole section or keys inside it, not both")
        # a key fixed for every trial (set:, the command line) that the space also sets: each trial would
        # silently take the space's value, while sweep.yaml still says the fixed one. A choice section's
        # kind (model.name, optimizer.name) may be both: fixed, it gives the base that kind, so that
        # keys only that kind has can be set; the trials take the space's kinds. A sweep started before
        # this check (reopened: nothing can be changed) goes on as it began
        fixed = next((k for k in sweep.explicit if (k == key or k.startswith(key + ".")) and not _kind_key(k)), None)
        if fixed is not None and not reopened:
            where = dict(sweep.owners).get(fixed) or f"{source}: set.{fixed}"
            swept = sweep.given.get(key) or f"space.{key}"
            raise ConfigError(f"{where}: {fixed} is swept too ({swept}); fix it or sweep it, not both")
    if spec.method == "grid":
        named = named_keys(source, "space", spec.space, sweep.given)
        for key, entry in spec.space.items():
            if entry.values is None and entry.num is None:
                raise ConfigError(f"{named[key]}: a range needs num (how many grid points) for method grid")
        size = math.prod(len(entry.values) if entry.values is not None else entry.num for entry in spec.space.values())
        if size > MAX_POINTS:
            raise ConfigError(f"{source}: space: a grid of {size:,} points is more than {MAX_POINTS:,}; give fewer values, a smaller num, or method=random")
        grids = [entry.grid() for entry in spec.space.values()]
        sweep.points = [dict(zip(spec.space, values)) for values in itertools.product(*grids)]
        checked = sweep.points
    else:  # a range's num is the grid's (a file switched to method=tpe keeps it): random and tpe draw `samples` points
        bounds = [entry.bounds() for entry in spec.space.values()]
        if math.prod(map(len, bounds)) <= MAX_CHECKED:  # keys drawn together: every combination of their bounds
            checked = [dict(zip(spec.space, values)) for values in itertools.product(*bounds)]
        else:
            checked = [{key: v} for key, values in zip(spec.space, bounds) for v in values]
    try:
        configs = sweep.configs = [sweep.trial_config(point, spec.seeds[0]) for point in checked]
    except ConfigError as e:
        raise with_integer_hint(e, spec) from None
    sweep.max_epochs = max(c.train.epochs for c in configs)
    sweep.models = ",".join(dict.fromkeys(c.model.name for c in configs))  # as `cnnlab runs` lists studies
    sweep.datasets = ",".join(dict.fromkeys(c.dataset.name for c in configs))
    if spec.scheduler and spec.scheduler.grace_period >= sweep.max_epochs:
        raise ConfigError(
            f"{source}: scheduler.grace_period ({spec.scheduler.grace_period}) must be below train.epochs "
            f"({sweep.max_epochs}) for early stopping to act; or set scheduler=null"
        )
    return sweep


def with_integer_hint(e: ConfigError, spec: SweepFile) -> ConfigError:
    """e, told how to sweep a range of whole numbers where a range's points (32.0) were refused for one."""
    floats = {key: entry for key, entry in spec.space.items() if entry.values is None and not entry.integer}
    key = next((key for key in floats if f"{key}: Input should be a valid integer" in str(e)), None)
    if key is None:
        return e
    whole = float(floats[key].low).is_integer() and float(floats[key].high).is_integer()
    return ConfigError(f"{e}; for a range of whole numbers {'add' if whole else 'give whole bounds and'} integer: true to space.{key}")


# ---------------------------------------------------------------------------- the sweep directory
def start(sweep: Sweep, root: Path, data_dir=None) -> Path:
    """A new sweep directory holding everything --resume needs: sweep.yaml, base.yaml, summary.json."""
    path = runs.new_run_dir(root, sweep.name, kind="sweep")
    runs.atomic_write(path / SWEEP_FILE, dump_yaml(stored_spec(sweep)))
    runs.atomic_write(path / BASE_FILE, dump_yaml(config_to_dict(sweep.base)))
    runs.write_json(path / runs.SUMMARY, {
        "name": sweep.name, "kind": "sweep", "status": "running", "error": None, "started_at": runs.utc_now(), **runs.owner(),
        "dataset": sweep.datasets, "model": sweep.models, "epochs": sweep.max_epochs,
        "method": sweep.spec.method, "metric": sweep.metric, "mode": sweep.mode, "keys": sweep.keys,
        "trials_planned": sweep.n_trials, "test_acc": None, "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
        "explicit_keys": list(sweep.explicit),
    })
    return path


def stored_spec(sweep: Sweep) -> dict:
    """The sweep file as its directory keeps it, a sweep file of its own: its base is base.yaml beside
    it, and its set holds the config keys given on the command line too (base.yaml has their values;
    set says they were chosen, so a trial that switches a kind keeps them, as load_sweep's explicit),
    with their values where the file's set had others (train.epochs=3 over the file's 6)."""
    spec = sweep.spec.model_dump(mode="json")
    given, in_file = flatten(config_to_dict(sweep.base)), flatten(spec["set"])
    kept = copy.deepcopy(spec["set"])
    for key in sweep.explicit:
        if key in given and (key not in in_file or in_file[key] != given[key]):
            put_key(kept, key, given[key])
    return spec | {"base": BASE_FILE, "set": kept}


def put_key(values: dict, key: str, value) -> None:
    """Set a dotted key in a sweep's set: inside the set's section that holds it (optimizer: {...}),
    else as a key of its own (train.epochs: 3 replaces train.epochs: 6)."""
    section = next((k for k, v in values.items() if key.startswith(k + ".") and isinstance(v, dict)), None)
    if section is None:
        values[key] = value
        return
    *parents, leaf = key[len(section) + 1:].split(".")
    node = values[section]
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def reopen(path: str | Path) -> Sweep:
    """The sweep of an existing sweep directory, for --resume."""
    path = Path(path)
    runs.must_be_a_directory(path, "sweep")
    runs.resume_elsewhere(path, "sweep")
    if not (path / SWEEP_FILE).is_file() or not (path / BASE_FILE).is_file():
        raise RunError(f"not a sweep directory: {path} has no {SWEEP_FILE} and {BASE_FILE}")
    spec = validate_spec(read_yaml(path / SWEEP_FILE, "sweep", stored=True), str(path / SWEEP_FILE), stored=True)
    explicit = runs.read_json(path / runs.SUMMARY).get("explicit_keys") if (path / runs.SUMMARY).is_file() else None
    return resolve(spec, load_config(path / BASE_FILE, stored=True), str(path / SWEEP_FILE),
                   explicit if isinstance(explicit, list) else leaf_keys(spec.set), reopened=True)


def update_summary(path: Path, **values) -> dict:
    summary = runs.read_json(path / runs.SUMMARY)
    summary.update(values)
    runs.write_json(path / runs.SUMMARY, summary)
    return summary


def tune_saved_state(sweep_dir: Path) -> bool:
    """Whether Tune saved the experiment's state in the sweep's tune/, which a resume starts from:
    a sweep stopped in its first instant holds only tuner.pkl there, and restoring from that alone
    starts an empty experiment whose trials all fail."""
    return any((Path(sweep_dir) / "tune").glob("experiment_state-*.json"))


def resume_hint(sweep_dir: Path) -> str:
    return f"continue it with: cnnlab sweep --resume {shell_word(sweep_dir)}"


def stop_reason(sweep: Sweep, epoch) -> str:
    return f"stopped early by {sweep.spec.scheduler.name.upper() if sweep.spec.scheduler else 'Ray Tune'} after epoch {epoch}"


def settle_interrupted(sweep_dir: Path, records: list[dict]) -> None:
    """After an interrupted sweep, its trial runs still 'running', or 'stopped' without a Tune record
    saying the scheduler stopped them, become 'interrupted' (a trial Tune ends as the sweep stops
    writes 'stopped' itself, even one Tune never heard from); see runs.settle_cut_off."""
    stopped = frozenset(Path(r["run_dir"]).name for r in records if r["status"] == "stopped" and r["run_dir"])
    runs.settle_cut_off(Path(sweep_dir) / TRIALS, f"the sweep was interrupted; {resume_hint(sweep_dir)}", keep=stopped)


# ---------------------------------------------------------------------------- results
def _same(a, b) -> bool:
    """Whether two values of a list are the same point (0.1 and 0.10; not 1 and True)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def show(value) -> Any:
    """A swept value as the tables show it: numbers and strings as they are, sections compactly."""
    if isinstance(value, dict):
        parts = [str(value["name"])] if "name" in value else []
        return " ".join(parts + [f"{k}={show(v)}" for k, v in value.items() if k != "name"])
    if isinstance(value, list):
        return "[" + ", ".join(str(show(v)) for v in value) + "]"
    return value


def _rank(entry: SpaceEntry, value):
    """Where a swept value (as the tables show it) comes in the sweep's own order: its place in the
    entry's values, or the value itself in a range (which a grid visits from low to high)."""
    if entry.values is None:
        return value
    order = [show(v) for v in entry.values]
    return order.index(value) if value in order else len(order)


def _order(sweep: Sweep, row: dict) -> tuple:
    """A point's place in the sweep's own order: the grid's, also for the points random and tpe drew
    (whose records carry no grid index), never the order Tune returned the records in."""
    return tuple(_rank(sweep.spec.space[k], row[k]) for k in sweep.keys)


def _missing(x) -> bool:
    return x is None or x != x


def trial_dir(sweep_dir: Path, recorded: str | None) -> Path | None:
    """A trial's run directory: in this sweep directory's trials/, by the name of the one Tune
    recorded, whose absolute path a moved or copied sweep directory no longer (or not itself) has."""
    return Path(sweep_dir) / TRIALS / Path(recorded).name if recorded else None


def trial_run_name(sweep: Sweep, trial_id: str) -> str:
    """The name of a trial's run (its directory: <time>-<name>-<id> in trials/)."""
    return name_within(sweep.base.name, f"-{trial_id}")


def latest_run(trials_dir: Path, name: str) -> Path | None:
    """The latest run directory named `name` in trials_dir that holds its config and summary (a trial
    retried after a lost node, or resumed, has one per attempt; one killed before is removed)."""
    found = sorted(p for p in Path(trials_dir).glob(f"*-{glob.escape(name)}-*") if (p / runs.SUMMARY).is_file() and (p / runs.CONFIG).is_file())
    return found[-1] if found else None


def trial_rows(sweep: Sweep, sweep_dir: Path, records: list[dict]) -> list[dict]:
    """One row per trial, from Tune's record of it and its run directory, in the sweep's order; also
    settles a stopped trial's run."""
    rows = []
    for rec in records:
        # a record that names no directory (cut off, or failed, before Tune heard of it): the trial's own, by its name
        run_dir = trial_dir(sweep_dir, rec.get("run_dir")) or latest_run(Path(sweep_dir) / TRIALS, trial_run_name(sweep, rec["trial_id"]))
        # (its results checked: a hand-edited "test_acc": "high" is one line, not a TypeError in the means)
        summary = runs.read_json(run_dir / runs.SUMMARY, runs.RESULTS) if run_dir and (run_dir / runs.SUMMARY).is_file() else {}
        status, error = rec["status"], rec.get("error")
        if status == "unfinished" and summary.get("status") == "completed":
            status = "completed"  # it finished as the sweep was interrupted, before Tune heard of its last epoch
        if run_dir and status == "stopped":
            runs.settle(run_dir, "stopped", stop_reason(sweep, summary.get("epochs")))
        rows.append({
            **{key: show(rec["point"][key]) for key in sweep.keys}, "seed": rec["seed"],
            sweep.metric: summary.get(sweep.metric) if status in DONE else None,
            "epochs": summary.get("epochs", 0), "status": status, "seconds": summary.get("train_seconds"),
            "params": summary.get("params"), "node": rec.get("node"), "node_ip": rec.get("node_ip"),
            "trial": rec["trial_id"], "run_dir": os.path.relpath(run_dir, sweep_dir) if run_dir else None, "error": error,
        })
    # a tpe point drawn twice has two trials of a seed: their trial ids settle which comes first
    return sorted(rows, key=lambda r: (_order(sweep, r), r["seed"], r["trial"]))


def _mean(values) -> float:
    """fmean sums exactly: the same trials in any order give the same mean, so ties stay ties."""
    known = [v for v in values if not _missing(v)]
    return statistics.fmean(known) if known else math.nan


def _seed_trials(group: list[dict], status: str) -> list[dict]:
    """group's trials that ended with status, a seed once (its first trial: TPE may draw a point again)."""
    return list({t["seed"]: t for t in reversed([t for t in group if t["status"] == status])}.values())


def _scored(group: list[dict]) -> list[dict]:
    """The trials a point's mean and std are over, all at one epoch: its completed seeds; where none
    completed, the seeds a scheduler stopped furthest on (stopped at epochs 1 and 4: the one at 4)."""
    completed = _seed_trials(group, "completed")
    if completed:
        return completed
    stopped = _seed_trials(group, "stopped")
    furthest = max((t["epochs"] for t in stopped), default=None)
    return [t for t in stopped if t["epochs"] == furthest]


def point_rows(sweep: Sweep, trials: list[dict]) -> list[dict]:
    """One row per point: the metric's mean and std over the seeds whose trial completed, sorted best
    first (see _best_first). A trial a scheduler stopped early holds an earlier epoch's metric, which
    would mix into the mean and std the spread of epochs rather than of seeds: it counts only where
    none of the point's trials completed (see _scored)."""
    m = sweep.metric
    groups: dict[tuple, list[dict]] = {}
    for t in trials:
        groups.setdefault(tuple(t[k] for k in sweep.keys), []).append(t)
    out, tiers = [], []
    for values, group in groups.items():
        scores = [t[m] for t in _scored(group) if not _missing(t[m])]
        epochs = sorted({t["epochs"] for t in group})
        stops = sorted(Counter(t["status"] for t in group).items(), key=lambda s: (-s[1], s[0]))
        out.append({
            **dict(zip(sweep.keys, values)),
            f"{m}_mean": _mean(scores), f"{m}_std": statistics.stdev(scores) if len(scores) > 1 else math.nan,
            "seeds": len(scores), "trials": len(group),
            "epochs": str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}",
            "stop": ", ".join(k if len(stops) == 1 else f"{n} {k}" for k, n in stops),
            # the point's model: also a trial that failed or was cut off after building it counts
            "seconds": _mean(t["seconds"] for t in group), "params": max((t["params"] for t in group if not _missing(t["params"])), default=None),
        })
        tiers.append(_tier(group))
    order = sorted(range(len(out)), key=lambda i: _best_first(sweep, out[i], tiers[i]))
    return [out[i] for i in order]


def _tier(group: list[dict]) -> int:
    """Where a point ranks before its metric counts: 0 when every trial completed, 1 when some were
    stopped early or not finished, 2 when one failed (a seed that diverged is evidence against the
    point that the mean of the others would hide)."""
    statuses = {t["status"] for t in group}
    return 2 if "failed" in statuses else 0 if statuses == {"completed"} else 1


def _best_first(sweep: Sweep, point: dict, tier: int) -> tuple:
    """The results' order: points with a mean first, by tier (see _tier), then the best mean; on a
    tie the smaller std (the steadier point; one finished seed, no std, after), then the sweep's own order."""
    mean, std = point[f"{sweep.metric}_mean"], point[f"{sweep.metric}_std"]
    sign = -1 if sweep.mode == "max" else 1
    return _missing(mean), tier, 0 if _missing(mean) else sign * mean, _missing(std), 0 if _missing(std) else std, _order(sweep, point)


def metric_text(metric: str, value: float, std: float = float("nan")) -> str:
    """A metric's value, and its std over seeds where there is one, as people read it: accuracies in %
    ('96.00% ± 1.41'), losses as numbers ('0.3123 ± 0.0100')."""
    if metric.endswith("acc"):
        return f"{100 * value:.2f}%" + (f" ± {100 * std:.2f}" if std == std else "")
    return f"{value:.4f}" + (f" ± {std:.4f}" if std == std else "")


def display_rows(sweep: Sweep, points: list[dict]) -> list[dict]:
    """The points table as people read it: the metric as 'mean ± std' (accuracies in %)."""
    m = sweep.metric
    shown = []
    for p in points:
        mean = p[f"{m}_mean"]
        value = "-" if mean != mean else metric_text(m, mean, p[f"{m}_std"])
        row = {k: (f"{p[k]:.4g}" if isinstance(p[k], float) else str(p[k])) for k in sweep.keys}
        params = p["params"]
        row.update({m: value, "seeds": f"{p['seeds']}/{p['trials']}", "epochs": p["epochs"], "stop": p["stop"],
                    "seconds": f"{p['seconds']:.1f}" if p["seconds"] == p["seconds"] else "-",
                    "params": "-" if _missing(params) else f"{int(params):,}"})
        shown.append(row)
    return shown


def write_best(sweep: Sweep, sweep_dir: Path, points: list[dict], trials: list[dict]) -> dict | None:
    """best.yaml: the resolved config of the best point's best finished trial, ready for cnnlab train."""
    m = sweep.metric
    best = next((p for p in points if p[f"{m}_mean"] == p[f"{m}_mean"]), None)
    if best is None:
        return None
    mine = [t for t in trials if all(t[k] == best[k] for k in sweep.keys) and t["status"] in DONE]
    # a completed trial before an early-stopped one: best.yaml trains all the planned epochs; on a tie the first seed
    trial = min(mine, key=lambda t: (t["status"] != "completed", -t[m] if sweep.mode == "max" else t[m], t["seed"], t["trial"]))
    run_dir = sweep_dir / trial["run_dir"]
    data = read_yaml(run_dir / runs.CONFIG, stored=True)
    data["name"] = name_within(sweep.name, "-best")
    given = runs.read_json(sweep_dir / runs.SUMMARY).get("data_dir")  # the sweep's --data-dir, if any
    if given and not data.get("dataset", {}).get("data_dir"):
        data.setdefault("dataset", {})["data_dir"] = given  # so that best.yaml trains on the same files anywhere
    threads = runs.read_json(run_dir / runs.SUMMARY).get("threads") if (run_dir / runs.SUMMARY).is_file() else None
    if isinstance(threads, int) and not data.get("train", {}).get("threads"):
        # the trial's own (its share of the cores): another count gives other numbers in the last digits
        data.setdefault("train", {})["threads"] = threads
    point = ", ".join(f"{k}={show(best[k])}" for k in sweep.keys)
    ended = "" if best["stop"] == "completed" else f" (its trials: {best['stop']})"  # no point had all its trials complete
    header = (
        f"# Best point of sweep {sweep.name} ({sweep_dir.name}): {point}\n"
        f"# {m} {metric_text(m, best[f'{m}_mean'], best[f'{m}_std'])} over {best['seeds']} seed(s)"
        f"{ended}; this seed ({trial['seed']}) gave "
        f"{metric_text(m, trial[m])} after {trial['epochs']} epoch(s) in {trial['run_dir']}\n"
    )
    runs.atomic_write(sweep_dir / "best.yaml", header + dump_yaml(data))
    return {"point": {k: best[k] for k in sweep.keys}, f"{m}_mean": best[f"{m}_mean"], f"{m}_std": _number(best[f"{m}_std"]),
            "seed": trial["seed"], m: trial[m], "run_dir": trial["run_dir"], "config": "best.yaml"}


def _number(x) -> float | None:
    """NaN (one seed's std) as null: summary.json stays strict JSON."""
    return None if _missing(x) else float(x)


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def figure(sweep: Sweep, points: list[dict]):
    """The metric against each swept key (one panel per key, one line per value of the other keys),
    error bars over seeds; a log axis where the range is log or the values span two decades.
    Values that are not numbers (whole model sections, names) sit side by side in the sweep's order."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from cnnlab.figures import plain

    m, scale = sweep.metric, 100 if sweep.metric.endswith("acc") else 1
    keys = sweep.keys
    widths = [5.2 if _numeric([p[k] for p in points]) else 2 + 0.55 * len({p[k] for p in points}) for k in keys]
    fig = Figure(figsize=(max(6.5, sum(widths)), 4.4))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        entry = sweep.spec.space[key]
        values = list(dict.fromkeys(p[key] for p in points))
        numeric = _numeric(values)
        if numeric:
            values.sort()
        elif entry.values is not None:  # the sweep file's order, not the ranking
            values.sort(key=lambda v: _rank(entry, v))
        where = {v: (v if numeric else j) for j, v in enumerate(values)}
        others = [k for k in keys if k != key]
        groups: dict[tuple, list[dict]] = {}
        for p in points:
            groups.setdefault(tuple(p[k] for k in others), []).append(p)
        for label, group in groups.items():
            group = sorted(group, key=lambda p: where[p[key]])
            x = [where[p[key]] for p in group]
            y = np.array([p[f"{m}_mean"] for p in group], dtype=float) * scale
            err = np.array([p[f"{m}_std"] for p in group], dtype=float) * scale
            name = plain(", ".join(f"{k}={show(v)}" for k, v in zip(others, label))) or None
            (line,) = ax.plot(x, y, marker="o", label=name, linestyle="-" if numeric else "none")
            spread = ~np.isnan(err)  # one seed: no error bar, rather than one of zero length with its caps
            if spread.any():
                ax.errorbar(np.array(x)[spread], y[spread], yerr=err[spread], fmt="none", capsize=4, ecolor=line.get_color())
        if numeric and (entry.log or (min(values) > 0 and max(values) >= 100 * min(values))):
            ax.set_xscale("log")
        elif numeric and all(isinstance(v, int) for v in values):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not numeric:
            ax.set_xticks(range(len(values)), [plain(show(v)) for v in values], rotation=30, ha="right", fontsize=8)
            ax.set_xlim(-0.5, len(values) - 0.5)
        ax.set(xlabel=key, ylabel=METRIC_LABELS[m], title=f"{METRIC_LABELS[m].split(' (')[0]} vs {key}")
        ax.grid(alpha=0.3)
        if others and len(groups) <= 8:
            ax.legend(fontsize=8)
    seeds = max(p["seeds"] for p in points)  # those a point's mean is over (not its trials: TPE may draw a point again)
    over = counted(seeds, "seed") if len({p["seeds"] for p in points}) == 1 else f"up to {seeds} seeds"
    spread = f"mean ± std over {over}" if seeds > 1 else "one seed each, no spread" if seeds else "no finished trial"
    fig.suptitle(f"{sweep.name} on {sweep.datasets}: {m} at the last epoch, {spread}")
    fig.tight_layout()
    return fig


@dataclass
class Outcome:
    status: str  # completed | failed | interrupted
    trials: list[dict]
    points: list[dict]
    best: dict | None
    failed: list[dict]


def finish(sweep: Sweep, sweep_dir: Path, records: list[dict], signum: int | None = None) -> Outcome:
    """Write trials.csv, results.csv/.md, best.yaml, the figure and summary.json from Tune's records.
    Whatever stops that on the way (a trial's summary.json edited by hand, a full disk, a signal)
    marks the sweep failed or interrupted, never leaves it 'running'; what --resume redoes once fixed.
    What it raises carries the sweep directory (see errors.in_run)."""
    try:
        return _finish(sweep, sweep_dir, records, signum)
    except KeyboardInterrupt as e:  # also Interrupted (interrupts.STOP_SIGNALS)
        raise mark_interrupted(sweep_dir, e, signum) from None
    except BaseException as e:
        mark_failed(sweep_dir, e)
        if isinstance(e, CnnlabError):
            raise in_run(type(e)(f"{e} (the trials are kept; once fixed, {resume_hint(sweep_dir)})"), sweep_dir) from None
        raise in_run(e, sweep_dir)


def mark_failed(sweep_dir: Path, e: BaseException) -> None:
    update_summary(sweep_dir, status="failed", error=first_line(e), finished_at=runs.utc_now())


def mark_interrupted(sweep_dir: Path, e: KeyboardInterrupt, received: int | None = None) -> Interrupted:
    """Mark the sweep interrupted by e (a signal our handler `received`, if e does not say which);
    returns the Interrupted to raise, which says how to continue it and carries the sweep directory
    (see errors.in_run)."""
    stopped = Interrupted.of(e, "sweep", resume_hint(sweep_dir), received)
    update_summary(sweep_dir, status="interrupted", error=str(stopped), finished_at=runs.utc_now())
    return in_run(stopped, sweep_dir)


def _finish(sweep: Sweep, sweep_dir: Path, records: list[dict], signum: int | None) -> Outcome:
    from cnnlab.figures import save
    from cnnlab.report import markdown

    trials = trial_rows(sweep, sweep_dir, records)
    failed = [t for t in trials if t["status"] == "failed"]
    finished = sum(t["status"] in DONE for t in trials) + len(failed)
    status = "interrupted" if finished < sweep.n_trials else ("failed" if failed else "completed")
    if status == "interrupted":
        settle_interrupted(sweep_dir, records)
    runs.write_table(sweep_dir / "trials.csv", trials)
    points = point_rows(sweep, trials) if trials else []
    best = write_best(sweep, sweep_dir, points, trials) if points else None
    if points:
        runs.write_table(sweep_dir / "results.csv", points)
        title = f"# Sweep {sweep.name}: {sweep.describe()}\n\n"
        runs.atomic_write(sweep_dir / "results.md", title + markdown(display_rows(sweep, points)))
        save(figure(sweep, points), sweep_dir / f"{sweep.metric}.png")
    m = sweep.metric
    if status == "interrupted":  # Tune took the signal and returned; signum: the one our handler saw, if any
        error = f"sweep stopped by {signal_name(signum)}; {resume_hint(sweep_dir)}"
    else:
        error = failed[0]["error"] if failed else None
    update_summary(
        sweep_dir, status=status, finished_at=runs.utc_now(), trials=len(trials), trials_finished=finished,
        trials_failed=len(failed), error=error, best=best,
        test_acc=best[f"{m}_mean"] if best and m == "test_acc" else None,
        train_seconds=sum(t["seconds"] or 0 for t in trials), nodes=len({t["node"] for t in trials if t["node"]}),
    )
    return Outcome(status, trials, points, best, failed)
