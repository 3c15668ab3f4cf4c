"""Configs, studies and sweeps given by name (cnnlab/named.py), from any working directory, and the
copy of configs/ a built wheel carries, so that an installed cnnlab finds them with no checkout."""

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from cnnlab.named import own_configs
from cnnlab.report import console
from cnnlab.studies.spec import resolve
from cnnlab.sweep import load_sweep
from conftest import ROOT
from test_studies import cnnlab


def test_cnnlabs_own_configs_are_the_checkouts_here():
    assert own_configs() == ROOT / "configs"


@pytest.mark.parametrize("name", ["mnist_cnn", "mnist-cnn"])
def test_a_config_is_given_by_its_name_from_any_folder(capsys, monkeypatch, tmp_path, name):
    code, out, err = cnnlab(capsys, monkeypatch, "train", name, "train.epochs=2", "--print-config", cwd=tmp_path)
    assert code == 0, err
    cfg = yaml.safe_load(out)
    expected = yaml.safe_load((ROOT / "configs" / "mnist_cnn.yaml").read_text())
    assert (cfg["name"], cfg["model"]["name"], cfg["optimizer"]["lr"]) == ("mnist_cnn", "cnn", expected["optimizer"]["lr"])
    assert cfg["train"]["epochs"] == 2


def test_the_working_directorys_configs_come_before_cnnlabs_own(capsys, monkeypatch, tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mnist_cnn.yaml").write_text("name: mine\nseed: 7\nmodel: {name: fc, hidden: [8]}\n")
    code, out, err = cnnlab(capsys, monkeypatch, "train", "mnist_cnn", "--print-config", cwd=tmp_path)
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert (cfg["name"], cfg["seed"], cfg["model"]["name"]) == ("mine", 7, "fc")
    # and a file of that name in the working directory comes before both
    (tmp_path / "mnist_cnn").write_text("name: the_file\nmodel: {name: fc}\n")
    code, out, err = cnnlab(capsys, monkeypatch, "train", "mnist_cnn", "--print-config", cwd=tmp_path)
    assert yaml.safe_load(out)["name"] == "the_file"


def test_a_name_that_names_no_config_is_one_line_with_the_closest_and_the_names_there_are(capsys, monkeypatch, tmp_path):
    code, out, err = cnnlab(capsys, monkeypatch, "train", "mnist_cnnn", cwd=tmp_path)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "unknown config 'mnist_cnnn': no such file, nor configs/mnist_cnnn.yaml here or among cnnlab's own; did you mean mnist_cnn?" in err
    for config in (ROOT / "configs").glob("*.yaml"):
        assert config.stem in err


def test_the_readmes_path_typed_outside_the_checkout_is_told_to_give_the_name(capsys, monkeypatch, tmp_path):
    code, _, err = cnnlab(capsys, monkeypatch, "train", "configs/mnist_cnn.yaml", cwd=tmp_path)
    assert code == 2
    assert "config file not found: configs/mnist_cnn.yaml; cnnlab's own mnist_cnn is given by its name alone: mnist_cnn" in err
    code, _, err = cnnlab(capsys, monkeypatch, "train", "configs/nothing_like_it.yaml", cwd=tmp_path)
    assert code == 2 and err.strip() == "error: config file not found: configs/nothing_like_it.yaml"


def test_studies_and_configs_by_name_in_compare(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    spec, members = resolve(["fc-vs-cnn"], [])
    assert [m.cfg.name for m in members] == ["mnist_fc", "mnist_cnn"]
    assert [Path(m.source) for m in members] == [ROOT / "configs" / "mnist_fc.yaml", ROOT / "configs" / "mnist_cnn.yaml"]
    spec, members = resolve(["mnist_fc", "lenet"], ["train.epochs=1"])
    assert spec.name == "mnist_fc-vs-lenet"
    assert [(m.cfg.model.name, m.cfg.train.epochs) for m in members] == [("fc", 1), ("lenet", 1)]
    spec, members = resolve(["lenet"], [])  # one config's name: a study of that one config
    assert [m.cfg.name for m in members] == ["lenet"]


def test_a_name_compare_does_not_know_lists_studies_and_configs(capsys, monkeypatch, tmp_path):
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "fc-vs-cnnn", cwd=tmp_path)
    assert code == 2 and out == ""
    assert "unknown study or config 'fc-vs-cnnn': no such file, nor configs/studies/fc_vs_cnnn.yaml or configs/fc_vs_cnnn.yaml" in err
    assert "did you mean fc-vs-cnn?" in err
    assert "study names: fc-vs-cnn, shift-sweep; config names: cifar10_5k" in err
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "configs/studies/fc_vs_cnn.yaml", cwd=tmp_path)
    assert code == 2 and "study file not found: configs/studies/fc_vs_cnn.yaml; cnnlab's own fc_vs_cnn is given by its name alone" in err


