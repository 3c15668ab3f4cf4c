"""Bad input through the real CLI: malformed configs, overrides, options, data files and paths.

Every case runs `python -m cnnlab ...` in a subprocess and must end with exit 2 (usage/config) or 1
(runtime), exactly one non-empty line on stderr that says what is wrong, and no traceback anywhere.
The cases run concurrently in one module fixture, then one test per case checks its result.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import HAS_RAY, ROOT
from fakedata import make_cifar, make_idx_dataset

# A valid, fast base config: every case below breaks one thing about it.
OK = """name: ok
device: cpu
dataset: {name: mnist, download: false}
model: {name: fc, hidden: [8]}
train: {epochs: 1, batch_size: 16, threads: 1}
"""


def cli(*args, timeout=120, **kwargs):
    """Run the real CLI in a subprocess and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kwargs
    )


def start(*args, **kwargs) -> subprocess.Popen:
    """Start the real CLI in the background."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.Popen([sys.executable, "-m", "cnnlab", *map(str, args)], text=True, cwd=ROOT, **pipes)


def error_line(stderr: str) -> str:
    """The one line a failed command must print on stderr."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


# ---------------------------------------------------------------------------- the files the cases use
def corrupt_idx(root: Path, name: str, edit) -> Path:
    """A copy of the tiny MNIST with one file broken by edit(raw_folder)."""
    make_idx_dataset(root / name, n_train=32, n_test=16)
    edit(root / name / "MNIST" / "raw")
    return root / name


def corrupt_cifar(root: Path, name: str, edit) -> Path:
    make_cifar(root / name, n=4)
    edit(root / name / "cifar-10-batches-py")
    return root / name


def flip_magic(raw: Path):
    path = raw / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[3] = 0x09
    path.write_bytes(data)


def cut_end(path: Path, n: int = 3):
    path.write_bytes(path.read_bytes()[:-n])


