"""`cnnlab sweep`: the sweep file's validation and expansion (no Ray), then real sweeps on a local Ray
on tiny learnable data: ASHA's early stops, a trial equal to a plain `cnnlab train`, and --resume."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cnnlab.config import load_config
from cnnlab.errors import ConfigError, RunError
from cnnlab.sweep import load_sweep
from conftest import ROOT, needs_ray, no_room_for
from fakedata import IDX_FILES, write_idx
from test_train import cnnlab

BASE = ROOT / "configs" / "mnist_cnn.yaml"


def make_learnable_mnist(root: Path, n_train: int = 200, n_test: int = 100) -> Path:
    """MNIST-format files where each class lights its own 6x6 block: a good lr learns them in a few
    epochs, a tiny one stays at chance, so early stopping has something clear to act on."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, c in enumerate(labels):
            r, q = divmod(int(c), 4)
            images[i, 2 + 8 * r: 8 + 8 * r, 2 + 6 * q: 8 + 6 * q] = 255
        write_idx(raw / IDX_FILES[split][0], images)
        write_idx(raw / IDX_FILES[split][1], labels)
    return root


def write_sweep(path: Path, **body) -> Path:
    """A sweep file over the study A CNN, on the CPU, batch 20."""
    data = {"base": str(BASE), "set": {"device": "cpu", "train.batch_size": 20}, **body}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    return make_learnable_mnist(tmp_path_factory.mktemp("learnable"))


