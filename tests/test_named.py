"""Configs, studies and sweeps given by name (cnnlab/named.py), from any working directory, and the
copy of configs/ a built wheel carries, so that an installed cnnlab finds them with no checkout."""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from cnnlab.errors import ConfigError
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
    assert f"config file not found: configs/mnist_cnn.yaml; cnnlab's own ({ROOT / 'configs' / 'mnist_cnn.yaml'}) is given by its name alone: mnist_cnn\n" == err[len("error: "):]
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
    assert "unknown study or config 'fc-vs-cnnn': no such file, nor configs/studies/fc-vs-cnnn.yaml or configs/fc-vs-cnnn.yaml" in err
    assert "did you mean fc-vs-cnn?" in err
    assert "study names: fc-vs-cnn, shift-sweep; config names: cifar10_5k" in err
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "configs/studies/fc_vs_cnn.yaml", cwd=tmp_path)
    assert code == 2 and f"study file not found: configs/studies/fc_vs_cnn.yaml; cnnlab's own ({ROOT / 'configs' / 'studies' / 'fc_vs_cnn.yaml'}) is given by its name alone: fc-vs-cnn\n" in err


def test_a_sweep_is_given_by_its_name(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep("lenet-lr", ["train.epochs=2"])
    assert Path(sweep.source) == ROOT / "configs" / "sweeps" / "lenet_lr.yaml"
    assert sweep.base.model.name == "lenet" and sweep.base.train.epochs == 2


def setuptools_major() -> int:
    """The installed setuptools' major version; 0 when there is none."""
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 0


# the build here is the installed setuptools' (no network for pip's isolated build): it must be one
# that pyproject.toml's build-system asks for (its SPDX license string needs 77)
SETUPTOOLS_FLOOR = int(re.search(r'"setuptools>=(\d+)', (ROOT / "pyproject.toml").read_text()).group(1))


@pytest.mark.skipif(setuptools_major() < SETUPTOOLS_FLOOR, reason=f"building a wheel without network needs setuptools>={SETUPTOOLS_FLOOR} installed")
def test_a_wheel_built_from_the_sdist_carries_configs_and_an_installed_cnnlab_runs_them_by_name(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("cnnlab", "configs"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"

    def build(kind: str, where: Path) -> Path:  # the PEP 517 hook a build frontend calls
        code = f"from setuptools import build_meta; print(build_meta.build_{kind}({str(dist)!r}))"
        built = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=where)
        assert built.returncode == 0, built.stderr
        return dist / built.stdout.split()[-1]

    sdist = build("sdist", source)
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    wheel = build("wheel", next((tmp_path / "unpacked").iterdir()))  # from the sdist: MANIFEST.in must have put configs/ in it
    carried = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("cnnlab/configs/")}
    expected = {"cnnlab/configs/" + p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert carried == expected
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in zipfile.ZipFile(wheel).namelist())  # pyproject's MIT, with its text

    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    installed = subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the installed copy first; what PYTHONPATH held (where the dependencies may be) after it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}

    def run(*args):
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=elsewhere, env=env)

    where = run("-c", "import cnnlab, cnnlab.named as n; print(cnnlab.__file__); print(n.own_configs())")
    assert where.returncode == 0, where.stderr
    package, configs = where.stdout.split()
    assert Path(package).is_relative_to(site) and Path(configs) == site / "cnnlab" / "configs"
    shown = run("-m", "cnnlab", "train", "lenet", "--print-config")
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["model"]["activation"] == "sigmoid"
    # the study and its members found in the installed copy, then refused for the override
    study = run("-m", "cnnlab", "compare", "fc-vs-cnn", "train.epochs=0")
    assert study.returncode == 2, study.stderr
    assert study.stderr.startswith(f"error: {site / 'cnnlab' / 'configs' / 'mnist_fc.yaml'}, override train.epochs=0: "), study.stderr


def test_hyphens_and_underscores_find_a_file_spelt_either_way(capsys, monkeypatch, tmp_path):
    (tmp_path / "configs" / "studies").mkdir(parents=True)
    (tmp_path / "configs" / "my-exp.yaml").write_text("name: my_exp\nmodel: {name: fc}\n")
    (tmp_path / "configs" / "mnist-cnn.yaml").write_text("name: users_own\nmodel: {name: fc}\n")  # before cnnlab's mnist_cnn
    for typed, name in (("my-exp", "my_exp"), ("my_exp", "my_exp"), ("mnist-cnn", "users_own"), ("mnist_cnn", "users_own")):
        code, out, err = cnnlab(capsys, monkeypatch, "train", typed, "--print-config", cwd=tmp_path)
        assert code == 0 and yaml.safe_load(out)["name"] == name, (typed, err)
    (tmp_path / "configs" / "studies" / "my-study.yaml").write_text("name: my-study\nmembers: [my-exp, mnist_fc]\n")
    monkeypatch.chdir(tmp_path)
    spec, members = resolve(["my-study"], [])
    assert [m.cfg.name for m in members] == ["my_exp", "mnist_fc"]
    assert [Path(m.source) for m in members] == [Path("configs/my-exp.yaml"), ROOT / "configs" / "mnist_fc.yaml"]