def write_files(tmp: Path) -> dict[str, Path]:
    """Configs and data folders for the cases; returns the named paths the cases format in."""
    configs = {
        "ok": OK,
        "not_yaml": "model: [fc,\n  name: x\n",
        "key_twice": "name: x\nmodel: {name: cnn}\ntrain: {epochs: 1}\nmodel: {name: fc}\n",
        "key_unhashable": "name: x\nmodel: {name: fc}\n[a]: 1\n",
        "value_key": OK + "=: 1\n",  # YAML 1.1's value key: PyYAML "could not determine a constructor"
        "value_key_alone": "=:\n",
        "empty": "",
        "a_list": "- name: fc\n- name: cnn\n",
        "python_tag": f"name: !!python/object/apply:os.system ['touch {tmp / 'yaml_ran'}']\nmodel: {{name: fc}}\n",
        "unknown_top": OK + "sedd: 3\n",
        "unknown_nested": OK.replace("epochs: 1", "epohcs: 1"),
        "unknown_deep": OK + "transform: {augment: {hflp: true}}\n",
        "unknown_in_model": OK.replace("hidden: [8]", "hiden: [8]"),
        "unknown_model": OK.replace("name: fc", "name: resnet9"),
        "unknown_optimizer": OK + "optimizer: {name: sgdd}\n",
        "unknown_dataset": OK.replace("name: mnist", "name: cifar100"),
        "unknown_device": OK.replace("device: cpu", "device: tpu"),
        "no_model": "name: x\n",
        "section_not_mapping": OK.replace("train: {epochs: 1, batch_size: 16, threads: 1}", "train: 5"),
    }
    configs["dataset_shorthand"] = OK.replace("dataset: {name: mnist, download: false}", "dataset: mnist")
    for name, text in configs.items():
        (tmp / f"{name}.yaml").write_text(text)
    (tmp / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81 not text")

    data = tmp / "data"
    paths = {
        "good": corrupt_idx(data, "good", lambda raw: None),
        "magic": corrupt_idx(data, "magic", flip_magic),
        "idx_short": corrupt_idx(data, "idx_short", lambda raw: cut_end(raw / "t10k-labels-idx1-ubyte")),
        "cifar_short": corrupt_cifar(data, "cifar_short", lambda d: cut_end(d / "data_batch_3", 500)),
        "empty_dir": data / "empty",
        "a_file": tmp / "a_file",
    }
    paths["empty_dir"].mkdir()
    paths["a_file"].write_text("in the way\n")
    # run directories someone else wrote or edited
    text_epoch = "epoch,train_loss,train_acc,test_loss,test_acc,epoch_seconds,samples_per_sec\none,1.0,0.5,1.0,0.5,1.0,100\n"
    for name, summary, metrics in (("summary_a_list", "[1, 2]", None), ("metrics_semicolons", "{}", "epoch;test_acc\n1;0.5\n"),
                                   ("metrics_text_epoch", "{}", text_epoch), ("study_files_a_number", '{"kind": "study", "files": 5}', None),
                                   ("study_table_binary", '{"kind": "study"}', None), ("config_model_a_name", "{}", None),
                                   ("metrics_blank_epoch", "{}", text_epoch.replace("one,", ",")), ("metrics_epoch_inf", "{}", text_epoch.replace("one,", "inf,")),
                                   ("metrics_epoch_twice", "{}", text_epoch.replace("one,", "1,") + "1,1.0,0.5,1.0,0.5,1.0,100\n"),
                                   ("metrics_extra_field", "{}", text_epoch.replace("one,", "1,").replace("100\n", "100,7\n")),
                                   ("config_smoothing_a_word", "{}", text_epoch.replace("one,", "1,"))):
        run = paths[name] = tmp / name
        run.mkdir()
        (run / "config.yaml").write_text(OK)
        (run / "summary.json").write_text(summary)
        if metrics:
            (run / "metrics.csv").write_text(metrics)
    (paths["study_table_binary"] / "table.md").write_bytes(b"\xff\xfe\x81")
    # a run, studies and a sweep, each given where another kind is wanted
    for name, summary in (("a_run", '{"kind": "run"}'), ("a_compare_study", '{"kind": "study", "study": "compare"}'),
                          ("a_shift_sweep_study", '{"kind": "study", "study": "shift-sweep"}'), ("a_sweep", '{"kind": "sweep"}'),
                          ("a_completed_compare_study", '{"kind": "study", "study": "compare", "status": "completed"}'),
                          ("a_completed_shift_sweep_study", '{"kind": "study", "study": "shift-sweep", "status": "completed"}')):
        made = paths[name] = tmp / name
        made.mkdir()
        (made / "summary.json").write_text(summary)
    (paths["a_run"] / "config.yaml").write_text(OK)
    (paths["config_model_a_name"] / "config.yaml").write_text(OK.replace("{name: fc, hidden: [8]}", "fc"))
    (paths["config_smoothing_a_word"] / "config.yaml").write_text(OK + "loss: {label_smoothing: abc}\n")
    return paths


# ---------------------------------------------------------------------------- the cases
# (id, arguments, exit code, text the message must contain). {name} is a file written above.
RUNS = ["--runs-dir", "{tmp}/runs"]
OK_ARGS = ["train", "{tmp}/ok.yaml", "--data-dir", "{good}", *RUNS]
CASES = [
    # the config file itself
    ("missing_file", ["train", "{tmp}/nope.yaml"], 2, "not found"),
    ("a_directory", ["train", "{tmp}"], 2, "is a directory, not a config file"),
    ("not_yaml", ["train", "{tmp}/not_yaml.yaml"], 2, "not valid YAML (line 3, column 1)"),
    ("key_twice", ["train", "{tmp}/key_twice.yaml"], 2, "(line 4, column 1): the key 'model' is given twice"),
    ("key_unhashable", ["train", "{tmp}/key_unhashable.yaml"], 2, "(line 3, column 1): found unhashable key"),
    ("value_key", ["train", "{tmp}/value_key.yaml"], 2, "value_key.yaml: unknown key '='; valid keys here: name, seed"),
    ("value_key_alone", ["train", "{tmp}/value_key_alone.yaml"], 2, "value_key_alone.yaml: unknown key '='; valid keys here: name, seed"),
    ("sweep_cuda_on_local_ray", ["sweep", "configs/sweeps/lenet_lr.yaml", "--device", "cuda", "--address", "local", "--runs-dir", "{tmp}/no_study"], 2, "no CUDA device"),
    ("empty", ["train", "{tmp}/empty.yaml"], 2, "empty"),
    ("a_list", ["train", "{tmp}/a_list.yaml"], 2, "must be a mapping"),
    ("binary", ["train", "{tmp}/binary.yaml"], 2, "cannot read"),
    ("python_tag", ["train", "{tmp}/python_tag.yaml"], 2, "python/object/apply"),
    ("sweep_seed_as_a_list", ["sweep", "configs/sweeps/lenet_lr.yaml", "seed=[0]", "--runs-dir", "{tmp}/no_study"], 2, "seed=[0]: a sweep's trials take their seeds from seeds=[...], e.g. seeds=[0]"),
    ("train_a_sweep_file", ["train", "configs/sweeps/lenet_lr.yaml"], 2, "is a sweep file, not a config: run it with cnnlab sweep configs/sweeps/lenet_lr.yaml"),
    ("train_a_study_file", ["train", "configs/studies/fc_vs_cnn.yaml"], 2, "is a study file, not a config: run it with cnnlab compare"),
    # unknown keys, at any depth, with the closest valid key
    ("unknown_top", ["train", "{tmp}/unknown_top.yaml"], 2, "unknown key 'sedd'; did you mean 'seed'?"),
    ("unknown_nested", ["train", "{tmp}/unknown_nested.yaml"], 2, "unknown key 'train.epohcs'; did you mean 'train.epochs'?"),
    ("unknown_deep", ["train", "{tmp}/unknown_deep.yaml"], 2, "did you mean 'transform.augment.hflip'?"),
    ("unknown_in_model", ["train", "{tmp}/unknown_in_model.yaml"], 2, "did you mean 'model.hidden'?"),
    # unknown names list the valid ones
    ("unknown_model", ["train", "{tmp}/unknown_model.yaml"], 2, "unknown model 'resnet9'; valid names: 'fc', 'cnn'"),
    ("unknown_optimizer", ["train", "{tmp}/unknown_optimizer.yaml"], 2, "unknown optimizer 'sgdd'; valid names: 'sgd', 'adam'"),
    ("unknown_dataset", ["train", "{tmp}/unknown_dataset.yaml"], 2, "'mnist', 'fashion-mnist'"),
    ("unknown_device", ["train", "{tmp}/unknown_device.yaml"], 2, "unknown device 'tpu'; valid: auto, cpu, cuda"),
    ("no_model", ["train", "{tmp}/no_model.yaml"], 2, "no_model.yaml: model: missing; give model.name, one of 'fc', 'cnn', 'lenet', "),
    ("section_not_mapping", ["train", "{tmp}/section_not_mapping.yaml"], 2, "train:"),
    # wrong types and out-of-range values, through overrides
    ("negative_epochs", [*OK_ARGS, "train.epochs=-1"], 2, "train.epochs: Input should be greater than 0 (got -1)"),
    ("zero_epochs", [*OK_ARGS, "train.epochs=0"], 2, "train.epochs"),
    ("zero_lr", [*OK_ARGS, "optimizer.lr=0"], 2, "optimizer.lr: Input should be greater than 0"),
    ("negative_lr", [*OK_ARGS, "optimizer.lr=-0.1"], 2, "optimizer.lr"),
    ("infinite_lr", [*OK_ARGS, "optimizer.lr=.inf"], 2, "optimizer.lr: Input should be a finite number (got inf)"),
    ("zero_batch", [*OK_ARGS, "train.batch_size=0"], 2, "train.batch_size"),
    ("threads_too_many", [*OK_ARGS, "train.threads=100000"], 2, "train.threads: Input should be less than or equal to 1024 (got 100000)"),  # torch: a segfault
    ("compare_too_many_seeds", ["compare", "{tmp}/ok.yaml", "--seeds", "99999999999", "--runs-dir", "{tmp}/no_study"], 2,
     "1 model(s) x 1 condition(s) x 99,999,999,999 seeds is more than 10,000 runs"),  # not the memory exhausted making them
    ("shift_too_large", [*OK_ARGS, "transform.shift.dx=28"], 2, "must be smaller than the 28x28 image"),
    ("shift_too_large_up", [*OK_ARGS, "transform.shift.dy=-40"], 2, "(0, -40)"),
    ("translate_too_large", [*OK_ARGS, "transform.augment.translate=28"], 2, "transform.augment.translate"),
    ("epochs_not_int", [*OK_ARGS, "train.epochs=abc"], 2, "train.epochs: Input should be a valid integer"),
    ("epochs_fraction", [*OK_ARGS, "train.epochs=1.5"], 2, "train.epochs: Input should be a valid integer"),
    ("zero_width_layer", [*OK_ARGS, "model.hidden=[0]"], 2, "model.hidden"),
    ("step_needs_size", [*OK_ARGS, "schedule.name=step"], 2, "schedule.step_size: Field required"),
    # malformed overrides
    ("override_no_value", [*OK_ARGS, "train.epochs"], 2, "'train.epochs' is not KEY=VALUE"),
    ("override_no_key", [*OK_ARGS, "=3"], 2, "is not a dotted key"),
    ("override_bad_yaml", [*OK_ARGS, "train.epochs=[1"], 2, "not valid YAML"),
    ("override_unknown", [*OK_ARGS, "train.epocs=3"], 2, "did you mean 'train.epochs'?"),
    ("override_unknown_section", [*OK_ARGS, "foo.bar=1"], 2, "unknown key 'foo'; valid keys here: name, seed"),
    ("override_into_value", [*OK_ARGS, "train.epochs.x=1"], 2, "train.epochs is not a section"),
    ("override_model", [*OK_ARGS, "model.name=resnet"], 2, "valid names: 'fc'"),
    ("override_optimizer", [*OK_ARGS, "optimizer.name=lbfgs"], 2, "valid names: 'sgd'"),
    ("override_device", [*OK_ARGS, "device=gpu"], 2, "valid: auto, cpu, cuda"),
    # command line usage
    ("unknown_option", [*OK_ARGS, "--bogus"], 2, "No such option: --bogus"),
    ("misspelt_option", ["train", "{tmp}/ok.yaml", "--runs-di", "x"], 2, "--runs-dir"),
    ("unknown_command", ["trian"], 2, "No such command 'trian'"),
    ("option_without_value", ["train", "--resume"], 2, "'--resume' requires an argument"),
    ("no_config", ["train"], 2, "missing CONFIG"),
    # a path longer than a file name may be (255 bytes) is one line wherever it is given
    ("config_name_too_long", ["train", "a" * 300 + ".yaml"], 2, "error: File name too long: " + "a" * 300 + ".yaml"),
    ("runs_dir_name_too_long", ["runs", "--runs-dir", "{tmp}/" + "a" * 300], 2, "File name too long"),
    ("show_name_too_long", ["show", "a" * 300], 2, "File name too long"),
    # a line break in a path the user gave is written \n: the message stays one line
    ("config_path_with_a_newline", ["train", "{tmp}/no\nfile.yaml"], 2, "no\\nfile.yaml"),
    ("runs_dir_with_a_newline", ["train", "{tmp}/ok.yaml", "--data-dir", "{good}", "--runs-dir", "{a_file}/x\ny"], 1, "a_file/x\\ny: "),
    ("summary_no_config", ["summary", "train.epochs=3"], 2, "missing CONFIG"),
    # no argument at all: cnnlab's wording with an example, as train's, not click's "Missing argument"
    ("summary_no_arguments", ["summary"], 2, "error: missing CONFIG, e.g. cnnlab summary mnist_cnn"),
    ("samples_no_arguments", ["samples"], 2, "error: missing DATASET, e.g. cnnlab samples mnist"),
    ("toy_without_bce", [*OK_ARGS, "model={{name: toy}}", "dataset.name=toy"], 2, "model toy has one sigmoid output: it needs loss bce (set loss.name=bce)"),
    ("bce_without_toy", [*OK_ARGS, "loss.name=bce"], 2, "loss bce needs one sigmoid output (model toy); model fc has one per class: set loss.name=cross_entropy"),
    ("toy_on_mnist", [*OK_ARGS, "model={{name: toy}}", "loss.name=bce"], 2, "needs a two-class dataset (toy), not mnist"),
    ("bench_unknown_device", ["bench", "--quick", "--device", "gpu", *RUNS], 2, "unknown --device 'gpu'; valid: auto, cpu, cuda, cuda:N"),
    # an empty value ("$UNSET_VARIABLE") is refused, not taken as not given (or, for a path, as the working directory)
    ("train_empty_device", [*OK_ARGS, "--device", ""], 2, "unknown --device ''; valid: auto, cpu, cuda, cuda:N"),
    ("bench_empty_device", ["bench", "--quick", "--device", "", *RUNS], 2, "unknown --device ''"),
    ("compare_empty_device", ["compare", "{tmp}/ok.yaml", "--device", "", "--runs-dir", "{tmp}/no_study"], 2, "unknown --device ''"),
    ("shift_sweep_empty_device", ["shift-sweep", "--device", "", "--runs-dir", "{tmp}/no_study"], 2, "unknown --device ''"),
    ("sweep_empty_device", ["sweep", "configs/sweeps/lenet_lr.yaml", "--device", "", "--runs-dir", "{tmp}/no_study"], 2, "unknown --device ''"),
    ("compare_unknown_device", ["compare", "{tmp}/ok.yaml", "--device", "tpu", "--runs-dir", "{tmp}/no_study"], 2, "unknown --device 'tpu'"),
    ("train_empty_data_dir", ["train", "{tmp}/ok.yaml", "--data-dir", "", *RUNS], 2, "--data-dir is empty: give a value, or leave --data-dir out"),
    ("train_empty_runs_dir", ["train", "{tmp}/ok.yaml", "--data-dir", "{good}", "--runs-dir", ""], 2, "--runs-dir is empty"),
    ("runs_empty_runs_dir", ["runs", "--runs-dir", ""], 2, "--runs-dir is empty"),
    ("compare_empty_address", ["compare", "{tmp}/ok.yaml", "--address", "", "--runs-dir", "{tmp}/no_study"], 2, "--address is empty"),
    ("train_empty_resume", ["train", "--resume", ""], 2, "--resume is empty"),
    ("compare_empty_resume", ["compare", "--resume", ""], 2, "--resume is empty"),
    ("sweep_empty_resume", ["sweep", "--resume", ""], 2, "--resume is empty"),
    ("shift_sweep_empty_from_run", ["shift-sweep", "--from-run", "", "--runs-dir", "{tmp}/no_study"], 2, "--from-run is empty"),
    ("forward_check_empty_run", ["forward-check", "--run", ""], 2, "--run is empty"),
    ("sweep_empty_address", ["sweep", "configs/sweeps/lenet_lr.yaml", "--address", "", "--runs-dir", "{tmp}/no_study"], 2, "--address is empty"),
    # options are named as typed, not as the field that holds them
    ("shift_sweep_max_shift_too_large", ["shift-sweep", "--max-shift", "99", "--runs-dir", "{tmp}/no_study"], 2,
     "error: --max-shift: Input should be less than or equal to 27 (got 99)"),
    ("shift_sweep_unknown_axis", ["shift-sweep", "--axis", "z", "--runs-dir", "{tmp}/no_study"], 2, "error: --axis: must be one of 'x', 'y' or 'both' (got 'z')"),
    # a split is refused in one wording, as other option values are
    ("shift_sweep_unknown_image_split", ["shift-sweep", "--image-split", "tset", "--runs-dir", "{tmp}/no_study"], 2, "error: unknown --image-split 'tset'; valid: train, test"),
    ("samples_unknown_split", ["samples", "mnist", "--split", "tset"], 2, "error: unknown --split 'tset'; valid: train, test"),
    ("shift_sweep_negative_image_index", ["shift-sweep", "--image-index", "-1", "--runs-dir", "{tmp}/no_study"], 2, "error: --image-index: Input should be greater"),
    ("bench_too_many_threads", ["bench", "--quick", "--threads", "5000", *RUNS], 2, "error: --threads: Input should be less than or equal to 1024 (got 5000)"),
    ("shift_sweep_unknown_dataset", ["shift-sweep", "--dataset", "fashion", "--runs-dir", "{tmp}/no_study"], 2, "unknown --dataset 'fashion'; valid: mnist"),
    ("compare_unknown_dataset", ["compare", "{tmp}/ok.yaml", "--dataset", "fashion", "--runs-dir", "{tmp}/no_study"], 2, "unknown --dataset 'fashion'; valid: mnist"),
    # no data: a bench that took these cases would stop at once instead of measuring for minutes
    ("bench_no_case", ["bench", "--cases", "", "--data-dir", "{empty_dir}", *RUNS], 2, "--cases '' names no case"),
    ("bench_case_twice", ["bench", "--cases", "fc,cnn,fc", "--data-dir", "{empty_dir}", *RUNS], 2, "--cases names fc more than once"),
    ("bench_runs_dir_under_a_file", ["bench", "--quick", "--runs-dir", "{a_file}/runs"], 1, "cannot create the runs directory"),
    ("resume_and_config", ["train", "{tmp}/ok.yaml", "--resume", "{empty_dir}"], 2, "--resume takes the config from the run"),
    ("runs_unknown_option", ["runs", "--bogus"], 2, "No such option"),
    ("runs_unknown_dataset", ["runs", "--dataset", "fashion", *RUNS], 2, "unknown --dataset 'fashion'; valid: mnist, fashion-mnist, cifar10"),
    ("runs_unknown_model", ["runs", "--model", "resnet", *RUNS], 2, "unknown --model 'resnet'; valid: fc, cnn, lenet"),
    ("runs_dir_a_file", ["runs", "--runs-dir", "{a_file}"], 1, "a_file is a file, not a runs directory"),
    # runtime: device, data, runs directory, resume
    ("cuda_without_cuda", [*OK_ARGS, "device=cuda"], 2, "no CUDA device"),
    # refused before a study or sweep directory exists (it could never train, yet would offer a resume)
    ("compare_cuda_without_cuda", ["compare", "{tmp}/ok.yaml", "--device", "cuda", "--seeds", "1", "--data-dir", "{good}", "--runs-dir", "{tmp}/no_study"], 2, "no CUDA device"),
    ("shift_sweep_cuda_without_cuda", ["shift-sweep", "--device", "cuda", "--runs-dir", "{tmp}/no_study"], 2, "no CUDA device"),
    ("compare_two_datasets", ["compare", "configs/mnist_fc.yaml", "configs/fashion_fc.yaml", "--runs-dir", "{tmp}/no_study"], 2, "trained on different datasets (fashion-mnist, mnist); compare one dataset at a time"),
    # the cells would train on the cluster, but the sweep evaluates them here
    ("shift_sweep_cuda_on_a_cluster", ["shift-sweep", "--device", "cuda", "--address", "127.0.0.1:1", "--runs-dir", "{tmp}/no_study"], 2, "no CUDA device"),
    ("sweep_cuda_without_cuda", ["sweep", "configs/sweeps/lenet_lr.yaml", "--device", "cuda", "--runs-dir", "{tmp}/no_study"], 2, "no CUDA device"),
    # more than this machine has: a local Ray would wait for it forever
    ("sweep_more_gpus_than_here", ["sweep", "configs/sweeps/lenet_lr.yaml", "resources.gpus=1000", "--runs-dir", "{tmp}/no_study"], 2,
     "each trial asks for 1000 GPUs (resources.gpus) but this machine has"),
    ("sweep_more_cpus_than_here", ["sweep", "configs/sweeps/lenet_lr.yaml", "resources.cpus=1000", "--address", "local", "--runs-dir", "{tmp}/no_study"], 2,
     "each trial asks for 1000 CPUs (resources.cpus) but this machine has"),
    # an impossible runs directory, before Ray starts or a cluster is reached
    ("sweep_runs_dir_under_a_file", ["sweep", "configs/sweeps/lenet_lr.yaml", "--address", "127.0.0.1:1", "--runs-dir", "{a_file}/runs"], 1,
     "cannot create the runs directory"),
    ("sweep_runs_dir_a_file", ["sweep", "configs/sweeps/lenet_lr.yaml", "--runs-dir", "{a_file}"], 1, "a_file is a file, not a runs directory"),
    ("sweep_data_missing", ["sweep", "configs/sweeps/lenet_lr.yaml", "dataset.download=false", "--data-dir", "{empty_dir}", "--runs-dir", "{tmp}/no_study"], 1,
     "error: MNIST not found in"),  # not "N of N trials failed; the first: ..."
    # a cluster's nodes have their own data: not checked here
    ("sweep_data_on_a_cluster", ["sweep", "configs/sweeps/lenet_lr.yaml", "dataset.download=false", "--data-dir", "{empty_dir}", "--address", "127.0.0.1:1",
                                 "--runs-dir", "{tmp}/no_study"], 1, "cannot reach a Ray cluster at 127.0.0.1:1"),
    ("data_missing", ["train", "{tmp}/ok.yaml", "--data-dir", "{empty_dir}", *RUNS], 1, "MNIST not found in"),
    ("download_impossible", ["train", "{tmp}/ok.yaml", "dataset.download=true", "--data-dir", "{a_file}/data", *RUNS], 1, "/a_file is a file"),
    ("idx_bad_magic", ["train", "{tmp}/ok.yaml", "--data-dir", "{magic}", *RUNS], 1, "bad magic number 0x00000809"),
    ("idx_truncated", ["train", "{tmp}/ok.yaml", "--data-dir", "{idx_short}", *RUNS], 1, "truncated"),
    ("cifar_truncated", ["train", "{tmp}/ok.yaml", "dataset.name=cifar10", "--data-dir", "{cifar_short}", *RUNS], 1, "not a valid CIFAR pickle"),
    ("runs_dir_under_a_file", ["train", "{tmp}/ok.yaml", "--data-dir", "{good}", "--runs-dir", "{a_file}/runs"], 1, "cannot create the runs directory"),
    ("loss_diverges", ["train", "{tmp}/ok.yaml", "optimizer.lr=1e20", "--data-dir", "{good}", "--runs-dir", "{tmp}/nan_runs"], 1, "at epoch 1, step"),
    ("resume_missing", ["train", "--resume", "{tmp}/no_such_run"], 1, "does not exist"),
    ("resume_not_a_run", ["train", "--resume", "{empty_dir}"], 1, "not a run directory"),
    ("resume_a_file", ["train", "--resume", "{a_file}"], 1, "a_file is a file"),
    ("resume_metrics_not_numbers", ["train", "--resume", "{metrics_text_epoch}", "--data-dir", "{good}"], 1, "column 'epoch' holds something other than numbers"),
    ("resume_a_study", ["train", "--resume", "{a_compare_study}"], 1,
     "a_compare_study is a compare study directory, not a run: resume it with cnnlab compare --resume"),
    ("resume_a_shift_sweep", ["train", "--resume", "{a_shift_sweep_study}"], 1, "is a shift-sweep study directory, not a run: resume it with cnnlab shift-sweep --resume"),
    ("resume_a_sweep", ["train", "--resume", "{a_sweep}"], 1, "a_sweep is a sweep directory, not a run: resume it with cnnlab sweep --resume"),
    # a completed study: its own --resume would only say it is complete
    ("resume_a_completed_study", ["train", "--resume", "{a_completed_compare_study}"], 1,
     "a_completed_compare_study is a compare study directory, not a run, and it is already complete: nothing to resume"),
    ("sweep_resume_a_completed_study", ["sweep", "--resume", "{a_completed_shift_sweep_study}"], 1,
     "a_completed_shift_sweep_study is a shift-sweep study directory, not a sweep, and it is already complete: nothing to resume"),
    ("compare_resume_a_run", ["compare", "--resume", "{a_run}"], 1, "a_run is a run directory, not a compare study: resume it with cnnlab train --resume"),
    ("sweep_resume_a_study", ["sweep", "--resume", "{a_compare_study}"], 1, "is a compare study directory, not a sweep: resume it with cnnlab compare --resume"),
    ("forward_check_a_study", ["forward-check", "--run", "{a_compare_study}"], 1, "is a compare study directory, not a run: give one of its runs, in"),
    ("shift_sweep_from_a_sweep", ["shift-sweep", "--from-run", "{a_sweep}", "--runs-dir", "{tmp}/no_study"], 1, "a_sweep is a sweep directory, not a run: give one of its runs, in"),
    ("resume_a_runs_file", ["train", "--resume", "{metrics_semicolons}/config.yaml"], 1, "is a file of a run: give its directory"),
    ("show_summary_not_an_object", ["show", "{summary_a_list}"], 1, "not a JSON object but a list"),
    ("show_metrics_not_cnnlabs", ["show", "{metrics_semicolons}"], 1, "no 'epoch', 'train_loss'"),
    ("show_metrics_blank_epoch", ["show", "{metrics_blank_epoch}"], 1, "metrics.csv: column 'epoch' holds something other than whole numbers"),
    ("show_metrics_epoch_inf", ["show", "{metrics_epoch_inf}"], 1, "metrics.csv: column 'epoch' holds something other than whole numbers"),
    ("show_metrics_extra_field", ["show", "{metrics_extra_field}"], 1, "metrics.csv: its rows hold more fields than its header (edited by hand?)"),
    ("show_metrics_epoch_twice", ["show", "{metrics_epoch_twice}"], 1, "metrics.csv: row 2 is epoch 1, not 2 (edited by hand?)"),
    ("show_study_files_a_number", ["show", "{study_files_a_number}"], 1, "summary.json: 'files' should be a list, not 5 (edited by hand?)"),
    ("show_study_table_binary", ["show", "{study_table_binary}"], 1, "table.md: 'utf-8' codec can't decode"),
    ("show_config_smoothing_a_word", ["show", "{config_smoothing_a_word}"], 1, "config.yaml: 'label_smoothing' should be a number, not 'abc'"),
    ("show_config_model_a_name", ["show", "{config_model_a_name}"], 1, "config.yaml: 'model' should be a mapping, not 'fc'"),
    ("resume_metrics_not_cnnlabs", ["train", "--resume", "{metrics_semicolons}", "--data-dir", "{good}"], 1, "no 'epoch', 'train_loss'"),
    # values torch or the dataset cannot take
    ("seed_too_large", [*OK_ARGS, "seed=99999999999999999999"], 2, "seed: Input should be less than"),
    ("reported_as_a_percentage", [*OK_ARGS, "reported.test_acc=96"], 2, "reported.test_acc: Input should be less than or equal to 1"),
    ("normalize_one_channel", [*OK_ARGS, "transform.normalize={{mean: [0.1, 0.2], std: [0.3, 0.3]}}"], 2, "needs 1 mean/std value for mnist"),
    ("nesterov_without_momentum", [*OK_ARGS, "optimizer.nesterov=true"], 2, "optimizer: nesterov needs a momentum above 0"),
    ("adam_beta_of_one", [*OK_ARGS, "optimizer.name=adam", "optimizer.betas=[0.9, 1.0]"], 2, "optimizer.betas.1: Input should be less than 1"),
    ("warmup_longer_than_the_run", [*OK_ARGS, "schedule.name=cosine", "schedule.warmup_epochs=5", "train.epochs=2"], 2, "schedule.warmup_epochs (5) must be below train.epochs (2)"),
    ("normalize_not_a_choice", [*OK_ARGS, "transform.normalize=Dataset"], 2, "transform.normalize: must be one of 'dataset' or 'none', or {mean: ..., std: ...} (got 'Dataset')"),
    ("normalize_empty", [*OK_ARGS, "transform.normalize="], 2, "transform.normalize: must be one of 'dataset' or 'none', or {mean: ..., std: ...} (got no value)"),
    ("normalize_a_number", [*OK_ARGS, "transform.normalize=3"], 2, "transform.normalize: must be one of 'dataset' or 'none', or {mean: ..., std: ...} (got 3)"),
    ("label_smoothing_with_bce", ["train", "configs/toy_4x4.yaml", "loss.label_smoothing=0.3", *RUNS], 2, "loss bce takes none"),
    # samples
    ("samples_two_datasets", ["samples", "mnist", "fashion-mnist"], 2, "'fashion-mnist' is not KEY=VALUE: give one dataset, then overrides like transform.permute=true"),
    ("samples_misspelt_key", ["samples", "mnist", "transform.permut=true"], 2, "unknown key 'transform.permut'; did you mean 'transform.permute'?"),
    ("samples_dataset_shorthand", ["samples", "mnist", "--config", "{tmp}/dataset_shorthand.yaml"], 2, "dataset must be a section"),
]


assert len({c[0] for c in CASES}) == len(CASES), "two cases share an id: results are kept by id"
HAS_CUDA = torch.cuda.is_available()  # then `device: cuda` is no error
# sweep errors found after cnnlab made sure Ray is there: without it, each says that Ray is missing
AFTER_THE_RAY_CHECK = {
    "sweep_cuda_on_local_ray", "sweep_cuda_without_cuda", "sweep_more_gpus_than_here", "sweep_more_cpus_than_here",
    "sweep_data_missing", "sweep_data_on_a_cluster",
}
assert AFTER_THE_RAY_CHECK <= {c[0] for c in CASES}


def skip_reason(case) -> str | None:
    if HAS_CUDA and "CUDA" in case[3]:
        return "this machine has CUDA"
    if not HAS_RAY and case[0] in AFTER_THE_RAY_CHECK:
        return "Ray is not installed"
    return None


def applies(case) -> bool:
    return skip_reason(case) is None


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case (a few at a time) and keep the finished processes by case id."""
    tmp = tmp_path_factory.mktemp("errors")
    paths = {name: str(path) for name, path in write_files(tmp).items()}

    def one(case):
        return case[0], cli(*[a.format(tmp=tmp, **paths) for a in case[1]])

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(pool.map(one, filter(applies, CASES)))
    return tmp, done


@pytest.mark.parametrize(
    "case_id,args,code,expected",
    [pytest.param(*c, id=c[0], marks=pytest.mark.skipif(not applies(c), reason=str(skip_reason(c)))) for c in CASES],
)
def test_bad_input_is_one_clear_line(results, case_id, args, code, expected):
    out = results[1][case_id]
    assert "Traceback" not in out.stdout + out.stderr, out.stderr
    line = error_line(out.stderr)
    assert out.returncode == code, f"exit {out.returncode}: {line}"
    assert line.startswith("error: ") and expected in line, line


def test_an_override_longer_than_a_file_name_is_an_override(tmp_path):
    """Whether an argument is a config file is asked of the file system, which refuses names over 255 bytes."""
    (tmp_path / "ok.yaml").write_text(OK)
    out = cli("train", tmp_path / "ok.yaml", "description=" + "x" * 300, "--print-config")
    assert out.returncode == 0 and "x" * 300 in out.stdout.replace("\n", "").replace(" ", ""), out.stderr


def test_a_study_or_sweep_that_cannot_start_leaves_no_directory(results):
    tmp, _ = results
    made = tmp / "no_study"
    assert not made.exists(), sorted(p.name for p in made.iterdir())


def test_yaml_tags_run_no_code(results):
    tmp, _ = results
    assert not (tmp / "yaml_ran").exists()


def test_a_diverging_loss_fails_the_run_at_once(results):
    tmp, _ = results
    (run_dir,) = (tmp / "nan_runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "the loss became" in summary["error"] and "epoch 1, step" in summary["error"]
    assert summary["epochs"] == 0 and not (run_dir / "metrics.csv").exists()
    assert results[1]["loss_diverges"].stdout.splitlines()[-1] == str(run_dir)  # the last line, as for a run that finished


def test_a_train_that_fails_before_its_run_directory_exists_prints_nothing(results):
    """Only a run directory that was made is printed (see the diverging loss above)."""
    for case_id in ("data_missing", "runs_dir_under_a_file", "resume_missing", "seed_too_large"):
        assert results[1][case_id].stdout == "", case_id


def test_help_and_no_arguments():
    assert cli("train", "--help").returncode == 0
    out = cli()  # the help, and one line saying what is missing (it was an empty line)
    assert out.returncode == 2 and "Usage" in out.stdout and "Traceback" not in out.stdout + out.stderr
    assert out.stderr == "error: missing COMMAND: one of those above (cnnlab COMMAND --help tells its options)\n"


def test_on_windows_one_line_says_where_cnnlab_runs():
    """On Windows every command ended in "ModuleNotFoundError: No module named 'fcntl'" (runs.py locks
    run directories with it), and os.kill(pid, 0), which probes a process here, terminates it there.
    Windows is played by a process without fcntl whose sys.platform says win32."""
    code = ("import sys; sys.modules['fcntl'] = None; from cnnlab.cli import entry; "
            "sys.platform = 'win32'; sys.argv = ['cnnlab', 'train', 'mnist_cnn']; entry()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 1 and out.stderr == "error: cnnlab needs Linux or macOS; on Windows, run it in WSL\n", out.stderr


def test_a_missing_config_with_an_equals_sign_in_its_path_is_not_found():
    """configs/a=b.yaml was taken for an override: 'missing CONFIG', where the file is not found."""
    for command in ("train", "compare"):
        out = cli(command, "configs/a=b.yaml")
        assert out.returncode == 2 and error_line(out.stderr) == "error: config file not found: configs/a=b.yaml", out.stderr


@pytest.mark.skipif(not hasattr(os, "pipe"), reason="needs a pipe")
def test_a_note_to_a_stderr_whose_reader_has_gone_does_not_end_the_command(tmp_path):
    """forward-check's note that --n is more than the split (on stderr) ended the command with exit 1
    and no output when stderr was a pipe nobody read any more (`2>&1 | :`)."""
    data = tmp_path / "data"
    make_idx_dataset(data, n_train=4, n_test=6)
    read, write = os.pipe()
    os.close(read)  # the reader has gone
    out = subprocess.run([sys.executable, "-m", "cnnlab", "forward-check", "mnist_fc", "--n", "20", "--data-dir", str(data)],
                         stdout=subprocess.PIPE, stderr=write, text=True, cwd=ROOT, timeout=120)
    os.close(write)
    assert out.returncode == 0 and re.match(r"all \d+ layers match PyTorch", out.stdout.strip().splitlines()[-1]), out.stdout



@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_before_training_starts_is_one_line(tmp_path, signum):
    """SIGTERM while the config is still being read (a pipe no one writes to yet) said nothing: the
    process died of it. Now either signal ends the command as Ctrl-C does, at any moment."""
    config = tmp_path / "config.yaml"
    os.mkfifo(config)
    proc = start("train", config, "--runs-dir", tmp_path / "runs")
    try:
        writer = None
        while writer is None:  # the pipe opens for writing once cnnlab has it open for reading
            try:
                writer = os.open(config, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.05)
        proc.send_signal(signum)  # cnnlab waits in read(): nothing written to the pipe yet
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        if writer is not None:
            os.close(writer)
    assert "Traceback" not in stderr and stdout == ""  # no run directory to print
    assert proc.returncode == 128 + signum and error_line(stderr) == f"interrupted: {signal.Signals(signum).name}"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_while_python_shuts_down_after_the_output_is_no_traceback(tmp_path, signum):
    """Once a command has said everything, Python's shutdown takes up to a second with torch loaded;
    a Ctrl-C there printed 'Exception ignored ... KeyboardInterrupt' and a traceback from whatever
    finalizer it hit (an atexit hook stands in for one here). It then ended by the signal (exit 130
    in a shell, for a command that had done its work); now at once, with the command's own code.
    SIGTERM (the second of a supervisor's SIGINT, SIGTERM) ended it by the signal, exit 143."""
    hook = f"import atexit, os, signal, time; atexit.register(lambda: (os.kill(os.getpid(), {int(signum)}), time.sleep(5)))"
    out = subprocess.run(
        [sys.executable, "-c", f"{hook}; import runpy, sys; sys.argv = ['cnnlab', 'runs', '--runs-dir', {str(tmp_path)!r}]; "
         "runpy.run_module('cnnlab', run_name='__main__')"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.stdout == f"no runs in {tmp_path}\n"  # the command's output is whole
    assert out.returncode == 0 and out.stderr == ""
    # a command that failed keeps its failure's code
    out = subprocess.run(
        [sys.executable, "-c", f"{hook}; import runpy, sys; sys.argv = ['cnnlab', 'show', {str(tmp_path / 'none')!r}]; "
         "runpy.run_module('cnnlab', run_name='__main__')"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 1 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr, out.stderr


def test_ctrl_c_after_a_finished_run_printed_its_directory_exits_0(tmp_path):
    """A Ctrl-C just after `cnnlab train` printed its run directory, as the command returned, exited
    130 saying 'interrupted' of a run written whole and marked completed: `cnnlab train ... && next`
    took it for a failure. Now the command exits as it would have."""
    script = (
        "import sys; import cnnlab.cli as cli\n"
        "told = cli.tell_finished\n"
        "def tell_finished(*args, **kwargs):\n"
        "    told(*args, **kwargs)\n"
        "    raise KeyboardInterrupt  # the signal, right after the last line\n"
        "cli.tell_finished = tell_finished\n"
        f"sys.argv = ['cnnlab', 'train', 'toy_4x4', 'train.epochs=2', '--runs-dir', {str(tmp_path)!r}]\n"
        "cli.entry()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    run_dir = Path(out.stdout.splitlines()[-1])
    assert out.returncode == 0 and "interrupted" not in out.stderr, out.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    # one before the directory is printed is still an interruption, said so
    script = script.replace("    told(*args, **kwargs)\n", "")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 130 and error_line(out.stderr).startswith("interrupted"), out.stderr


def test_a_burst_of_signals_ends_a_run_as_its_first_one_does(tmp_path):
    """SIGINT, SIGINT, SIGTERM back to back (helper h105; a supervisor's stop, Ctrl-C pressed again
    and again) ended `cnnlab train` in "interrupted: SIGTERM" alone, or without the run directory
    and the way to go on, or died of the SIGTERM; its run left 'running'. Here the first comes as
    epoch 1's files are written, two more before the run's cleanup, two as the stop is being told."""
    script = (
        "import os, signal, sys; import cnnlab.cli as cli; from cnnlab import experiment, runs\n"
        "written = runs.write_table\n"
        "def write_table(path, rows):\n"
        "    written(path, rows)\n"
        "    if len(rows) == 1: os.kill(os.getpid(), signal.SIGINT)\n"
        "runs.write_table = write_table\n"
        "named = experiment.signal_name\n"
        "def signal_name(signum):  # between the Interrupted and the run's cleanup\n"
        "    os.kill(os.getpid(), signal.SIGINT); os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return named(signum)\n"
        "experiment.signal_name = signal_name\n"
        "told = cli.tell\n"
        "def tell(text):\n"
        "    os.kill(os.getpid(), signal.SIGINT); os.kill(os.getpid(), signal.SIGTERM)\n"
        "    told(text)\n"
        "cli.tell = tell\n"
        f"sys.argv = ['cnnlab', 'train', 'toy_4x4', 'train.epochs=3', 'train.checkpoint=true', '--runs-dir', {str(tmp_path)!r}]\n"
        "cli.entry()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    (run_dir,) = tmp_path.iterdir()
    assert out.returncode == 130 and out.stdout.splitlines()[-1] == str(run_dir), out.stderr
    assert error_line(out.stderr) == f"interrupted: stopped by SIGINT during epoch 2; 1 complete epoch(s) kept; continue with: cnnlab train --resume {run_dir}"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"


def test_signals_right_after_the_one_that_stops_a_run_are_its_own():
    """Between the Interrupted a signal raised and the run's cleanup (finish() holds signals off),
    another signal raised a second Interrupted, which left the run 'running' and said nothing of it."""
    import signal

    from cnnlab import interrupts

    signals = interrupts.Signals()
    with signals.installed():
        with pytest.raises(interrupts.Interrupted) as first:
            signals.handler(signal.SIGINT, None)
        assert first.value.signum == signal.SIGINT and interrupts.stopping()
        assert signals.handler(signal.SIGTERM, None) is None and signals.received == signal.SIGINT  # the same stop
        interrupts._stopped_at -= interrupts.BURST_SECONDS  # long after: a stop that hangs can be stopped again
        with pytest.raises(interrupts.Interrupted):
            signals.handler(signal.SIGTERM, None)
    held = interrupts.Signals()
    with held.installed():  # a new command or run: none being stopped
        assert not interrupts.stopping()
        held.critical = True  # files being written: the first signal waits for them, and is the one told
        assert held.handler(signal.SIGINT, None) is None and held.handler(signal.SIGTERM, None) is None
        assert held.pending == held.received == signal.SIGINT and interrupts.stopping()
    # insisting long after, while signals are held off (a write or a flush that hangs), ends the process
    code = ("import signal; from cnnlab import interrupts; s = interrupts.Signals(); s.critical = True\n"
            "s.handler(signal.SIGINT, None); interrupts._stopped_at -= interrupts.BURST_SECONDS\n"
            "s.handler(signal.SIGTERM, None); print('not ended')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 128 + signal.SIGTERM and out.stdout == "" and out.stderr == ""


def test_ctrl_c_after_any_command_returned_changes_nothing(tmp_path, monkeypatch, capsys):
    """`cnnlab bench` printed its table and results path, then a Ctrl-C made it exit 130 (helper h97).
    A command that has returned did all its work: a signal while main() tells how it went is held
    (it changes nothing), one as main() leaves its handler's block goes out with main's exit code,
    and so does one after main(): each ends it with that code, saying nothing."""
    import contextlib
    import types

    import cnnlab.interrupts
    from cnnlab import cli

    held = types.SimpleNamespace(critical=False)

    @contextlib.contextmanager
    def interrupted_on_the_way_out():
        try:
            yield held
        finally:
            raise KeyboardInterrupt  # the signal, as the handler's block is left

    monkeypatch.setattr(cnnlab.interrupts, "interruptible", interrupted_on_the_way_out)
    monkeypatch.setattr(sys, "argv", ["cnnlab", "runs", "--runs-dir", str(tmp_path)])
    with pytest.raises(KeyboardInterrupt):  # entry() ends the process with main's code (below)
        cli.main()
    out = capsys.readouterr()
    assert held.critical and cli._exit_code == 0 and out.out == f"no runs in {tmp_path}\n" and out.err == ""
    # the signal after main() has its code, before entry() took it: the process ends with that code
    script = (
        "import sys, types; import cnnlab.cli as cli\n"
        f"sys.argv = ['cnnlab', 'runs', '--runs-dir', {str(tmp_path)!r}]\n"
        "def exit_(code): raise KeyboardInterrupt\n"
        "cli.sys = types.SimpleNamespace(**{**vars(sys), 'exit': exit_})\n"
        "cli.entry()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout == f"no runs in {tmp_path}\n" and done.stderr == "", done.stderr


def test_counted_gives_a_noun_plural_but_for_one_and_a_float_as_people_write_it():
    """The resources refusal said '1000 GPU(s)'; a count now reads '1 GPU', '2 GPUs', '0.5 GPUs'."""
    from cnnlab.errors import counted

    assert [counted(1, "trial"), counted(3, "trial"), counted(0, "run")] == ["1 trial", "3 trials", "0 runs"]
    assert [counted(1.0, "GPU"), counted(0.5, "GPU"), counted(1000.0, "CPU")] == ["1 GPU", "0.5 GPUs", "1000 CPUs"]