def last_line(out) -> Path:
    return Path(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- the sweep file, no Ray
@pytest.mark.parametrize("body,overrides,message", [
    ({"space": {"optimizer.lr": [0.1]}, "schedular": "asha"}, [], "unknown key 'schedular'; did you mean 'scheduler'?"),
    ({"space": {"optimizer.lrr": [0.1, 0.5]}}, [], "space: unknown key 'optimizer.lrr'; did you mean 'optimizer.lr'?"),
    ({"space": {"optimizer.lr": {"low": 0.1, "hihg": 1}}}, [], "space.optimizer.lr: unknown key 'hihg'; did you mean 'high'?"),
    ({"space": {"optimizer.lr": {"low": 0.1, "high": 1}}}, [], "space.optimizer.lr: a range needs num"),
    ({"space": {"optimizer.lr": 0.5}}, [], "space.optimizer.lr: give a list of values or a range"),
    ({"space": {"model.n_feature": [4, 0]}}, [], "model.n_feature: Input should be greater than 0"),
    ({"space": {"seed": [1, 2]}}, [], "use seeds: [...]"),
    ({"space": {"optimizer.lr": [0.1]}}, ["train.epoch=2"], "unknown key 'train.epoch'; did you mean 'train.epochs'?"),
    ({"space": {"optimizer.lr": [0.1]}}, ["metrc=test_loss"], "unknown key 'metrc' (neither a sweep key nor a config key); did you mean 'metric'?"),
    ({"space": {"optimizer.lr": [0.1]}}, ["optimiser.lr=0.1"], "unknown key 'optimiser' (neither a sweep key nor a config key); did you mean 'optimizer'?"),
    ({"space": {"optimizer.lr": [0.1]}}, ["crop_padding=3"], "unknown key 'crop_padding' (neither a sweep key nor a config key); did you mean 'transform.augment.crop_padding'?"),
    # only a key the base config has (with its overrides): its optimizer is sgd, which has no eps
    ({"space": {"optimizer.lr": [0.1]}}, ["eps=1e-6"], "unknown key 'eps' (neither a sweep key nor a config key); valid: a sweep key"),
    ({"space": {"optimizer.lr": [0.1]}}, ["eps=1e-6", "optimizer.name=adam"], "unknown key 'eps' (neither a sweep key nor a config key); did you mean 'optimizer.eps'?"),
    ({"space": {"optimizer.lr": [0.1]}}, ["space.optimizer.lr=null"], "space is empty: nothing to sweep; give at least one key"),
    ({"space": {}}, [], "space is empty: nothing to sweep"),
    ({"space": {"optimizer.lr": [0.1]}}, ["method=bayes"], "method: must be one of 'grid', 'random' or 'tpe'"),
    ({"space": {"optimizer.lr": [0.1]}, "scheduler": {"name": "asha", "grace_period": 3}}, [], "grace_period (3) must be below train.epochs (1)"),
    ({"spce": {"optimizer.lr": [0.1]}}, [], "unknown key 'spce'; did you mean 'space'?"),  # not "space: Field required"
    ({"set": {"device": "cpu"}, "space": {"train.batch_size": {"low": 16.5, "high": 64.7, "integer": True}}, "method": "random"}, [], "an integer range needs whole bounds"),
    # a range's points are floats (32.0) unless it says integer: true, which the error now says
    ({"set": {"device": "cpu"}, "space": {"train.batch_size": {"low": 32, "high": 256}}, "method": "random"}, [],
     "space: train.batch_size: Input should be a valid integer (got 32.0); for a range of whole numbers add integer: true to space.train.batch_size"),
    ({"space": {"optimizer.lr": [0.1], "model.n_feature": {"low": 4, "high": 8, "num": 3}}}, [],
     "model.n_feature: Input should be a valid integer (got 4.0); for a range of whole numbers add integer: true to space.model.n_feature"),
    ({"set": {"device": "cpu"}, "space": {"train.batch_size": {"low": 16.5, "high": 64}}, "method": "random"}, [],  # integer: true alone would be refused
     "(got 16.5); for a range of whole numbers give whole bounds and integer: true to space.train.batch_size"),
    ({"space": {"optimizer": [{"name": "adam"}], "optimizer.lr": [0.1]}}, [], "optimizer and optimizer.lr overlap"),
    # a key both fixed for every trial and swept: the trials took the space's value, sweep.yaml said the set's
    ({"space": {"optimizer.lr": [0.1], "train.epochs": [1]}, "set": {"train.epochs": 2}}, [],
     ": set.train.epochs: train.epochs is swept too (space.train.epochs); fix it or sweep it, not both"),
    ({"space": {"optimizer.lr": [0.1]}, "set": {"optimizer": {"name": "sgd", "lr": 0.2}}}, [], ": set.optimizer.lr: optimizer.lr is swept too"),
    ({"space": {"optimizer": [{"name": "sgd", "lr": 0.1}]}, "set": {"optimizer.lr": 0.2}}, [], ": set.optimizer.lr: optimizer.lr is swept too (space.optimizer)"),
    ({"space": {"optimizer.lr": [0.1]}}, ["optimizer.lr=0.3"], ", override optimizer.lr=0.3: optimizer.lr is swept too (space.optimizer.lr)"),
    ({"space": {"model.name": ["lenet", "keras_cnn"]}}, ["set.model.name=lenet", "set.model.init=default", "space.model.init=[xavier]"],
     ", override set.model.init=default: model.init is swept too (", ),
    # a section's kind may be both: fixed, it lets the base take keys of that kind (model.init: xavier is lenet's)
    ({"space": {"model.name": ["lenet"]}, "set": {"model.name": "lenet", "model.init": "xavier"}}, [], None),
    # not a plain setting called name: the dataset's is no kind of section
    ({"space": {"dataset.name": ["mnist", "fashion-mnist"]}, "set": {"dataset.name": "fashion-mnist"}}, [], ": set.dataset.name: dataset.name is swept too"),
    # a mistake in the sweep file's set is named there, not as the base config's own
    ({"space": {"optimizer.lr": [0.1]}, "set": {"optimizer.lrr": 0.1}}, [], ": set.optimizer.lrr: unknown key 'optimizer.lrr'; did you mean 'optimizer.lr'?"),
    ({"space": {"optimizer.lr": [0.1]}, "set": {"train.epochs": -1}}, [], ": set.train.epochs: train.epochs: Input should be greater than 0"),
    # a bad value typed for the base is named as typed, a set key too
    ({"space": {"optimizer.lr": [0.1]}}, ["set.train.epochs=abc"], ", override set.train.epochs=abc: train.epochs: Input should be a valid integer (got 'abc')"),
    ({"space": {"optimizer.lr": [0.1]}}, ["optimizer.nesterov=true", "optimizer.momentum=0", "train.epochs=2"], ", override optimizer.momentum=0: optimizer: nesterov needs a momentum above 0"),
    ({"space": {"optimizer.lr": [0.1]}}, ["seed=5"], "a sweep's trials take their seeds from seeds=[...], e.g. seeds=[5]"),
    ({"space": {"optimizer.lr": [0.1]}, "set": {"device": "cpu", "seed": 7}}, [], "set.seed: a sweep's trials take their seeds from seeds=[...], e.g. seeds=[7]"),
    ({"space": {"optimizer.lr": [0.1]}}, ["set.seed=5"], ", override set.seed=5: a sweep's trials take their seeds from seeds=[...], e.g. seeds=[5]"),
    ({"space": {"optimizer.lr": [0.1]}, "resources": {"gpus": -1}}, [], ": resources.gpus: Input should be greater than or equal to 0"),
    ({"space": {"optimizer.lr": [0.1]}}, ["resources.gpus=.inf"], ": resources.gpus: Input should be a finite number (got inf)"),
    ({"space": {"optimizer.lr": [0.1]}}, ["resources.gpus=some"], ": resources.gpus: must be one of 'auto' (got 'some')"),
    # a grid is expanded in memory: refused, not the memory exhausted
    ({"space": {"optimizer.lr": {"low": 0.1, "high": 1, "num": 10**11}}}, [], "space: a grid of 100,000,000,000 points is more than 10,000"),
    ({"space": {"optimizer.lr": {"low": 0.1, "high": 1, "num": 200}, "optimizer.momentum": {"low": 0, "high": 0.9, "num": 200}}}, [], "a grid of 40,000 points"),
])
def test_sweep_file_errors_say_where_and_the_closest_key(tmp_path, body, overrides, message):
    path = write_sweep(tmp_path / "bad.yaml", **body)
    if message is None:  # taken
        assert load_sweep(path, overrides).points
        return
    with pytest.raises(ConfigError) as e:
        load_sweep(path, overrides)
    assert str(e.value).startswith(str(path)) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_the_base_config_is_named_by_its_plain_path(tmp_path, monkeypatch):
    """As a study names its members: configs/mnist_cnn.yaml, not configs/sweeps/../mnist_cnn.yaml."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs" / "sweeps").mkdir(parents=True)
    (tmp_path / "configs" / "mnist_cnn.yaml").write_text(BASE.read_text())
    for base, overrides, message in (("../missing.yaml", [], "base config file not found: configs/missing.yaml"),
                                     ("../mnist_cnn.yaml", ["model.n_feature=0"], "configs/sweeps/s.yaml: base configs/mnist_cnn.yaml, override model.n_feature=0: model.n_feature:")):
        write_sweep(tmp_path / "configs" / "sweeps" / "s.yaml", base=base, space={"optimizer.lr": [0.1]})
        with pytest.raises(ConfigError) as error:
            load_sweep(Path("configs/sweeps/s.yaml"), overrides)
        assert str(error.value).startswith(message), error.value


def test_files_whose_names_hold_other_characters_name_the_sweep_and_its_base_as_train_names_a_run(tmp_path):
    """'my sweep+1.yaml' was refused ("name: String should match pattern ..."), though cnnlab train takes
    such a file and names its run my_fc_1; so was a base config without a name of its own."""
    base = yaml.safe_load(BASE.read_text())
    del base["name"]
    (tmp_path / "my base+1.yaml").write_text(yaml.safe_dump(base))
    sweep = load_sweep(write_sweep(tmp_path / "my sweep+1.yaml", base="my base+1.yaml", space={"optimizer.lr": [0.1]}))
    assert (sweep.name, sweep.base.name) == ("my_sweep_1", "my_base_1")


def test_a_train_config_given_as_the_sweep_file_says_so(tmp_path):
    with pytest.raises(ConfigError) as e:  # not "unknown key 'seed'; did you mean 'seeds'?"
        load_sweep(BASE)
    assert str(e.value) == f"{BASE} is a config, not a sweep file: train it with cnnlab train {BASE}, or name it as a sweep file's base"


def test_a_study_file_given_as_the_sweep_file_says_so():
    """It said "unknown key 'members'; valid keys here: name, description, base, ...", where cnnlab
    train, summary and the rest name a study file as one."""
    study = ROOT / "configs" / "studies" / "fc_vs_cnn.yaml"
    with pytest.raises(ConfigError) as e:
        load_sweep(study)
    assert str(e.value) == f"{study} is a study file, not a sweep file: run it with cnnlab compare {study}"


def test_set_takes_dotted_overrides_like_space(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", space={"optimizer.lr": [0.1]})
    assert all(c.train.epochs == 2 for c in load_sweep(path, ["set.train.epochs=2"]).configs)


def test_grid_expansion_is_points_times_seeds(tmp_path):
    path = write_sweep(
        tmp_path / "grid.yaml", seeds=[0, 1, 2],
        space={"optimizer.lr": {"low": 0.001, "high": 0.1, "log": True, "num": 3}, "model.n_feature": {"low": 2, "high": 8, "integer": True, "num": 4}},
    )
    sweep = load_sweep(path)
    assert [p["optimizer.lr"] for p in sweep.points[::4]] == [0.001, 0.01, 0.1]
    assert [p["model.n_feature"] for p in sweep.points[:4]] == [2, 4, 6, 8]
    assert len(sweep.points) == 3 * 4 and sweep.n_trials == 3 * 4 * 3
    cfg = sweep.trial_config(sweep.points[-1], 2)
    assert (cfg.optimizer.lr, cfg.model.n_feature, cfg.seed, cfg.train.batch_size) == (0.1, 8, 2, 20)

    # overrides reach the sweep (seeds, a swept key) and the base config (train.epochs)
    sweep = load_sweep(path, ["seeds=[5]", "space.optimizer.lr=[0.5]", "space.model.n_feature=null", "train.epochs=4"])
    assert sweep.points == [{"optimizer.lr": 0.5}] and sweep.n_trials == 1 and sweep.base.train.epochs == 4
    # random and tpe draw `samples` points, each run once per seed
    assert load_sweep(path, ["method=tpe", "samples=7"]).n_trials == 7 * 3


def test_exponent_values_without_a_dot_are_numbers_not_strings(tmp_path):
    """YAML 1.1 reads 1e-3 as a string: swept values written so must be numbers in the points (and so in
    trials.csv, results, the figure's log axis), not strings the config converts later."""
    path = tmp_path / "exp.yaml"
    path.write_text(f"base: {BASE}\nset: {{device: cpu}}\nspace:\n  optimizer.lr: [1e-4, 1e-3, 1e-2]\n")
    for sweep in (load_sweep(path), load_sweep(path, ["space.optimizer.lr=[1e-4, 1e-3, 1e-2]"])):
        assert [p["optimizer.lr"] for p in sweep.points] == [1e-4, 1e-3, 1e-2]
        assert all(type(p["optimizer.lr"]) is float for p in sweep.points)


def test_a_sweep_over_the_optimizer_kind_gives_each_kind_its_defaults(tmp_path):
    from cnnlab.sweep import reopen, start

    path = write_sweep(tmp_path / "opt.yaml", space={"optimizer.name": ["sgd", "adam", "rmsprop"]})
    sweep = load_sweep(path)
    sgd, adam, rmsprop = (sweep.trial_config(p, 0) for p in sweep.points)
    assert (sgd.optimizer.name, sgd.optimizer.momentum) == ("sgd", sweep.base.optimizer.momentum)
    assert adam.optimizer == load_config(BASE, ["optimizer={name: adam}"]).optimizer  # Adam's defaults
    assert rmsprop.optimizer == load_config(BASE, ["optimizer={name: rmsprop}"]).optimizer
    # keys the sweep sets for every trial (set:, the command line) stay where the kind has them
    path = write_sweep(tmp_path / "set.yaml", space={"optimizer.name": ["sgd", "adam"]},
                       set={"device": "cpu", "optimizer.weight_decay": 0.0005})
    sweep = load_sweep(path, ["optimizer.lr=0.02", "optimizer.momentum=0.9"])
    resumed = reopen(start(sweep, tmp_path / "runs"))  # what --resume builds its trials from
    for point in sweep.points:
        for s in (sweep, resumed):
            o = s.trial_config(point, 0).optimizer
            assert (o.weight_decay, o.lr, getattr(o, "momentum", None)) == (0.0005, 0.02, 0.9 if o.name == "sgd" else None), o
    # a whole section set for every trial counts for the keys it sets, not for the defaults filled in
    path = write_sweep(tmp_path / "whole.yaml", space={"optimizer.name": ["sgd", "rmsprop", "adam"]},
                       set={"device": "cpu", "optimizer": {"name": "adam", "lr": 0.003}})
    sweep = load_sweep(path)
    assert [(o.name, o.lr) for o in (sweep.trial_config(p, 0).optimizer for p in sweep.points)] == [("sgd", 0.003), ("rmsprop", 0.003), ("adam", 0.003)]


def test_the_sweep_yaml_a_sweep_directory_keeps_runs_as_a_sweep_file(tmp_path):
    """sweep.yaml kept the sweep file's own base, relative to where that file was (../mnist_cnn.yaml):
    from the sweep directory it named nothing, and `cnnlab sweep <sweep dir>/sweep.yaml` failed. Now it
    names base.yaml beside it, and the config keys given on the command line, which a trial switching
    the optimizer keeps (adam's lr stays 0.02); --resume reads base.yaml, also in a directory an older
    cnnlab wrote."""
    from cnnlab.sweep import reopen, start

    (tmp_path / "sweeps").mkdir()
    (tmp_path / "mnist_cnn.yaml").write_text(BASE.read_text())
    path = write_sweep(tmp_path / "sweeps" / "opt.yaml", base="../mnist_cnn.yaml", space={"optimizer.name": ["sgd", "adam"]})
    sweep = load_sweep(path, ["optimizer.lr=0.02", "train.epochs=2", "seeds=[3]"])
    sweep_dir = start(sweep, tmp_path / "runs")
    trials = [sweep.trial_config(p, 3) for p in sweep.points]
    assert [(c.optimizer.name, c.optimizer.lr, c.train.epochs) for c in trials] == [("sgd", 0.02, 2), ("adam", 0.02, 2)]
    again = load_sweep(sweep_dir / "sweep.yaml")
    assert again.points == sweep.points and again.spec.seeds == [3]
    assert [again.trial_config(p, 3) for p in again.points] == trials
    assert [reopen(sweep_dir).trial_config(p, 3) for p in sweep.points] == trials
    old = yaml.safe_load((sweep_dir / "sweep.yaml").read_text()) | {"base": "../mnist_cnn.yaml", "set": sweep.spec.set}  # as an older cnnlab wrote it
    (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump(old))
    assert [reopen(sweep_dir).trial_config(p, 3) for p in sweep.points] == trials


def test_the_sweep_yaml_keeps_a_command_line_key_that_the_sweep_file_sets_too(tmp_path):
    """`cnnlab sweep configs/sweeps/lenet_lr.yaml train.epochs=3` (its set says train.epochs: 6) kept
    the file's 6 in sweep.yaml, so running that file again trained 6 epochs a trial; a key inside a
    section the set gives whole (optimizer: {...}) was lost the same way."""
    from cnnlab.sweep import start

    (tmp_path / "mnist_cnn.yaml").write_text(BASE.read_text())
    path = write_sweep(tmp_path / "s.yaml", base="mnist_cnn.yaml", space={"model.n_feature": [4, 6]},
                       set={"device": "cpu", "train.epochs": 6, "optimizer": {"name": "sgd", "lr": 0.5}})
    sweep = load_sweep(path, ["train.epochs=3", "optimizer.lr=0.1"])
    trials = [sweep.trial_config(p, 0) for p in sweep.points]
    assert {(c.train.epochs, c.optimizer.lr) for c in trials} == {(3, 0.1)}
    again = load_sweep(start(sweep, tmp_path / "runs") / "sweep.yaml")
    assert [again.trial_config(p, 0) for p in again.points] == trials

@pytest.mark.parametrize("body,described", [
    ({"seeds": [0], "space": {"optimizer.lr": [0.1]}}, "1 point(s) (grid) x 1 seed(s) = 1 trial, max test_acc"),
    ({"seeds": [0, 1], "space": {"optimizer.lr": [0.1]}}, "1 point(s) (grid) x 2 seed(s) = 2 trials, max test_acc"),
    ({"seeds": [0], "space": {"optimizer.lr": [0.1, 0.5]}, "method": "random", "samples": 1}, "1 point(s) (random, 1 sample) x 1 seed(s) = 1 trial, max test_acc"),
    ({"seeds": [0], "space": {"optimizer.lr": [0.1, 0.5]}, "method": "random", "samples": 3}, "3 point(s) (random, 3 samples) x 1 seed(s) = 3 trials, max test_acc"),
])
def test_a_sweep_of_one_trial_says_1_trial_not_1_trials(tmp_path, body, described):
    assert load_sweep(write_sweep(tmp_path / "s.yaml", **body)).describe() == described


def test_shipped_sweeps_expand(tmp_path):
    lenet = load_sweep(ROOT / "configs/sweeps/lenet_lr.yaml")
    assert 0.5 in [p["optimizer.lr"] for p in lenet.points] and lenet.n_trials == 7 * 3
    width = load_sweep(ROOT / "configs/sweeps/fc_vs_cnn_width.yaml")
    names = [p["model"]["name"] for p in width.points]
    assert names.count("fc") == names.count("cnn") == 4 and width.n_trials == 8 * 3


def finished_trials(sweep, sweep_dir: Path, accuracy) -> list[dict]:
    """Run directories and Tune records as finished trials leave them; accuracy(point, seed) -> test
    accuracy, or None for a trial that failed (its data missing on the node)."""
    from cnnlab import runs

    records = []
    for index, point in enumerate(sweep.points):
        for seed in sweep.spec.seeds:
            acc = accuracy(point, seed)
            run_dir = runs.new_run_dir(sweep_dir / "trials", f"t{index}{seed}")
            cfg = sweep.trial_config(point, seed, f"t{index}{seed}")
            runs.atomic_write(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json")))
            runs.write_json(run_dir / "summary.json", {"status": "completed", "test_acc": acc, "epochs": 1, "train_seconds": 1.0, "params": 100})
            records.append({"trial_id": f"t{index}{seed}", "index": index, "point": point, "seed": seed, "run_dir": str(run_dir), "node": "n1",
                            "node_ip": "10.0.0.1", "status": "completed" if acc else "failed", "error": None if acc else "MNIST not found (on node 10.0.0.1 n1)"})
    return records


def test_a_trial_cut_off_before_tune_heard_from_it_shows_its_epochs_and_directory(tmp_path):
    """A trial a Ctrl-C cut off in its second epoch was listed in trials.csv and results.csv as
    'epochs 0, unfinished' with no run_dir (helper h107): Tune's record of it named no directory,
    though the trial's own held its first epoch. It is found in trials/ by its trial id."""
    from cnnlab import runs
    from cnnlab.sweep import trial_rows, trial_run_name, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.1, 0.5]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    records = finished_trials(sweep, sweep_dir, lambda point, seed: 0.9)
    shutil.rmtree(records[1]["run_dir"])
    cut_off = runs.new_run_dir(sweep_dir / "trials", trial_run_name(sweep, "t10"))  # named as a trial names its run
    runs.atomic_write(cut_off / "config.yaml", "seed: 0\n")
    runs.write_json(cut_off / "summary.json", {"status": "interrupted", "epochs": 1, "train_seconds": 1.0, "params": 100})
    records[1].update(status="unfinished", run_dir=None)
    row = trial_rows(sweep, sweep_dir, records)[1]
    assert (row["status"], row["epochs"], row["run_dir"]) == ("unfinished", 1, f"trials/{cut_off.name}")
    records[1]["trial_id"] = "t99"  # no directory of its own: as before
    row = trial_rows(sweep, sweep_dir, records)[1]
    assert (row["epochs"], row["run_dir"]) == (0, None)


def test_results_average_over_seeds_best_first_and_best_yaml_is_the_best_trial(tmp_path):
    """finish() on run directories as trials leave them: one failed trial, two keys, two seeds."""
    from cnnlab.sweep import finish, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0, 1], space={"optimizer.lr": [0.1, 0.5], "model.n_feature": [4, 8]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    accuracy = {(0.1, 4): [0.80, 0.90], (0.1, 8): [0.60, None], (0.5, 4): [0.95, 0.97], (0.5, 8): [0.50, 0.60]}
    outcome = finish(sweep, sweep_dir, finished_trials(sweep, sweep_dir, lambda point, seed: accuracy[tuple(point.values())][seed]))

    assert outcome.status == "failed" and len(outcome.failed) == 1
    results = pd.read_csv(sweep_dir / "results.csv")
    # the point with a failed seed last, below one whose two seeds completed at a lower mean
    assert [tuple(r) for r in results[["optimizer.lr", "model.n_feature"]].to_numpy()] == [(0.5, 4), (0.1, 4), (0.5, 8), (0.1, 8)]
    assert results["test_acc_mean"].tolist() == pytest.approx([0.96, 0.85, 0.55, 0.60])
    assert results["test_acc_std"].iloc[0] == pytest.approx(np.std([0.95, 0.97], ddof=1)) and np.isnan(results["test_acc_std"].iloc[3])
    assert list(results["seeds"]) == [2, 2, 2, 1] and "1 failed" in results["stop"].iloc[3]
    best = load_config(sweep_dir / "best.yaml")
    assert (best.optimizer.lr, best.model.n_feature, best.seed) == (0.5, 4, 1)  # the best point's best seed
    assert "96.00% ± 1.41" in (sweep_dir / "results.md").read_text()
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["test_acc"] == pytest.approx(0.96) and "on node" in summary["error"]
    assert (sweep_dir / "test_acc.png").stat().st_size > 10_000
    shown = subprocess.run([sys.executable, "-m", "cnnlab", "show", str(sweep_dir)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert shown.returncode == 0 and "96.00% ± 1.41" in shown.stdout and "(sweep), failed" in shown.stdout, shown.stderr
    assert best.dataset.data_dir is None  # the trials found their data through $CNNLAB_DATA_DIR or ./data

    # a sweep given --data-dir: best.yaml names it, so that `cnnlab train best.yaml` finds the same files
    sweep_dir = start(sweep, tmp_path / "runs2", data_dir=tmp_path / "data")
    finish(sweep, sweep_dir, finished_trials(sweep, sweep_dir, lambda point, seed: accuracy[tuple(point.values())][seed]))
    assert load_config(sweep_dir / "best.yaml").dataset.data_dir == str((tmp_path / "data").resolve())


def test_a_finished_trials_line_and_best_yaml_give_an_accuracy_as_the_table_does(tmp_path, capsys):
    """Each finished trial's line said 'test_acc 0.098' and best.yaml's header 'test_acc 0.96 ± 0.01414'
    where the table below them says 9.80% and 96.00% ± 1.41; a loss stays a number."""
    from types import SimpleNamespace

    from cnnlab.ray_backend import _progress
    from cnnlab.sweep import finish, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0, 1], space={"optimizer.lr": [0.1, 0.5]}))
    trial = SimpleNamespace(config={"point": 1, "seed": 0}, status="RUNNING", last_result={"test_acc": 0.098, "epoch": 2, "node_ip": "10.0.0.1", "node": "n1"})
    _progress(SimpleNamespace(Callback=object), sweep).on_trial_complete(0, [trial], trial)
    assert capsys.readouterr().out == "[1/4] optimizer.lr=0.5 seed 0: test_acc 9.80% after 2 epoch(s) on 10.0.0.1 n1\n"
    losses = load_sweep(write_sweep(tmp_path / "l.yaml", seeds=[0], space={"optimizer.lr": [0.1]}, metric="test_loss"))
    trial.config, trial.last_result["test_loss"] = {"point": 0, "seed": 0}, 0.31234
    _progress(SimpleNamespace(Callback=object), losses).on_trial_complete(0, [trial], trial)
    assert "test_loss 0.3123 after" in capsys.readouterr().out
    # a failed trial's error names its node: the line named it twice ("... (on node 10.0.0.1 n1) on 10.0.0.1 n1")
    trial.last_result = {"test_acc": float("nan"), "error": "cannot create a run directory (on node 10.0.0.1 n1)", "node_ip": "10.0.0.1", "node": "n1"}
    _progress(SimpleNamespace(Callback=object), losses).on_trial_error(0, [trial], trial)
    assert capsys.readouterr().out == "[1/1] optimizer.lr=0.1 seed 0: failed: cannot create a run directory (on node 10.0.0.1 n1)\n"
    trial.last_result = {"node_ip": "10.0.0.1", "node": "n1"}  # a trial that died before it reported
    _progress(SimpleNamespace(Callback=object), losses).on_trial_error(0, [trial], trial)
    assert capsys.readouterr().out == "[1/1] optimizer.lr=0.1 seed 0: failed: see the Ray logs on 10.0.0.1 n1\n"

    sweep_dir = start(sweep, tmp_path / "runs")
    finish(sweep, sweep_dir, finished_trials(sweep, sweep_dir, lambda point, seed: [0.95, 0.97][seed] if point["optimizer.lr"] == 0.5 else 0.5))
    assert "# test_acc 96.00% ± 1.41 over 2 seed(s); this seed (1) gave 97.00% after 1 epoch(s)" in (sweep_dir / "best.yaml").read_text()


@pytest.mark.parametrize("winner,reported", [("fc", None), ("cnn", 0.96)])
def test_best_yaml_keeps_the_articles_number_only_for_the_articles_model_and_dataset(tmp_path, winner, reported):
    """best.yaml (and each trial) of a point that changes the base's model or dataset name kept the
    base's `reported`: an FC net won a sweep over mnist_cnn.yaml and best.yaml gave it the CNN's 96%.
    The rule is load_config's: another model or dataset name drops it, other keys keep it."""
    from cnnlab.sweep import finish, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", space={"model": [{"name": "fc", "hidden": [8, 8]}, {"name": "cnn", "n_feature": 4}]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    finish(sweep, sweep_dir, finished_trials(sweep, sweep_dir, lambda point, seed: 0.9 if point["model"]["name"] == winner else 0.5))
    best = load_config(sweep_dir / "best.yaml", stored=True)
    assert best.model.name == winner and (best.reported and best.reported.test_acc) == reported


@pytest.mark.parametrize("body,overrides,reported", [
    ({"space": {"optimizer.lr": [0.1]}}, [], 0.96),  # the base's own model and dataset
    ({"space": {"optimizer.lr": [0.1]}}, ["model.name=fc"], None),  # the command line, as load_config
    ({"space": {"optimizer.lr": [0.1]}, "set": {"dataset.name": "fashion-mnist"}}, [], None),
    ({"space": {"dataset.name": ["mnist", "fashion-mnist"]}}, [], None),  # a point on another dataset
    ({"space": {"model.name": ["fc"], "reported.test_acc": [0.88]}}, [], 0.88),  # a reported the sweep gives stays
    ({"space": {"model.name": ["fc"]}, "set": {"reported.test_acc": 0.88}}, [], 0.88),
])
def test_a_trial_on_another_model_or_dataset_has_no_articles_number(tmp_path, body, overrides, reported):
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", **body), overrides)
    cfg = sweep.trial_config(sweep.points[-1], 0)
    assert (cfg.reported and cfg.reported.test_acc) == reported


@pytest.mark.parametrize("key,value", [("test_acc", "high"), ("epochs", [1, 2]), ("params", 1.5)])
def test_a_hand_edited_trial_summary_is_one_line_not_a_traceback(tmp_path, key, value):
    """finish() (the end of a sweep and of its --resume) reads every trial's summary.json."""
    from cnnlab import runs
    from cnnlab.sweep import finish, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.1, 0.5]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    records = finished_trials(sweep, sweep_dir, lambda point, seed: 0.9)
    edited = Path(records[1]["run_dir"]) / runs.SUMMARY
    runs.write_json(edited, {**runs.read_json(edited), key: value})
    with pytest.raises(RunError, match=rf"^cannot read {edited}: '{key}' should be a .*, not .* \(edited by hand\?\) \(the trials are kept; once fixed, continue it with: cnnlab sweep --resume {sweep_dir}\)$"):
        finish(sweep, sweep_dir, records)
    summary = json.loads((sweep_dir / "summary.json").read_text())  # not 'running', which `cnnlab runs` shows as dead
    assert summary["status"] == "failed" and summary["error"].startswith(f"cannot read {edited}: '{key}'") and summary["finished_at"]