def test_a_sweep_is_given_by_its_name(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep("lenet-lr", ["train.epochs=2"])
    assert Path(sweep.source) == ROOT / "configs" / "sweeps" / "lenet_lr.yaml"
    assert sweep.base.model.name == "lenet" and sweep.base.train.epochs == 2


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="building a wheel without network needs setuptools installed")
def test_a_built_wheel_carries_configs_and_an_installed_cnnlab_runs_them_by_name(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("cnnlab", "configs"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("cnnlab-*.whl"))
    carried = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("cnnlab/configs/")}
    expected = {"cnnlab/configs/" + p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert carried == expected

    site = tmp_path / "site"
    installed = subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def run(*args):
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=elsewhere, env=env)

    where = run("-c", "import cnnlab, cnnlab.named as n; print(cnnlab.__file__); print(n.own_configs())")
    assert where.returncode == 0, where.stderr
    package, configs = where.stdout.split()
    assert Path(package).is_relative_to(site) and Path(configs) == site / "cnnlab" / "configs"
    shown = run("-m", "cnnlab", "train", "lenet", "--print-config")
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["model"]["activation"] == "sigmoid"
    study = run("-m", "cnnlab", "compare", "fc-vs-cnn", "--seeds", "0")  # found, then refused for its option
    assert study.returncode == 2 and "--seeds" in study.stderr and "unknown study" not in study.stderr


# ---------------------------------------------------------------------------- cnnlab configs
def test_cnnlab_configs_lists_every_name_with_what_it_trains(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(console, "width", 400)  # no row wrapped: one line per name
    code, out, err = cnnlab(capsys, monkeypatch, "configs", cwd=tmp_path)
    assert code == 0, err
    rows = {line.split("│")[2].strip(): [cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")}
    configs = {p.stem for p in (ROOT / "configs").glob("*.yaml")}
    studies = {p.stem.replace("_", "-") for p in (ROOT / "configs" / "studies").glob("*.yaml")}
    sweeps = {p.stem.replace("_", "-") for p in (ROOT / "configs" / "sweeps").glob("*.yaml")}
    assert set(rows) == configs | studies | sweeps
    assert rows["mnist_cnn"] == ["config", "mnist_cnn", "cnn on mnist, 1 epoch", "96.0%",
                                 "Study A: the small CNN (6,422 parameters) on MNIST, one epoch of SGD, as the tutorial trains it."]
    assert rows["lenet"][2:4] == ["lenet on mnist, 16 epochs", "98.5%"]
    assert rows["fc-vs-cnn"][:3] == ["study", "fc-vs-cnn", "mnist_fc, mnist_cnn x 3 seeds"]
    assert rows["lenet-lr"][:3] == ["sweep", "lenet-lr", "lenet on mnist: optimizer.lr x 3 seeds"]
    assert out.strip().splitlines()[-1] == f"from {ROOT / 'configs'}"


def test_cnnlab_configs_lists_the_working_directorys_own_and_one_that_does_not_load(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(console, "width", 400)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mine.yaml").write_text("# Mine: an FC net. More words.\nmodel: {name: fc}\ntrain: {epochs: 3}\n")
    (tmp_path / "configs" / "broken.yaml").write_text("model: {name: resnet9}\n")
    code, out, err = cnnlab(capsys, monkeypatch, "configs", cwd=tmp_path)
    assert code == 0, err
    lines = {line.split("│")[2].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert "fc on mnist, 3 epochs" in lines["mine"] and "Mine: an FC net. " in lines["mine"] and "More words" not in lines["mine"]
    assert "does not load: " in lines["broken"] and "unknown model 'resnet9'" in lines["broken"]
    assert "mnist_cnn" in lines  # cnnlab's own beside them
    assert out.strip().splitlines()[-1] == f"from configs/ here then {ROOT / 'configs'} (cnnlab's own)"