def test_a_folder_named_like_a_config_does_not_hide_it_and_an_empty_name_is_one_line(capsys, monkeypatch, tmp_path):
    (tmp_path / "lenet").mkdir()
    (tmp_path / "configs" / "dir.yaml").mkdir(parents=True)  # a folder is no config: not listed, not found
    code, out, err = cnnlab(capsys, monkeypatch, "train", "lenet", "--print-config", cwd=tmp_path)
    assert code == 0 and yaml.safe_load(out)["name"] == "lenet", err
    code, _, err = cnnlab(capsys, monkeypatch, "train", "dir", cwd=tmp_path)
    assert code == 2 and err.startswith("error: unknown config 'dir'") and "did you mean dir" not in err
    (tmp_path / "nothing").mkdir()
    code, _, err = cnnlab(capsys, monkeypatch, "train", "nothing", cwd=tmp_path)
    assert code == 2 and err == "error: nothing is a directory, not a config file\n"
    for command in ("train", "compare", "sweep"):
        code, out, err = cnnlab(capsys, monkeypatch, command, "", cwd=tmp_path)
        assert code == 2 and err == "error: an empty name: give a file or the name of one (cnnlab configs lists them)\n", (command, err)
    code, out, err = cnnlab(capsys, monkeypatch, "configs", cwd=tmp_path)
    assert code == 0 and "│ dir " not in out


def test_a_name_of_another_kind_is_told_with_its_command(capsys, monkeypatch, tmp_path):
    for command, name, kind, runs in (("train", "fc-vs-cnn", "study", "compare"), ("train", "lenet-lr", "sweep", "sweep"),
                                      ("sweep", "lenet", "config", "train"), ("compare", "lenet-lr", "sweep", "sweep")):
        code, _, err = cnnlab(capsys, monkeypatch, command, name, cwd=tmp_path)
        assert code == 2 and err == f"error: {name!r} is a {kind}, not a {'study or config' if command == 'compare' else {'train': 'config', 'sweep': 'sweep'}[command]}: run it with cnnlab {runs} {name}\n", err


def test_two_config_names_are_told_as_two_configs(capsys, monkeypatch, tmp_path):
    code, _, err = cnnlab(capsys, monkeypatch, "train", "mnist_cnn", "lenet", cwd=tmp_path)
    assert code == 2 and err.startswith("error: 'lenet' is not KEY=VALUE: give one config file")
    code, _, err = cnnlab(capsys, monkeypatch, "train", "mnist_cnn", "nope", cwd=tmp_path)
    assert code == 2 and err.startswith("error: 'nope' is not KEY=VALUE")


def test_a_sweeps_base_and_samples_config_by_name(capsys, monkeypatch, tmp_path):
    (tmp_path / "configs" / "sweeps").mkdir(parents=True)
    (tmp_path / "configs" / "sweeps" / "mine.yaml").write_text("base: lenet\nspace: {optimizer.lr: [0.1, 0.5]}\n")
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep("mine")
    assert (sweep.base.name, sweep.base.model.activation, sweep.base.train.epochs) == ("lenet", "sigmoid", 16)
    (tmp_path / "configs" / "sweeps" / "old.yaml").write_text("base: ../lenet.yaml\nspace: {optimizer.lr: [0.1, 0.5]}\n")
    with pytest.raises(ConfigError, match=r"config file not found: configs/lenet.yaml; cnnlab's own \(.*\) is given by its name alone: lenet$"):
        load_sweep("old")
    # samples --config reads the named config (a dataset it is not for is refused, before any data)
    code, _, err = cnnlab(capsys, monkeypatch, "samples", "cifar10", "--config", "mnist_cnn", cwd=tmp_path)
    assert code == 2 and err == f"error: {ROOT / 'configs' / 'mnist_cnn.yaml'} is a config for mnist, not cifar10\n"


def test_the_name_hint_is_for_configs_folders_only(capsys, monkeypatch, tmp_path):
    code, _, err = cnnlab(capsys, monkeypatch, "train", str(tmp_path / "exps" / "lenet.yaml"), cwd=tmp_path)
    assert code == 2 and err == f"error: config file not found: {tmp_path / 'exps' / 'lenet.yaml'}\n"


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


@pytest.mark.parametrize("how", ["broken link", "folder"])
def test_a_working_directory_config_that_is_not_a_file_is_told_not_passed_over(tmp_path, monkeypatch, how):
    """./configs/mnist_cnn.yaml as a broken link (or a folder) had `cnnlab train mnist_cnn` train
    cnnlab's own mnist_cnn without a word."""
    from cnnlab.catalogue import catalogue
    from cnnlab.errors import ConfigError
    from cnnlab.named import config_path

    (tmp_path / "configs").mkdir()
    if how == "broken link":
        (tmp_path / "configs" / "mnist_cnn.yaml").symlink_to(tmp_path / "gone.yaml")
    else:
        (tmp_path / "configs" / "mnist_cnn.yaml").mkdir()
    monkeypatch.chdir(tmp_path)
    said = r"configs/mnist_cnn\.yaml is " + (r"a broken link \(to .*gone\.yaml\)" if how == "broken link" else "a folder")
    with pytest.raises(ConfigError, match=said + rf", not a config file: mend it, or move it aside for {ROOT / 'configs' / 'mnist_cnn.yaml'}$"):
        config_path("mnist_cnn")
    (tmp_path / "configs" / "mine.yaml").symlink_to(tmp_path / "gone.yaml")  # no file of that name anywhere
    with pytest.raises(ConfigError, match=r"configs/mine\.yaml is a broken link \(to .*gone\.yaml\), not a config file$"):
        config_path("mine")
    (tmp_path / "configs" / "yours.yaml").mkdir()  # a folder hiding nothing: no name at all, as train finds none
    # cnnlab configs listed cnnlab's own mnist_cnn, which train refuses: it now says why that name does not load
    rows = {row["name"]: row for row in catalogue(("config",))}
    assert re.fullmatch("does not load: " + said + ", not a config file: mend it.*", rows["mnist_cnn"]["about"])
    assert rows["mnist_cnn"]["trains"] == ""
    assert re.fullmatch(r"does not load: configs/mine\.yaml is a broken link .*, not a config file", rows["mine"]["about"])
    assert "yours" not in rows and rows["mnist_fc"]["trains"] == "fc on mnist, 1 epoch"