def resume_on_fake_tune(monkeypatch, capsys, sweep_dir: Path, records: list[dict], shutdown=None, signum=None) -> tuple[int, str, str]:
    """`cnnlab sweep --resume sweep_dir` through main(), Tune faked: it returns records (having taken
    signal signum, if given, as Tune takes a Ctrl-C); shutdown(), if given, runs as Ray shuts down.
    (exit code, stdout, stderr)"""
    from cnnlab import ray_backend
    from cnnlab.cli import main
    from cnnlab.commands import sweep as command

    @contextlib.contextmanager
    def session(address, what):
        yield type("Ray", (), {"cluster_resources": staticmethod(lambda: {"CPU": 4.0})})
        if shutdown is not None:
            shutdown()

    monkeypatch.setattr(ray_backend, "session", session)
    def run_sweep(*args, **kwargs):
        if signum is not None:
            with contextlib.suppress(KeyboardInterrupt):
                os.kill(os.getpid(), signum)
        return records

    monkeypatch.setattr(ray_backend, "run_sweep", run_sweep)
    monkeypatch.setattr(ray_backend, "check_restorable", lambda sweep_dir: None)  # no Tune state in these
    monkeypatch.setattr(ray_backend, "saved_records", lambda sweep, path: records)
    monkeypatch.setattr(command, "_check_local_ray", lambda *args, **kwargs: None)
    monkeypatch.setattr(sys, "argv", ["cnnlab", "sweep", "--resume", str(sweep_dir)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


@needs_ray
def test_a_sweep_resume_that_cannot_write_its_results_ends_failed_in_one_line(tmp_path, monkeypatch, capsys):
    from cnnlab import runs
    from cnnlab.sweep import start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.1, 0.5]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    records = finished_trials(sweep, sweep_dir, lambda point, seed: 0.9)
    no_room_for(monkeypatch, lambda path: path.suffix == ".png")
    code, out, err = resume_on_fake_tune(monkeypatch, capsys, sweep_dir, records)
    assert code == 1 and err == f"error: cannot write {sweep_dir / 'test_acc.png'}: No space left on device (the trials are kept; once fixed, continue it with: cnnlab sweep --resume {sweep_dir})\n"
    assert out.splitlines()[-1] == str(sweep_dir)  # what scripts take, as from a finished sweep
    summary = runs.read_json(sweep_dir / "summary.json")
    assert summary["status"] == "failed" and summary["error"] == f"cannot write {sweep_dir / 'test_acc.png'}: No space left on device"
    assert (sweep_dir / "results.csv").is_file() and (sweep_dir / "best.yaml").is_file()  # written before the figure: kept


@needs_ray
def test_a_signal_as_ray_shuts_down_marks_the_sweep_interrupted(tmp_path, monkeypatch, capsys):
    """A second Ctrl-C while Ray shuts down, after Tune returned: the results are not written yet.
    Either way, and for a failure there, stdout ends with the sweep directory."""
    from cnnlab import runs
    from cnnlab.interrupts import Interrupted
    from cnnlab.sweep import start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.1, 0.5]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    records = finished_trials(sweep, sweep_dir, lambda point, seed: 0.9)

    def shutdown():
        raise Interrupted(signal.SIGINT)

    code, out, err = resume_on_fake_tune(monkeypatch, capsys, sweep_dir, records, shutdown)
    hint = f"sweep stopped by SIGINT; continue it with: cnnlab sweep --resume {sweep_dir}"
    assert code == 130 and err == f"interrupted: {hint}\n", err
    assert out.splitlines()[-1] == str(sweep_dir)
    summary = runs.read_json(sweep_dir / "summary.json")  # not 'running', which `cnnlab runs` shows as dead
    assert summary["status"] == "interrupted" and summary["error"] == hint and not (sweep_dir / "results.csv").exists()

    def lost():  # a failure there instead (the cluster gone): the sweep is failed, and stdout ends with it all the same
        raise RunError("the cluster is gone")

    code, out, err = resume_on_fake_tune(monkeypatch, capsys, sweep_dir, records, lost)
    assert (code, err, out.splitlines()[-1]) == (1, "error: the cluster is gone\n", str(sweep_dir))
    assert runs.read_json(sweep_dir / "summary.json")["status"] == "failed"


@needs_ray
def test_a_sweep_of_one_trial_ends_saying_1_trial(tmp_path, monkeypatch, capsys):
    """Its last line said '1 of 1 trials failed' and 'after 0 of 1 trials'. Interrupted, it said
    'error: sweep interrupted ...' where every other command says 'interrupted: ...'."""
    from cnnlab import runs
    from cnnlab.sweep import start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.1]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    records = finished_trials(sweep, sweep_dir, lambda point, seed: None)
    code, out, err = resume_on_fake_tune(monkeypatch, capsys, sweep_dir, records)
    assert code == 1 and err.startswith("error: 1 of 1 trial failed; the first: MNIST not found"), err
    records[0]["status"] = "unfinished"  # cut off before its run finished
    runs.write_json(Path(records[0]["run_dir"]) / "summary.json", {"status": "running", "epochs": 0})
    code, out, err = resume_on_fake_tune(monkeypatch, capsys, sweep_dir, records)
    assert code == 130 and err == f"interrupted: sweep stopped by a signal after 0 of 1 trial; continue it with: cnnlab sweep --resume {sweep_dir}\n", err
    code, out, err = resume_on_fake_tune(monkeypatch, capsys, sweep_dir, records, signum=signal.SIGTERM)  # Tune took it and returned
    assert code == 143 and err.startswith("interrupted: sweep stopped by SIGTERM after 0 of 1 trial; continue it with"), err
    assert out.splitlines()[-1] == str(sweep_dir)


@needs_ray
def test_a_ctrl_c_that_tune_took_is_named_sigint(monkeypatch):
    """Tune's own SIGINT handler takes a Ctrl-C (fit() then returns) and puts back ours without a
    word of which signal it was: a Ctrl-C sweep said 'sweep stopped by a signal'. Ours back after
    fit() is that Ctrl-C; and Tune's, left in place when none came, is replaced by ours (it would
    take a Ctrl-C while the results are written without stopping anything)."""
    from ray.tune.tune import _setup_signal_catching  # what Tuner.fit() installs

    from cnnlab.interrupts import Signals
    from cnnlab.ray_backend import noting_tunes_sigint

    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    usr1 = signal.getsignal(signal.SIGUSR1)
    signals = Signals()
    try:
        with signals.installed():
            ours = signal.getsignal(signal.SIGINT)
            with noting_tunes_sigint(signals):
                stopping = _setup_signal_catching()
                signal.raise_signal(signal.SIGINT)  # a Ctrl-C, which Tune takes
            assert stopping.is_set() and signals.received == signal.SIGINT and signal.getsignal(signal.SIGINT) == ours

            signals.received = None
            with noting_tunes_sigint(signals):
                _setup_signal_catching()  # the sweep ends without a signal
            assert signals.received is None and signal.getsignal(signal.SIGINT) == ours

        # a sweep started ignoring Ctrl-C (a job a script put in the background) leaves it to the
        # script: Tune took it all the same, and the sweep stopped 'by SIGINT'
        sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            with signals.installed(), noting_tunes_sigint(signals):
                stopping = _setup_signal_catching()
                signal.raise_signal(signal.SIGINT)
            assert not stopping.is_set() and signals.received is None and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ  # as it was
        finally:
            signal.signal(signal.SIGINT, sigint)
    finally:
        signal.signal(signal.SIGUSR1, usr1)


def test_an_interrupted_sweep_says_how_to_continue_and_keeps_the_params_of_unfinished_points(tmp_path):
    """finish() after Tune took a Ctrl-C and returned: one trial completed, one cut off, one never started."""
    from cnnlab import runs
    from cnnlab.sweep import display_rows, finish, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.1, 0.5, 1.0]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    records = finished_trials(sweep, sweep_dir, lambda point, seed: 0.9)[:2]
    records[1]["status"] = "unfinished"
    cut_off = Path(records[1]["run_dir"])
    runs.write_json(cut_off / "summary.json", {**runs.read_json(cut_off / "summary.json"), "status": "running", "test_acc": None})
    outcome = finish(sweep, sweep_dir, records)

    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert (outcome.status, summary["status"]) == ("interrupted", "interrupted")
    assert summary["error"] == f"sweep stopped by a signal; continue it with: cnnlab sweep --resume {sweep_dir}"
    finish(sweep, sweep_dir, records, signal.SIGTERM)  # the signal cnnlab's own handler saw before Tune took it
    assert json.loads((sweep_dir / "summary.json").read_text())["error"].startswith("sweep stopped by SIGTERM; ")
    assert json.loads((cut_off / "summary.json").read_text())["status"] == "interrupted"
    # params is the point's model, known from the cut-off trial's run as well (trials.csv has it)
    assert list(pd.read_csv(sweep_dir / "trials.csv")["params"]) == [100, 100]
    assert list(pd.read_csv(sweep_dir / "results.csv")["params"]) == [100, 100]
    assert [(row["optimizer.lr"], row["stop"], row["params"]) for row in display_rows(sweep, outcome.points)] == [
        ("0.1", "completed", "100"), ("0.5", "unfinished", "100")]


def test_an_interrupted_sweep_removes_its_own_unwritten_trials_not_a_folder_of_the_users(tmp_path):
    """An interrupted sweep removed an empty folder the user had made in its trials/, as if it were a
    trial's run directory killed before its run was written. Now it removes only those of the trials
    named as cnnlab names a run (here one Tune started as the kill came: no summary.json, an atomic write's temp file)."""
    from cnnlab import runs
    from cnnlab.sweep import finish, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.1, 0.5]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    records = finished_trials(sweep, sweep_dir, lambda point, seed: 0.9)
    shutil.rmtree(records.pop()["run_dir"])  # the second point's trial never ran but for its directory below
    records.append({**records[0], "trial_id": "t10", "index": 1, "point": sweep.points[1], "status": "unfinished", "run_dir": None})
    unwritten = runs.new_run_dir(sweep_dir / "trials", f"{sweep.base.name}-t10")
    (unwritten / ".config.yaml.x1y2z3.tmp").write_text("seed: ")
    (sweep_dir / "trials" / "notes").mkdir()
    assert finish(sweep, sweep_dir, records).status == "interrupted"
    assert not unwritten.exists() and (sweep_dir / "trials" / "notes").is_dir()


@needs_ray
def test_a_stopped_sweep_whose_tune_records_cannot_be_read_still_removes_its_unwritten_trial(tmp_path, monkeypatch, capsys):
    """A sweep stopped inside Tune took its own trials from Tune's saved records: none when Tune's state
    could not be read, and none for a trial started after Tune's last save (every 10 s or so), the very
    one a kill cuts off as its directory is made; that empty directory was left in trials/. Now any
    directory named as cnnlab names a run and never written is removed, records or not."""
    from cnnlab import runs
    from cnnlab.interrupts import Interrupted
    from cnnlab.sweep import TRIALS, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.1, 0.5]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    finished = [Path(r["run_dir"]).name for r in finished_trials(sweep, sweep_dir, lambda point, seed: 0.9)]
    unwritten = runs.new_run_dir(sweep_dir / TRIALS, f"{sweep.base.name}-1a2b3_00002")
    (unwritten / ".config.yaml.x1y2z3.tmp").write_text("seed: ")

    def shutdown():
        raise Interrupted(signal.SIGTERM)

    code, out, err = resume_on_fake_tune(monkeypatch, capsys, sweep_dir, [], shutdown)  # [] as saved_records when Tune's state is unreadable
    assert code == 143, err
    assert not unwritten.exists() and sorted(p.name for p in (sweep_dir / TRIALS).iterdir()) == sorted(finished)


def test_resuming_a_sweep_that_is_still_running_is_refused(tmp_path):
    pytest.importorskip("ray")
    from cnnlab import runs
    from cnnlab.sweep import start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.1]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    before = (sweep_dir / "summary.json").read_text()
    with runs.training_lock(sweep_dir):  # as the process running the sweep holds it
        out = cnnlab("sweep", "--resume", sweep_dir)
    assert out.returncode == 1 and f"still being trained by process {os.getpid()}" in out.stderr, out.stderr
    assert (sweep_dir / "summary.json").read_text() == before  # its summary untouched
    out = cnnlab("sweep", "--resume", sweep_dir, "--runs-dir", tmp_path / "elsewhere")  # would be ignored
    assert out.returncode == 2 and "give no SWEEP_FILE, KEY=VALUE, --device or --runs-dir" in out.stderr, out.stderr


def test_a_null_swept_value_can_be_the_best_point(tmp_path):
    """pandas groups a null as NaN: the null point must still find its trials for best.yaml."""
    from cnnlab.sweep import finish, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"train.max_steps": [None, 1]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    outcome = finish(sweep, sweep_dir, finished_trials(sweep, sweep_dir, lambda point, seed: 0.9 if point["train.max_steps"] is None else 0.5))
    assert outcome.status == "completed"
    assert load_config(sweep_dir / "best.yaml").train.max_steps is None
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["best"]["point"] == {"train.max_steps": None}


def test_a_swept_text_with_dollar_signs_is_drawn_as_it_is(tmp_path):
    """'fc $^$' would be mathtext that does not parse, failing the figure at the end of the sweep."""
    from cnnlab.sweep import finish, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"description": ["fc $^$", "b"], "optimizer.lr": [0.1, 0.5]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    assert finish(sweep, sweep_dir, finished_trials(sweep, sweep_dir, lambda point, seed: 0.9)).status == "completed"
    assert (sweep_dir / "test_acc.png").stat().st_size > 10_000


def test_tied_points_rank_by_std_then_the_sweeps_order_whatever_order_tune_returns_them(tmp_path):
    """A tpe sweep's records carry no grid index; a resumed sweep gets them back in another order.
    lr 0.1 is drawn twice (four trials), lr 2.0 lost a seed: every point's mean is 0.5."""
    from cnnlab.sweep import finish, start

    space = {"optimizer.lr": [0.1, 0.5, 1.0, 2.0]}
    grid = load_sweep(write_sweep(tmp_path / "grid.yaml", seeds=[0, 1], space=space))  # makes the trials
    again = load_sweep(write_sweep(tmp_path / "again.yaml", seeds=[0, 1], space={"optimizer.lr": [0.1]}))  # 0.1 drawn again
    tpe = load_sweep(write_sweep(tmp_path / "tpe.yaml", seeds=[0, 1], space=space, method="tpe", samples=5))
    sweep_dir = start(tpe, tmp_path / "runs")
    accuracy = {0.1: [0.5, 0.5], 0.5: [0.25, 0.75], 1.0: [0.5, 0.5], 2.0: [0.5, None]}
    records = finished_trials(grid, sweep_dir, lambda point, seed: accuracy[point["optimizer.lr"]][seed])
    for record in finished_trials(again, sweep_dir, lambda point, seed: accuracy[0.1][seed]):
        records.append({**record, "trial_id": f"t4{record['seed']}"})  # as the fifth point's trials were named
    for record in records:
        record["index"] = -1  # as decode() gives a drawn point

    written = []
    for order in (records, records[::-1], records[1::2] + records[::2]):
        outcome = finish(tpe, sweep_dir, order)
        written.append([(sweep_dir / name).read_text() for name in ("trials.csv", "results.csv", "results.md", "best.yaml")])
        assert [p["optimizer.lr"] for p in outcome.points] == [0.1, 1.0, 0.5, 2.0]  # std 0 (first in the space), 0, 0.35, none
        assert (outcome.best["point"], outcome.best["seed"], outcome.best["run_dir"]) == ({"optimizer.lr": 0.1}, 0, os.path.relpath(records[0]["run_dir"], sweep_dir))
    assert written[0] == written[1] == written[2]


def test_whole_numbers_stay_whole_in_the_tables_where_a_trial_lacks_them(tmp_path):
    """Trials that failed before making a run directory (data missing on the node) have no params:
    the others' stay 100, not 100.0, and theirs is an empty cell."""
    import csv

    from cnnlab.sweep import finish, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0, 1], space={"optimizer.lr": [0.1, 0.5]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    records = finished_trials(sweep, sweep_dir, lambda point, seed: 0.9 if (point["optimizer.lr"], seed) == (0.1, 0) else None)
    for record in records[1:]:
        shutil.rmtree(record["run_dir"])
        record["run_dir"] = None
    finish(sweep, sweep_dir, records)

    def column(name, key):
        return [row[key] for row in csv.DictReader((sweep_dir / name).read_text().splitlines())]

    assert column("trials.csv", "params") == ["100", "", "", ""]
    assert column("trials.csv", "seed") == ["0", "1", "0", "1"] and column("trials.csv", "epochs") == ["1", "0", "0", "0"]
    assert column("results.csv", "params") == ["100", ""] and column("results.csv", "seeds") == ["1", "0"]


def run_python(code: str):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_help_and_sweep_errors_import_neither_ray_nor_torch(tmp_path):
    bad = write_sweep(tmp_path / "bad.yaml", space={"optimizer.lrr": [0.1]})
    for argv in (["--help"], ["sweep", "--help"], ["sweep", str(bad)]):
        out = run_python(
            "import sys\nfrom cnnlab.cli import main\nsys.argv = ['cnnlab'] + %r\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print('exit', e.code)\n"
            "print('heavy', sorted(m for m in ('ray', 'torch') if m in sys.modules))" % argv
        )
        assert "heavy []" in out.stdout, (argv, out.stdout, out.stderr)
    assert "exit 2" in out.stdout and out.stderr.count("\n") == 1 and "did you mean 'optimizer.lr'" in out.stderr


def test_without_ray_sweep_and_address_say_how_to_install(tmp_path, learnable):
    path = write_sweep(tmp_path / "ok.yaml", space={"optimizer.lr": [0.1]})
    block = "import sys\nsys.modules['ray'] = None  # as if Ray were not installed\n"
    out = run_python(block + f"from cnnlab.cli import main\nsys.argv = ['cnnlab', 'sweep', {str(path)!r}, '--runs-dir', {str(tmp_path / 'runs')!r}]\nmain()")
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "pip install 'cnnlab[ray]'" in out.stderr and not (tmp_path / "runs").exists()
    # the study commands' --address goes through the same runner
    out = run_python(block + "from cnnlab.runner import Cell, run_cells\nfrom cnnlab.errors import CnnlabError\n"
                     "from cnnlab.config import config_from_dict\ncell = Cell(config_from_dict({'name': 't', 'model': {'name': 'fc'}}), {})\n"
                     f"try:\n    run_cells([cell], runs_dir={str(tmp_path / 'cells')!r}, address='auto')\nexcept CnnlabError as e:\n    print(e)")
    assert "pip install 'cnnlab[ray]'" in out.stdout and not (tmp_path / "cells").exists(), out.stderr


@needs_ray
def test_a_space_with_a_subset_larger_than_its_split_is_refused_before_the_sweep_directory(tmp_path, learnable):
    """Not trial by trial, after the sweep directory is made and the other points trained."""
    path = write_sweep(tmp_path / "big.yaml", seeds=[0], space={"dataset.train_subset": [100, 5000]})
    out = cnnlab("sweep", path, "--data-dir", learnable, "--runs-dir", tmp_path / "runs", timeout=120)
    assert out.returncode == 2 and out.stderr.splitlines() == [
        "error: dataset.train_subset=5000 is more than the 200 images of the mnist training split; ask for 200 or fewer, or leave it out to use them all"
    ], out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_resumed_sweeps_subsets_are_not_checked_again(tmp_path, learnable):
    """Its trials trained, or go on, as an earlier cnnlab accepted them (see load_splits); only a new
    sweep is refused a subset larger than its split."""
    from cnnlab.commands.sweep import _check_local_ray

    sweep = load_sweep(write_sweep(tmp_path / "big.yaml", seeds=[0], space={"dataset.train_subset": [100, 5000]}))
    _check_local_ray(sweep, learnable, resumed=True)
    with pytest.raises(ConfigError, match=r"^dataset.train_subset=5000 is more than the 200 images"):
        _check_local_ray(sweep, learnable, resumed=False)


def test_a_sweep_an_earlier_cnnlab_wrote_keeps_its_leading_zero_texts(tmp_path):
    """A cnnlab before 0089 was the number 89 wrote the text 0089 bare: in sweep.yaml (a sweep file named
    0089.yaml), and in a trial's config.yaml (a description). --resume reopens the sweep with its name,
    and best.yaml keeps the description, quoted, so that cnnlab train takes it."""
    from cnnlab.config import config_to_dict, dump_yaml
    from cnnlab.sweep import point_rows, reopen, start, write_best

    sweep = load_sweep(write_sweep(tmp_path / "0089.yaml", seeds=[0], space={"optimizer.lr": [0.01]}))
    path = start(sweep, tmp_path / "runs")
    stored = (path / "sweep.yaml").read_text()
    (path / "sweep.yaml").write_text(stored.replace("'0089'", "0089"))
    assert "name: 0089\n" in (path / "sweep.yaml").read_text() and reopen(path).name == "0089"
    run_dir = path / "trials" / "t0"
    run_dir.mkdir(parents=True)
    trained = config_to_dict(sweep.trial_config(sweep.points[0], 0))
    (run_dir / "config.yaml").write_text(dump_yaml({**trained, "description": "0089"}).replace("'0089'", "0089"))
    trials = [{"optimizer.lr": "0.01", "seed": 0, sweep.metric: 0.5, "epochs": 1, "status": "completed", "seconds": 1.0,
               "params": 10, "trial": "t0", "run_dir": "trials/t0"}]
    write_best(sweep, path, point_rows(sweep, trials), trials)
    assert load_config(path / "best.yaml").description == "0089"


# ---------------------------------------------------------------------------- sweeps on a local Ray
def test_trials_larger_than_the_cluster_are_refused_not_waited_for():
    """Against a cluster's totals, once connected (a local Ray's are checked before: test_errors)."""
    from cnnlab.ray_backend import check_fits
    from cnnlab.sweep import Resources

    with pytest.raises(ConfigError, match=r"asks for 64 CPUs \(resources.cpus\) but the Ray cluster has 8; lower resources.cpus or add nodes"):
        check_fits(Resources(cpus=64), {"CPU": 8.0})
    with pytest.raises(ConfigError, match=r"asks for 2 GPUs \(resources.gpus\) but the Ray cluster has 1"):
        check_fits(Resources(gpus=2), {"CPU": 8.0, "GPU": 1.0})
    assert check_fits(Resources(), {"CPU": 8.0, "GPU": 2.0}) == 1 and check_fits(Resources(), {"CPU": 8.0}) == 0  # gpus: auto


@needs_ray
def test_asha_sweep_stops_the_bad_lr_and_each_trial_is_an_ordinary_run(tmp_path, learnable):
    path = write_sweep(
        tmp_path / "asha.yaml", seeds=[0, 1], space={"optimizer.lr": [0.05, 1e-6]}, max_concurrent=1,
        scheduler={"name": "asha", "grace_period": 1}, **{"set": {"device": "cpu", "train.batch_size": 20, "train.epochs": 3}},
    )
    out = cnnlab("sweep", path, "--data-dir", learnable, "--runs-dir", tmp_path / "runs", timeout=300)
    assert out.returncode == 0, out.stderr
    sweep_dir = last_line(out)
    assert sweep_dir.parent == tmp_path / "runs" and (sweep_dir / ".kind").read_text() == "sweep"

    trials = pd.read_csv(sweep_dir / "trials.csv")
    assert len(trials) == 2 * 2 and sorted(trials["seed"]) == [0, 0, 1, 1]  # points x seeds
    bad, good = trials[trials["optimizer.lr"] == 1e-6], trials[trials["optimizer.lr"] == 0.05]
    assert set(bad["status"]) == {"stopped"} and (bad["epochs"] < 3).all()
    assert "completed" in set(good["status"]) and good["epochs"].max() == 3
    for _, t in bad.iterrows():  # the run directory says so too
        summary = json.loads((sweep_dir / t["run_dir"] / "summary.json").read_text())
        assert summary["status"] == "stopped" and "ASHA" in summary["error"] and summary["epochs"] == t["epochs"]

    results = pd.read_csv(sweep_dir / "results.csv")
    assert list(results["optimizer.lr"]) == [0.05, 1e-6]  # best first
    assert results["test_acc_mean"].iloc[0] > results["test_acc_mean"].iloc[1] + 0.3
    assert "± " in (sweep_dir / "results.md").read_text() and (sweep_dir / "test_acc.png").stat().st_size > 10_000
    best = load_config(sweep_dir / "best.yaml")
    assert best.optimizer.lr == 0.05 and best.name.endswith("-best") and best.train.epochs == 3
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["kind"] == "sweep" and summary["status"] == "completed" and summary["trials"] == 4
    listed = cnnlab("runs", "--csv", "--runs-dir", tmp_path / "runs")
    assert f"{sweep_dir.name},sweep," in listed.stdout

    # a completed trial is exactly what `cnnlab train` makes of the trial's resolved config
    trial = sweep_dir / good[good["status"] == "completed"]["run_dir"].iloc[0]
    plain = cnnlab("train", trial / "config.yaml", "--data-dir", learnable, "--runs-dir", tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr
    plain_dir = last_line(plain)
    assert sorted(p.name for p in plain_dir.iterdir()) == sorted(p.name for p in trial.iterdir())
    assert (plain_dir / "config.yaml").read_text() == (trial / "config.yaml").read_text()
    keys = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"]
    pd.testing.assert_frame_equal(pd.read_csv(plain_dir / "metrics.csv")[keys], pd.read_csv(trial / "metrics.csv")[keys])


@needs_ray
def test_a_diverged_trial_keeps_its_run_directory_in_trials_csv(tmp_path, learnable):
    """A trial whose loss became NaN made a run directory before failing: trials.csv names it."""
    path = write_sweep(tmp_path / "nan.yaml", seeds=[0], space={"optimizer.lr": [0.05, 1e5]}, max_concurrent=1)
    out = cnnlab("sweep", path, "--data-dir", learnable, "--runs-dir", tmp_path / "runs", timeout=300)
    assert out.returncode == 1 and "the loss became nan" in out.stderr, out.stderr
    sweep_dir = last_line(out)
    trials = pd.read_csv(sweep_dir / "trials.csv")
    failed = trials[trials["status"] == "failed"].iloc[0]
    assert failed["optimizer.lr"] == 1e5 and isinstance(failed["run_dir"], str), failed.to_dict()
    summary = json.loads((sweep_dir / failed["run_dir"] / "summary.json").read_text())
    assert summary["status"] == "failed" and "nan" in summary["error"] and failed["params"] == summary["params"]


def run_trial_without_tune(monkeypatch, sweep, trials_dir: Path, data: Path, trial_id: str) -> list[dict]:
    """Run one grid trial (the first point, its first seed) as Tune would, Tune faked: what it reports."""
    from ray import tune

    from cnnlab import ray_backend

    reported = []
    monkeypatch.setattr(tune, "get_context", lambda: type("Context", (), {"get_trial_id": staticmethod(lambda: trial_id)}))
    monkeypatch.setattr(tune, "report", reported.append)
    monkeypatch.setattr(ray_backend, "node_info", lambda: {"node": "n1", "node_ip": "127.0.0.1", "host": "here"})
    ray_backend._trial({"point": 0, "seed": sweep.spec.seeds[0]}, ray_backend.Job(sweep, str(trials_dir), str(data), 1))
    return reported


@needs_ray
def test_a_trial_without_checkpoints_cut_off_after_an_epoch_starts_again_on_resume(tmp_path, learnable, monkeypatch):
    """A resumed sweep (or a retry on another node) whose trial trained with train.checkpoint: false
    and was cut off after its first epoch failed it ('cannot resume: ... checkpoint.pt does not
    exist'); now the trial starts again in a new run directory, as a study's cell does."""
    from cnnlab.experiment import Stopped, run
    from cnnlab.sweep import TRIALS, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.05]},
                                   **{"set": {"device": "cpu", "train.batch_size": 20, "train.epochs": 2, "train.checkpoint": False}}))
    trials_dir = start(sweep, tmp_path / "runs") / TRIALS

    def cut_off(row, path):
        raise Stopped("the sweep was interrupted")

    earlier = run(sweep.trial_config(sweep.points[0], 0, f"{sweep.base.name}-t1"), runs_dir=trials_dir, data_dir=learnable, on_epoch=cut_off).path
    reported = run_trial_without_tune(monkeypatch, sweep, trials_dir, learnable, "t1")
    assert [(r["epoch"], r.get("error")) for r in reported] == [(1, None), (2, None)], reported
    again = Path(reported[-1]["run_dir"])
    assert again != earlier and json.loads((again / "summary.json").read_text())["status"] == "completed"


@needs_ray
def test_a_resumed_asha_sweep_judges_its_remaining_trials_against_the_trials_that_had_ended(tmp_path):
    """Tune saves no scheduler state: a resumed ASHA sweep judged its remaining trials against none
    of the trials finished before the interruption, so a poor one ran all its epochs where the
    uninterrupted sweep stops it. Now ASHA learns their rungs again from their runs' metrics.csv."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from cnnlab import runs
    from cnnlab.ray_backend import _scheduler

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", space={"optimizer.lr": [0.05, 0.04, 1e-6]}, scheduler={"name": "asha", "grace_period": 1},
                                   **{"set": {"device": "cpu", "train.epochs": 3}}))
    asha = _scheduler(sweep)  # as Tuner.restore brings it back: as it was when the sweep started
    asha.set_search_properties(sweep.metric, sweep.mode)
    for name, accuracy in (("good", 0.9), ("better", 0.95)):  # two trials that ended before the interruption
        (tmp_path / name).mkdir()
        runs.write_table(tmp_path / name / runs.METRICS, [
            {"epoch": e, "lr": 0.05, "train_loss": 0.5, "train_acc": accuracy, "test_loss": 0.5, "test_acc": accuracy,
             "epoch_seconds": 1.0, "samples_per_sec": 100.0} for e in (1, 2, 3)])
        asha.on_trial_add(None, SimpleNamespace(trial_id=name, status="TERMINATED", last_result={"run_dir": str(tmp_path / name)}))
    poor = SimpleNamespace(trial_id="poor", status="PENDING", last_result={})
    asha.on_trial_add(None, poor)
    assert asha.on_trial_result(None, poor, {"epoch": 1, "test_acc": 0.1}) == TrialScheduler.STOP


def wait_for(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def trial_summaries(runs_dir: Path) -> dict[Path, dict]:
    """Each trial run directory's summary.json (skipping one being written)."""
    out = {}
    for p in runs_dir.glob("*/trials/*/summary.json"):
        try:
            out[p.parent] = json.loads(p.read_text())
        except (OSError, ValueError):
            pass
    return out


def trial_statuses(runs_dir: Path) -> list[str]:
    return [s["status"] for s in trial_summaries(runs_dir).values()]


RESUMED = dict(seeds=[0], space={"optimizer.lr": [0.005, 0.01, 0.02, 0.04, 0.08]}, max_concurrent=1,
               **{"set": {"device": "cpu", "train.batch_size": 20, "train.epochs": 4}})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, learnable) -> pd.DataFrame:
    """results.csv (less its times) of the resume tests' sweep run without a stop: one for both signals."""
    root = tmp_path_factory.mktemp("uninterrupted")
    out = cnnlab("sweep", write_sweep(root / "resume.yaml", **RESUMED), "--data-dir", learnable, "--runs-dir", root / "runs", timeout=300)
    assert out.returncode == 0, out.stderr
    return pd.read_csv(last_line(out) / "results.csv").drop(columns="seconds")


@needs_ray
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_resume_finishes_an_interrupted_sweep_like_an_uninterrupted_one(tmp_path, learnable, uninterrupted, signum):
    path = write_sweep(tmp_path / "resume.yaml", **RESUMED)
    args = ["sweep", path, "--data-dir", learnable]
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", *map(str, args), "--runs-dir", str(tmp_path / "runs")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "completed" in trial_statuses(tmp_path / "runs"), 120, "a first finished trial")
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, stderr  # 130 for Ctrl-C, 143 for SIGTERM, whichever way Tune ends
    sweep_dir = Path(stdout.split("sweep directory: ")[1].splitlines()[0])
    assert stdout.splitlines()[-1] == str(sweep_dir)  # what `cnnlab sweep ... | tail -1` gives, as for a finished sweep
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert "cnnlab sweep --resume" in stderr and summary["status"] == "interrupted"
    assert summary["error"].startswith(f"sweep stopped by {signal.Signals(signum).name}") and summary["error"].endswith(f"; continue it with: cnnlab sweep --resume {sweep_dir}"), summary["error"]
    finished = {p.parent.name: p.read_text() for p in sweep_dir.glob("trials/*/summary.json") if json.loads(p.read_text())["status"] == "completed"}
    assert 1 <= len(finished) < 5
    # no scheduler: a trial ended with the sweep is interrupted, not "stopped" as a scheduler would have
    assert set(trial_statuses(tmp_path / "runs")) <= {"completed", "interrupted"}

    out = cnnlab("sweep", "--resume", sweep_dir, "--data-dir", learnable)
    assert out.returncode == 0, out.stderr
    assert last_line(out) == sweep_dir and json.loads((sweep_dir / "summary.json").read_text())["status"] == "completed"
    for name, text in finished.items():  # finished trials were not run again
        assert (sweep_dir / "trials" / name / "summary.json").read_text() == text
    assert len(list((sweep_dir / "trials").iterdir())) == 5
    # each trial's record names the node it ran on, and trials.csv that node, also for a trial the
    # resumed sweep only replayed to Tune (from another session's Ray, another node id)
    trials = pd.read_csv(sweep_dir / "trials.csv", dtype=str)
    ran_on = {Path(p).parent.name: json.loads(p.read_text())["node"] for p in sweep_dir.glob("trials/*/summary.json")}
    assert {Path(r).name: n for r, n in zip(trials["run_dir"], trials["node"])} == ran_on
    pd.testing.assert_frame_equal(pd.read_csv(sweep_dir / "results.csv").drop(columns="seconds"), uninterrupted)


@needs_ray
@pytest.mark.parametrize("signals", [1, 2], ids=["SIGINT", "SIGINT-twice"])
def test_an_interrupted_asha_sweep_stops_only_the_trials_asha_stopped(tmp_path, signals):
    """Tune ends the trial still running as the sweep stops, and the trial then says 'stopped' itself,
    also one cut off in its first epoch, before Tune heard from it: it is interrupted (--resume finishes
    it), and only the trial ASHA stopped stays stopped. A second Ctrl-C cuts Tune's own ending short:
    the sweep then settles from the state Tune saved at the first."""
    data = make_learnable_mnist(tmp_path / "data", n_train=6000)  # epochs long enough to signal within one
    path = write_sweep(
        tmp_path / "asha.yaml", seeds=[0], space={"optimizer.lr": [0.05, 1e-6, 0.04]}, max_concurrent=1,
        scheduler={"name": "asha", "grace_period": 1, "reduction_factor": 4},  # one rung: epoch 1 (of 3)
        **{"set": {"device": "cpu", "train.batch_size": 20, "train.epochs": 3}},
    )
    runs_dir = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "sweep", str(path), "--data-dir", str(data), "--runs-dir", str(runs_dir)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # ASHA has stopped 1e-6 after epoch 1 and the last trial is training its first epochs
        wait_for(lambda: len(trial_statuses(runs_dir)) == 3 and {"stopped", "running"} <= set(trial_statuses(runs_dir)), 300, "the last trial")
        proc.send_signal(signal.SIGINT)
        if signals == 2:  # while Tune waits for the cut-off trial's epoch to end
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "cnnlab sweep --resume" in stderr, stderr
    sweep_dir = Path(stdout.split("sweep directory: ")[1].splitlines()[0])
    assert stdout.splitlines()[-1] == str(sweep_dir)

    def by_lr() -> dict[float, dict]:
        return {load_config(d / "config.yaml").optimizer.lr: s for d, s in trial_summaries(runs_dir).items()}

    runs = by_lr()
    ended = {lr: (s["status"], s["error"]) for lr, s in runs.items()}
    assert (runs[0.05]["status"], runs[1e-6]["status"], runs[0.04]["status"]) == ("completed", "stopped", "interrupted"), ended
    assert "ASHA" in runs[1e-6]["error"] and f"sweep was interrupted; continue it with: cnnlab sweep --resume {sweep_dir}" in runs[0.04]["error"], ended
    if signals == 1 or (sweep_dir / "trials.csv").exists():  # the sweep ended through Tune, not cut short by a second signal
        trials = pd.read_csv(sweep_dir / "trials.csv").set_index("optimizer.lr")["status"].to_dict()
        assert trials == {0.05: "completed", 1e-6: "stopped", 0.04: "unfinished"}
        # each point's params as its trials have them (the cut-off trial's, once Tune heard from it)
        params = [pd.read_csv(sweep_dir / name).set_index("optimizer.lr")["params"].sort_index() for name in ("results.csv", "trials.csv")]
        pd.testing.assert_series_equal(*params, check_dtype=False)
    if signals == 2:
        return  # what Tune saved as the first signal came is all a resume has (it may start the cut-off trial anew)

    out = cnnlab("sweep", "--resume", sweep_dir, "--data-dir", data)
    assert out.returncode == 0, out.stderr
    runs = by_lr()
    assert len(runs) == 3 and (runs[0.04]["status"], runs[0.04]["epochs"], runs[1e-6]["status"]) == ("completed", 3, "stopped")
    trials = pd.read_csv(sweep_dir / "trials.csv").set_index("optimizer.lr")["status"].to_dict()
    assert trials == {0.05: "completed", 1e-6: "stopped", 0.04: "completed"}


@needs_ray
def test_a_resume_reads_the_data_its_trials_read_not_the_working_directorys(tmp_path, learnable, monkeypatch, capsys):
    """A sweep started without --data-dir, whose trials found their data as ./data (or through
    $CNNLAB_DATA_DIR), resumed from another directory: its trials still to run read that directory's
    ./data (here empty: the resume was refused, 'MNIST not found'), where `train --resume` reads the
    run's own data. Now it reads where its trials read while that is there; a --data-dir given wins."""
    from cnnlab import ray_backend
    from cnnlab.experiment import run
    from cnnlab.sweep import TRIALS, start
    from test_resume import cnnlab_here

    (tmp_path / "w1").mkdir()
    (tmp_path / "w1" / "data").symlink_to(learnable)
    (tmp_path / "w2" / "data").mkdir(parents=True)  # the same name, no files
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path / "w1")
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.01, 0.02]}, **{"set": {"device": "cpu", "train.epochs": 1}}))
    sweep_dir = start(sweep, tmp_path / "runs")
    run(sweep.trial_config(sweep.points[0], 0, "first"), runs_dir=sweep_dir / TRIALS)  # the trial that ran before the interruption
    given = []

    def run_sweep(sweep, path, *, signals=None, data_dir=None, resume=False):  # Tune would run the second trial here
        given.append(data_dir)
        raise RunError("Tune stops here")

    monkeypatch.setattr(ray_backend, "session", lambda address, what: contextlib.nullcontext(type("Ray", (), {"cluster_resources": staticmethod(lambda: {"CPU": 4.0})})))
    monkeypatch.setattr(ray_backend, "run_sweep", run_sweep)
    monkeypatch.setattr(ray_backend, "check_restorable", lambda sweep_dir: None)  # no Tune state in these
    monkeypatch.chdir(tmp_path / "w2")
    done = cnnlab_here(capsys, "sweep", "--resume", sweep_dir)
    assert done.stderr.startswith("error: Tune stops here"), done.stderr
    assert given == [str(learnable.resolve())]
    done = cnnlab_here(capsys, "sweep", "--resume", sweep_dir, "--data-dir", "data")
    assert done.returncode == 1 and f"MNIST not found in {tmp_path / 'w2' / 'data'}" in done.stderr, done.stderr


@pytest.mark.parametrize("override,message", [
    ("train.epoch=2", ": base {base}, override train.epoch=2: unknown key 'train.epoch'; did you mean 'train.epochs'?"),
    ("metrc=test_loss", ", override metrc=test_loss: unknown key 'metrc' (neither a sweep key nor a config key); did you mean 'metric'?"),
    ("space.optimzer.lr=[0.1,0.2]", ", override space.optimzer.lr=[0.1,0.2]: unknown key 'optimzer'; did you mean 'optimizer'?"),
    ("set.train.epoch=2", ", override set.train.epoch=2: unknown key 'train.epoch'; did you mean 'train.epochs'?"),
])
def test_an_unknown_key_from_the_command_line_is_named_as_an_override_not_as_the_sweep_files(tmp_path, override, message):
    """cnnlab sweep FILE train.epoch=2 blamed the typo on the files ('FILE: base BASE: unknown key'), as
    space.optimzer.lr=[...] did ('FILE: space: unknown key'), where train and compare name the override
    that brought it in; a typo in the file's own set: or space: is still the file's."""
    path = write_sweep(tmp_path / "bad.yaml", space={"optimizer.lr": [0.1]})
    with pytest.raises(ConfigError) as e:
        load_sweep(path, [override])
    base = os.path.normpath(path.parent / yaml.safe_load(path.read_text())["base"])
    assert str(e.value) == f"{path}{message.format(base=base)}"
    path = write_sweep(tmp_path / "set.yaml", space={"optimizer.lr": [0.1]}, set={"train.epoch": 2})
    with pytest.raises(ConfigError) as e:
        load_sweep(path, ["train.epochs=2"])
    assert "override" not in str(e.value) and "unknown key 'train.epoch'" in str(e.value)
    path = write_sweep(tmp_path / "space.yaml", space={"optimzer.lr": [0.1]})
    with pytest.raises(ConfigError) as e:
        load_sweep(path, ["space.optimizer.momentum=[0.9]"])
    assert str(e.value) == f"{path}: space: unknown key 'optimzer'; did you mean 'optimizer'?"


def test_a_seed_or_name_in_the_space_from_the_command_line_is_named_as_the_override(tmp_path):
    """space.seed=[1] on the command line read 'FILE: space: 'seed' is set by the sweep itself', as if
    the file's space held it; the file's own still reads so."""
    path = write_sweep(tmp_path / "s.yaml", space={"optimizer.lr": [0.1]})
    with pytest.raises(ConfigError) as e:
        load_sweep(path, ["space.seed=[1]"])
    assert str(e.value) == f"{path}, override space.seed=[1]: 'seed' is set by the sweep itself (use seeds: [...] for seeds)"
    path = write_sweep(tmp_path / "own.yaml", space={"optimizer.lr": [0.1], "name": ["a"]})
    with pytest.raises(ConfigError) as e:
        load_sweep(path, [])
    assert str(e.value) == f"{path}: space: 'name' is set by the sweep itself (use seeds: [...] for seeds)"


def sweep_error(tmp_path, path, *overrides) -> list[str]:
    """cnnlab sweep PATH OVERRIDES, refused while loading: its error lines (exit 2, no sweep directory)."""
    out = cnnlab("sweep", path, *overrides, "--runs-dir", tmp_path / "runs", timeout=120)
    assert out.returncode == 2 and not (tmp_path / "runs").exists(), out.stderr
    return out.stderr.splitlines()


def test_a_seed_in_set_from_the_command_line_is_named_as_the_override(tmp_path):
    """cnnlab sweep FILE set.seed=1 read 'FILE: set.seed: a sweep's trials take their seeds from ...',
    as if the file's set held it; the file's own set: {seed: 1} still reads so."""
    refused = "a sweep's trials take their seeds from seeds=[...], e.g. seeds=[1]"
    path = write_sweep(tmp_path / "s.yaml", space={"optimizer.lr": [0.1]})
    assert sweep_error(tmp_path, path, "set.seed=1") == [f"error: {path}, override set.seed=1: {refused}"]
    own = write_sweep(tmp_path / "own.yaml", space={"optimizer.lr": [0.1]}, set={"device": "cpu", "seed": 1})
    assert sweep_error(tmp_path, own) == [f"error: {own}: set.seed: {refused}"]


def test_a_space_entry_from_the_command_line_that_is_not_a_list_or_range_is_named_as_the_override(tmp_path):
    """cnnlab sweep FILE space.optimizer.lr=0.5 read 'FILE: space.optimizer.lr: give a list of values
    or a range ...', as if the file's space held it; the file's own space: {optimizer.lr: 0.5} still reads so."""
    refused = "give a list of values or a range {low: ..., high: ...}"
    path = write_sweep(tmp_path / "s.yaml", space={"model.n_feature": [4]})
    assert sweep_error(tmp_path, path, "space.optimizer.lr=0.5") == [f"error: {path}, override space.optimizer.lr=0.5: {refused}"]
    own = write_sweep(tmp_path / "own.yaml", space={"optimizer.lr": 0.5})
    assert sweep_error(tmp_path, own) == [f"error: {own}: space.optimizer.lr: {refused}"]


def test_a_grid_range_without_num_from_the_command_line_is_named_as_the_override(tmp_path):
    """cnnlab sweep FILE 'space.optimizer.lr={low: 0.1, high: 1}' (a grid) read 'FILE: space.optimizer.lr:
    a range needs num ...', as if the file's space held it; the file's own range still reads so."""
    refused = "a range needs num (how many grid points) for method grid"
    path = write_sweep(tmp_path / "s.yaml", space={"model.n_feature": [4]})
    override = "space.optimizer.lr={low: 0.1, high: 1}"
    assert sweep_error(tmp_path, path, override) == [f"error: {path}, override {override}: {refused}"]
    own = write_sweep(tmp_path / "own.yaml", space={"optimizer.lr": {"low": 0.1, "high": 1}})
    assert sweep_error(tmp_path, own) == [f"error: {own}: space.optimizer.lr: {refused}"]


@pytest.mark.parametrize("override,refused", [
    ("set={device: cpu, seed: 1}", "a sweep's trials take their seeds from seeds=[...], e.g. seeds=[1]"),
    ("space={optimizer.lr: 0.5}", "give a list of values or a range {low: ..., high: ...}"),
    ("space={optimizer.lr: {low: 0.1, high: 1}}", "a range needs num (how many grid points) for method grid"),
    ("set={device: cpu, model.name: lenet, model.init: xavier}", "model.init: must be one of 'keras' or 'default' (got 'xavier')"),
], ids=["set seed", "space scalar", "grid range", "set key refused in a trial"])
def test_a_whole_space_or_set_from_the_command_line_is_named_as_the_override(tmp_path, override, refused):
    """set={...} and space={...} replace the file's section, so their keys are the command line's,
    named as the override like set.seed=1's and space.optimizer.lr=0.5's; they read 'FILE: set.seed: ...'
    ('FILE: space: model.init: ...' in a trial), as if the file held them."""
    path = write_sweep(tmp_path / "s.yaml", space={"model.name": ["lenet", "keras_cnn"]})
    with pytest.raises(ConfigError) as e:
        load_sweep(path, [override])
    assert str(e.value) == f"{path}, override {override}: {refused}"


@pytest.mark.parametrize("typo_in,override,named", [
    ("base", "space.optimizer=[{name: sgd}]", ": base {base}: unknown key 'optimizer.momentun'; did you mean 'optimizer.momentum'?"),
    ("space", "set.optimizer={name: sgd}", ": space: unknown key 'optimizer.momentun'; did you mean 'optimizer.momentum'?"),
])
def test_a_typo_is_not_blamed_on_a_command_line_space_or_set_key_that_did_not_bring_it_in(tmp_path, typo_in, override, named):
    """A typo in the base config blamed space.optimizer=[...] ('FILE, override space.optimizer=...'), one in
    the file's space blamed set.optimizer={...}: the base is made of set's keys, a trial of space's."""
    base = tmp_path / "typo.yaml"
    base.write_text(BASE.read_text().replace("momentum:", "momentun:") if typo_in == "base" else BASE.read_text())
    space = {"optimizer.momentun": [0.1]} if typo_in == "space" else {"optimizer.lr": [0.1]}
    path = write_sweep(tmp_path / "bad.yaml", base=str(base), space=space)
    with pytest.raises(ConfigError) as e:
        load_sweep(path, [override])
    assert str(e.value) == f"{path}{named.format(base=base)}"


@pytest.mark.parametrize("body,override,named", [
    ({"space": {"optimizer.lr": [0.1]}}, "space.seed.x=[1]", ", override space.seed.x=[1]: seed is not a section"),
    ({"space": {"optimizer.lr": [0.1]}}, "set.seed.x=1", ", override set.seed.x=1: seed is not a section"),
    ({"space": {"optimizer.lr": [0.1], "train.epochs.x": [1]}}, None, ": space.train.epochs.x: train.epochs is not a section"),
    ({"space": {"optimizer.lr": [0.1]}, "set": {"name.x": 1}}, None, ": set.name.x: name is not a section"),
])
def test_a_space_or_set_key_inside_a_value_is_named_as_given_not_as_an_internal_override(tmp_path, body, override, named):
    """cnnlab sweep FILE 'space.seed.x=[1]' read "override 'seed.x=null': seed is not a section", a text
    set_keys made, never typed; a key in the file's own space or set is named as the file's."""
    path = write_sweep(tmp_path / "bad.yaml", **body)
    with pytest.raises(ConfigError) as e:
        load_sweep(path, [override] if override else [])
    assert str(e.value) == f"{path}{named}"


@pytest.mark.parametrize("set_,overrides,named", [
    ({"train.epochs": 6, "train.epochs.x": 1}, [], ": set.train.epochs.x: train.epochs is not a section"),
    ({"train.epochs": 6}, ["set.train.epochs.x=1"], ", override set.train.epochs.x=1: train.epochs is not a section"),
])
def test_a_set_key_inside_a_value_set_just_before_is_one_line_not_a_traceback(tmp_path, set_, overrides, named):
    """set: {train.epochs: 6, train.epochs.x: 1} ended in "TypeError: 'int' object does not support item assignment"."""
    path = write_sweep(tmp_path / "bad.yaml", set=set_, space={"optimizer.lr": [0.1]})
    with pytest.raises(ConfigError) as e:
        load_sweep(path, overrides)
    assert str(e.value) == f"{path}{named}"


@pytest.mark.parametrize("overrides,named", [
    (["set.model.name=lenet", "set.model.init=xavier"], ", override set.model.init=xavier: model.init: "),
    (["set.model={name: lenet, init: xavier}"], ", override set.model={name: lenet, init: xavier}: model.init: "),
    (["model.name=lenet", "model.init=xavier"], ": base {base}, override model.init=xavier: model.init: "),
    (["set.model.name=lenet", "space.model.init=[xavier]"], ", override space.model.init=[xavier]: model.init: "),
], ids=["set key", "set section", "config key", "space key"])
def test_a_command_line_key_refused_only_in_a_trial_is_named_as_its_override_not_as_the_files_space(tmp_path, overrides, named):
    """set.model.init=xavier, fine for the base's lenet, is refused in the file's space's keras_cnn
    trial, before Ray starts; it read 'FILE: space: model.init: ...', as if the file's space held
    model.init (X=, and a command-line space key's own value, likewise). A key the trial's point set
    last is the point's; the file's own still reads 'FILE: space: ...'."""
    path = write_sweep(tmp_path / "s.yaml", space={"model.name": ["lenet", "keras_cnn"]})
    refused = "must be one of 'keras' or 'default' (got 'xavier')"
    with pytest.raises(ConfigError) as e:
        load_sweep(path, overrides)
    assert str(e.value) == f"{path}{named.replace('{base}', str(BASE))}{refused}"
    own = write_sweep(tmp_path / "own.yaml", space={"model.name": ["lenet", "keras_cnn"]}, set={"model.name": "lenet", "model.init": "xavier"})
    with pytest.raises(ConfigError) as e:
        load_sweep(own, [])
    assert str(e.value) == f"{own}: space: model.init: {refused}"


@pytest.mark.parametrize("set_,overrides", [({"train": None, "train.epochs": 3}, []), ({}, ["set.train=null", "set.train.epochs=3"])])
def test_a_set_key_inside_a_section_set_to_null_just_before_starts_it_from_its_defaults(tmp_path, set_, overrides):
    """set: {train: null, train.epochs: 3} read 'FILE: set.train.epochs: train is not a section', where
    set.train=null set.train.epochs=3 on the command line (and train=null train.epochs=3 for train)
    started train from its defaults, as both do now."""
    path = write_sweep(tmp_path / "s.yaml", set=set_, space={"optimizer.lr": [0.1]})
    sweep = load_sweep(path, overrides)
    assert sweep.base.train == sweep.configs[0].train == load_config(BASE, ["train=null", "train.epochs=3"]).train
    assert sweep.base.train.epochs == 3


# ---------------------------------------------------------------------------- review of sweeps (helper h73)
def test_keys_drawn_together_that_make_no_config_are_refused_before_the_sweep(tmp_path):
    """random and tpe checked each key's bounds alone: sgd's momentum drawn with adam failed every such
    trial inside Ray (262 lines of tracebacks, and an error text of colour codes)."""
    space = {"optimizer.name": ["sgd", "adam"], "optimizer.momentum": [0.0, 0.9]}
    with pytest.raises(ConfigError, match="unknown key 'optimizer.momentum'; valid keys here: name, lr, betas"):
        load_sweep(write_sweep(tmp_path / "s.yaml", method="random", samples=2, space=space))


def test_a_value_twice_or_a_range_option_beside_values_is_refused(tmp_path):
    for entry, told in (([0.1, 0.5, 0.10], "0.1 is given twice"), ({"values": [0.1], "num": 3}, "num is for a range"),
                        ({"values": [16, 32], "integer": True}, "integer is for a range")):
        with pytest.raises(ConfigError, match=told):
            load_sweep(write_sweep(tmp_path / "s.yaml", space={"optimizer.lr" if told != "integer is for a range" else "train.batch_size": entry}))
    narrow = load_sweep(write_sweep(tmp_path / "n.yaml", space={"optimizer.lr": {"low": 0.1, "high": 0.1000001, "num": 3}}))
    assert [p["optimizer.lr"] for p in narrow.points] == [0.1]  # 6 digits: one point, not the same one thrice
    logged = load_sweep(write_sweep(tmp_path / "l.yaml", space={"optimizer.lr": {"values": [0.01, 0.1], "log": True}}))
    assert len(logged.points) == 2  # log with values: the figure's axis


def test_a_point_drawn_again_counts_its_seeds_once():
    """TPE may draw a point twice: its identical runs passed for two seeds, with a std of 0."""
    from cnnlab.sweep import point_rows

    sweep = load_sweep(ROOT / "configs/sweeps/lenet_lr.yaml")
    trial = {"optimizer.lr": 0.5, "status": "completed", "epochs": 6, "seconds": 1.0, "params": 61706}
    trials = [{**trial, "seed": 0, "test_acc": 0.9}, {**trial, "seed": 0, "test_acc": 0.9}, {**trial, "seed": 1, "test_acc": 0.8}]
    (row,) = point_rows(sweep, trials)
    assert (row["seeds"], row["trials"], row["test_acc_mean"]) == (2, 3, pytest.approx(0.85))
    assert row["test_acc_std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))


def test_failed_and_early_stopped_trials_neither_win_a_point_its_rank_nor_mix_into_its_mean(tmp_path):
    """lr 5 diverged on two of three seeds and its one survivor reached 97.5%: it ranked first, and
    best.yaml took it, over lr 0.5's three steady seeds. And lr 0.01's seed that ASHA stopped after one
    epoch at 40% was averaged with the two that completed six (77.90% ± 32.82: the epochs' spread,
    not the seeds')."""
    from cnnlab.sweep import figure, point_rows

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0, 1, 2], space={"optimizer.lr": [5.0, 0.5, 0.01]}))
    base = {"epochs": 6, "seconds": 1.0, "params": 100, "status": "completed"}
    trials = [
        {**base, "optimizer.lr": lr, "seed": seed, "test_acc": acc, **extra}
        for lr, results in [
            (5.0, [(0.975, {}), (None, {"status": "failed", "epochs": 2}), (None, {"status": "failed", "epochs": 1})]),
            (0.5, [(0.970, {}), (0.971, {}), (0.972, {})]),
            (0.01, [(0.969, {}), (0.40, {"status": "stopped", "epochs": 1}), (0.968, {})]),
        ]
        for seed, (acc, extra) in enumerate(results)
    ]
    points = point_rows(sweep, trials)
    assert [p["optimizer.lr"] for p in points] == [0.5, 0.01, 5.0]
    by_lr = {p["optimizer.lr"]: p for p in points}
    assert by_lr[0.01]["test_acc_mean"] == pytest.approx(0.9685) and by_lr[0.01]["seeds"] == 2  # the completed seeds alone
    assert by_lr[0.01]["test_acc_std"] == pytest.approx(np.std([0.969, 0.968], ddof=1))
    assert (by_lr[5.0]["seeds"], by_lr[5.0]["trials"], by_lr[5.0]["stop"]) == (1, 3, "2 failed, 1 completed")
    # a point ASHA stopped on every seed is scored where it stopped, after the points that completed
    stopped = [{**t, "status": "stopped", "epochs": 1} if t["optimizer.lr"] == 0.01 else t for t in trials if t["optimizer.lr"] != 5.0]
    points = point_rows(sweep, stopped)
    assert [p["optimizer.lr"] for p in points] == [0.5, 0.01] and points[1]["test_acc_mean"] == pytest.approx((0.969 + 0.40 + 0.968) / 3)
    # ... on the seeds it stopped furthest, where they stopped at different epochs: no mean of epochs 1 and 4
    stopped[4]["epochs"] = 4  # lr 0.01, seed 1 (40%)
    (point,) = [p for p in point_rows(sweep, stopped) if p["optimizer.lr"] == 0.01]
    assert (point["test_acc_mean"], point["seeds"], point["epochs"]) == (pytest.approx(0.40), 1, "1-4") and np.isnan(point["test_acc_std"])
    # the figure's title counts the seeds its means are over
    fig = figure(sweep, point_rows(sweep, trials))
    assert fig._suptitle.get_text().endswith("mean ± std over up to 3 seeds")
    one = [t for t in trials if t["seed"] == 0]
    assert figure(sweep, point_rows(sweep, one))._suptitle.get_text().endswith("one seed each, no spread")


def test_a_sweep_started_before_the_fixed_and_swept_check_still_resumes(tmp_path):
    """An older cnnlab took a key both fixed and swept; its sweep directory, which --resume cannot
    change, goes on as it began rather than being refused by the check added since."""
    from cnnlab.sweep import SweepFile, resolve

    spec = SweepFile.model_validate({"name": "s", "base": str(BASE), "set": {"train.epochs": 2}, "space": {"train.epochs": [1]}})
    with pytest.raises(ConfigError, match="train.epochs is swept too"):
        resolve(spec, load_config(BASE), "s.yaml", ["train.epochs"])
    assert len(resolve(spec, load_config(BASE), "s.yaml", ["train.epochs"], reopened=True).points) == 1


def test_best_yaml_trains_with_the_trials_threads(tmp_path):
    """best.yaml left train.threads to cnnlab: a trial on its 1-core share and best.yaml on 2 threads
    gave numbers apart in the last digits."""
    from cnnlab import runs
    from cnnlab.sweep import finish, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.1, 0.5]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    records = finished_trials(sweep, sweep_dir, lambda point, seed: 0.9 if point["optimizer.lr"] == 0.5 else 0.5)
    for r in records:
        summary = runs.read_json(Path(r["run_dir"]) / "summary.json")
        runs.write_json(Path(r["run_dir"]) / "summary.json", {**summary, "threads": 1})
    finish(sweep, sweep_dir, records)
    assert load_config(sweep_dir / "best.yaml").train.threads == 1


def test_a_ray_error_is_the_trials_own_line_without_colours():
    from cnnlab.ray_backend import ray_error

    class TaskError(Exception):
        cause = ValueError("CUDA out of memory")

    assert ray_error(TaskError("\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1, ip=10.0.0.1)")) == "CUDA out of memory"
    assert ray_error(RuntimeError("\x1b[36mray::ImplicitFunc.train()\x1b[39m failed")) == "ImplicitFunc.train() failed"


def test_names_a_sweep_makes_stay_within_the_limit_and_an_older_long_named_sweep_resumes(tmp_path):
    """A base named 89 to 100 characters failed every trial once the sweep directory existed (each
    trial is BASE-<Ray's trial id>); a sweep a cnnlab without the limit started with a longer name
    could not be resumed; its best.yaml (SWEEP-best) could not be trained."""
    from cnnlab.config import NAME_MAX, name_within
    from cnnlab.sweep import reopen, start

    with pytest.raises(ConfigError, match=f"name: at most {NAME_MAX} characters \\(got 101\\)"):
        load_sweep(write_sweep(tmp_path / "long.yaml", name="w" * (NAME_MAX + 1), space={"optimizer.lr": [0.1]}))
    base = tmp_path / "base.yaml"
    base.write_text(BASE.read_text().replace("name: mnist_cnn\n", f"name: {'b' * NAME_MAX}\n"))
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", name="w" * NAME_MAX, base=str(base), space={"optimizer.lr": [0.1]}))
    trial = sweep.trial_config({"optimizer.lr": 0.1}, 0, name_within(sweep.base.name, "-abcde_00000"))
    assert trial.name == "b" * (NAME_MAX - 12) + "-abcde_00000"
    assert name_within(sweep.name, "-best") == "w" * (NAME_MAX - 5) + "-best"

    sweep_dir = start(sweep, tmp_path / "runs")
    spec = yaml.safe_load((sweep_dir / "sweep.yaml").read_text())
    (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump({**spec, "name": "o" * 150}))  # as an older cnnlab wrote it
    base = yaml.safe_load((sweep_dir / "base.yaml").read_text())
    (sweep_dir / "base.yaml").write_text(yaml.safe_dump({**base, "name": "q" * 150}))
    reopened = reopen(sweep_dir)
    assert reopened.name == "o" * 150 and reopened.base.name == "q" * 150
    assert reopened.trial_config({"optimizer.lr": 0.1}, 0).name == "q" * NAME_MAX


def test_a_moved_or_copied_sweep_reads_its_own_trials(tmp_path):
    """Tune's records hold the absolute path each trial ran at: a sweep directory moved elsewhere and
    resumed rewrote results.csv, trials.csv and summary.json with every point at '-' (its trials not
    found), and a copy's tables named the original's trials."""
    from cnnlab.sweep import finish, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.1, 0.5]}))
    first = start(sweep, tmp_path / "runs")
    records = finished_trials(sweep, first, lambda point, seed: {0.1: 0.8, 0.5: 0.9}[point["optimizer.lr"]])
    moved = tmp_path / "elsewhere" / "my sweep"
    moved.parent.mkdir()
    shutil.copytree(first, moved)  # a copy, the original still there
    outcome = finish(sweep, moved, records)
    assert outcome.status == "completed"
    trials = pd.read_csv(moved / "trials.csv")
    assert sorted(trials.test_acc) == [0.8, 0.9] and all(r.startswith("trials/") for r in trials.run_dir)
    shutil.rmtree(first)  # moved: the original gone
    assert finish(sweep, moved, records).best["point"] == {"optimizer.lr": 0.5}
    assert pd.read_csv(moved / "results.csv")["test_acc_mean"].tolist() == [0.9, 0.8]


@needs_ray
def test_a_sweep_stopped_before_tune_saved_its_state_is_not_resumed(tmp_path):
    """Stopped in its first instant (helper h107), a sweep's tune/ held tuner.pkl alone: Tune took it
    for restorable, started an empty experiment, and every trial failed with a KeyError traceback,
    the sweep marked failed and its tune/ overwritten for every later --resume."""
    from cnnlab.ray_backend import check_restorable

    (tmp_path / "tune").mkdir()
    (tmp_path / "tune" / "tuner.pkl").write_bytes(b"")
    with pytest.raises(RunError, match=f"^nothing to resume in {tmp_path}: Tune saved no state there; start the sweep again$"):
        check_restorable(tmp_path)
    (tmp_path / "tune" / "experiment_state-2026-11-28_12-17-30.json").write_text("{}")
    check_restorable(tmp_path)


@needs_ray
def test_a_refused_resume_leaves_a_completed_sweep_as_it_was(tmp_path):
    """A finished sweep whose tune/ folder was deleted (to save room) and then given to --resume was
    refused ('Tune saved no state there') after its summary.json had been set to running, and then
    recorded as failed."""
    from cnnlab import runs
    from cnnlab.sweep import finish, start

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", seeds=[0], space={"optimizer.lr": [0.1]}))
    sweep_dir = start(sweep, tmp_path / "runs")
    finish(sweep, sweep_dir, finished_trials(sweep, sweep_dir, lambda point, seed: 0.9))
    before = (sweep_dir / runs.SUMMARY).read_text()
    assert '"completed"' in before
    out = cnnlab("sweep", "--resume", sweep_dir, timeout=300)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: nothing to resume in {sweep_dir}")
    assert (sweep_dir / runs.SUMMARY).read_text() == before


def test_a_command_to_copy_quotes_a_path_the_shell_would_split(tmp_path):
    """'continue it with: cnnlab sweep --resume /runs/my sweep' ran `--resume /runs/my` when pasted."""
    from cnnlab.sweep import resume_hint

    assert resume_hint(Path("/runs/my sweep")) == "continue it with: cnnlab sweep --resume '/runs/my sweep'"
    assert resume_hint(Path("/runs/20261128-093000-lenet_lr-a1b2c3")) == "continue it with: cnnlab sweep --resume /runs/20261128-093000-lenet_lr-a1b2c3"
    config = tmp_path / "a config.yaml"
    config.write_text("model: {name: fc}\n")
    with pytest.raises(ConfigError, match=f"train it with cnnlab train '{config}'"):
        load_sweep(config)


@pytest.mark.parametrize("override, message", [
    ("seeds=[]", "override seeds=[]: seeds: List should have at least 1 item"),
    ("samples=0", "override samples=0: samples: Input should be greater than 0"),
    ("scheduler={name: asha, grace_period: 0}", "override scheduler={name: asha, grace_period: 0}: scheduler.grace_period: Input should be greater than 0"),
])
def test_a_sweep_key_given_on_the_command_line_is_named_as_the_override(tmp_path, override, message):
    """`cnnlab sweep s.yaml seeds=[]` said 's.yaml: seeds: List should have at least 1 item', as if the
    file held the mistake; train names the override in the same case."""
    path = write_sweep(tmp_path / "s.yaml", space={"optimizer.lr": [0.1]})
    with pytest.raises(ConfigError) as e:
        load_sweep(path, [override])
    assert str(e.value).startswith(f"{path}, {message}"), str(e.value)


def test_a_trials_directory_is_found_in_the_sweep_directory_it_is_in_now(tmp_path):
    """What trial_rows and the resumed ASHA scheduler read a trial's epochs from: Tune recorded the
    absolute path the trial ran at, gone once the sweep directory moved."""
    from cnnlab.sweep import trial_dir

    recorded = "/old/place/runs/20261128-093000-s-a1b2c3/trials/20261128-093001-s-abcde_00000-d4e5f6"
    assert trial_dir(tmp_path / "my sweep", recorded) == tmp_path / "my sweep" / "trials" / "20261128-093001-s-abcde_00000-d4e5f6"
    assert trial_dir(tmp_path, None) is None
