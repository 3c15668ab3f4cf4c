"""`cnnlab bench`: FLOP counts against hand-computed values and torch's own counter, the reference
loop seeing the same data as cnnlab, the table and CSV on small files, agreement on real MNIST,
and a CLI that answers --help and config errors without importing torch. No timing assertions."""

import contextlib
import csv
import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.bench import reference
from cnnlab.bench import machine, suite
from cnnlab.bench.machine import PeakMemory, compute_peaks, dense_kernels
from cnnlab.commands.bench import peak_title
from cnnlab.config import load_config
from cnnlab.errors import ConfigError, DataError
from cnnlab.experiment import prepare_data
from cnnlab.flops import count_layers, training_flops
from cnnlab.models import build_model
from conftest import ROOT, real_data


def run_bench(case_names: list[str], *, repeats: int = 3, **options) -> tuple[list[dict], dict]:
    """What `cnnlab bench` does in-process: plan the cases, then measure them."""
    return suite.measure(suite.plan_bench(case_names, **options), repeats)


def cnnlab(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )


# ---------------------------------------------------------------------------- FLOPs
def test_flops_of_a_small_model_match_the_hand_count():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    rows = {r.kind: r for r in count_layers(model, (1, 6, 6))}
    # conv: 2 FLOPs x (1 in-channel x 3 x 3) x (2 x 4 x 4 outputs) = 576; its input needs no gradient,
    # so backward is the weight gradient only (576)
    assert (rows["Conv2d"].forward, rows["Conv2d"].backward) == (576, 576)
    assert (rows["MaxPool2d"].forward, rows["MaxPool2d"].backward) == (4 * 8, 4 * 8)  # 2x2 window, 8 outputs
    assert (rows["ReLU"].forward, rows["ReLU"].backward) == (8, 8)
    assert (rows["Linear"].forward, rows["Linear"].backward) == (2 * 8 * 3, 2 * 2 * 8 * 3)  # weight + input grads
    assert rows["Flatten"].forward == 0
    assert training_flops(model, (1, 6, 6)) == 1152 + 64 + 16 + 144


def test_a_layer_behind_a_learned_one_pays_for_its_input_gradient():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 1, 3), nn.BatchNorm2d(1))
    first, second, bn = count_layers(model, (1, 6, 6))
    assert (first.forward, first.backward) == (576, 576)
    assert (second.forward, second.backward) == (2 * 2 * 9 * 4, 2 * 2 * 2 * 9 * 4)  # 1x2x2 outputs of 2x3x3 MACs
    assert (bn.forward, bn.backward) == (5 * 4, 5 * 4)
    assert model.training  # the dry pass leaves the mode as it was


def test_the_dry_pass_keeps_each_layers_mode_and_takes_the_models_dtype():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    model[1].eval()  # frozen statistics inside a model in training mode
    rows = count_layers(model, (1, 6, 6))
    assert model.training and not model[1].training
    assert [(r.forward, r.backward) for r in count_layers(model.double(), (1, 6, 6))] == [(r.forward, r.backward) for r in rows]


@pytest.mark.parametrize(
    "config, shape",
    [("mnist_fc", (1, 28, 28)), ("mnist_cnn", (1, 28, 28)), ("lenet", (1, 28, 28)), ("cifar10_trashnet", (3, 32, 32)),
     ("mnist_fast", (1, 28, 28)), ("cifar10_fast", (3, 32, 32))],  # fastnet: a frozen first layer
)
def test_matrix_product_flops_agree_with_torchs_counter(config, shape):
    """torch's FlopCounterMode counts convolutions and matrix products of a real forward + backward."""
    cfg = load_config(ROOT / "configs" / f"{config}.yaml")
    model = build_model(cfg.model, shape, 10)
    ours = sum(r.training for r in count_layers(model, shape) if r.kind in ("Conv2d", "Linear"))
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *shape)).sum().backward()
    assert ours == counter.get_total_flops() > 0


def test_study_a_cnn_training_flops():
    model = build_model(load_config(ROOT / "configs" / "mnist_cnn.yaml").model, (1, 28, 28), 10)
    conv1 = 2 * 25 * 6 * 24 * 24  # 1 -> 6 channels, 5x5, 24x24 outputs; no input gradient
    conv2 = 2 * 150 * 6 * 8 * 8  # 6 -> 6 channels, 5x5, 8x8 outputs
    fc = 2 * 96 * 50 + 2 * 50 * 10
    pools = 4 * 6 * 12 * 12 + 4 * 6 * 4 * 4
    relus = 6 * 12 * 12 + 6 * 4 * 4 + 50  # the model pools before its ReLUs
    assert training_flops(model, (1, 28, 28)) == 2 * conv1 + 3 * conv2 + 3 * fc + 2 * pools + 2 * relus


# ---------------------------------------------------------------------------- the reference loop
def test_the_reference_sees_the_same_images_as_cnnlab(tiny_data):
    for config, overrides in (("mnist_cnn", []), ("cifar10_trashnet", ["transform.augment.hflip=false", "transform.augment.grayscale=0"])):
        cfg = load_config(ROOT / "configs" / f"{config}.yaml", [f"dataset.data_dir={tiny_data}", "device=cpu", *overrides])
        train_set, test_set = reference.datasets_for(cfg)
        data, _, _ = prepare_data(cfg, torch.device("cpu"))
        for i in (0, 7):
            x, label = train_set[i]
            assert torch.allclose(x, data.x_train[i], atol=1e-5) and label == data.y_train[i]
            x, label = test_set[i]  # trashnet: test images left unnormalized (the article's bug), on both sides
            assert torch.allclose(x, data.x_test[i], atol=1e-5) and label == data.y_test[i]


def test_the_reference_takes_a_configs_subsets_as_cnnlab_does(tiny_data):
    """The first N images of each split, and a subset larger than its split refused, not cut to it."""
    cfg = load_config(ROOT / "configs" / "mnist_fc.yaml", [f"dataset.data_dir={tiny_data}", "dataset.train_subset=300", "dataset.test_subset=7"])
    assert [len(s) for s in reference.datasets_for(cfg)] == [300, 7]
    cfg = load_config(ROOT / "configs" / "mnist_fc.yaml", [f"dataset.data_dir={tiny_data}", "dataset.train_subset=301"])
    with pytest.raises(ConfigError, match=r"^dataset.train_subset=301 is more than the 300 images of the mnist training split"):
        reference.datasets_for(cfg)


def test_quick_evaluates_at_most_its_test_subset(tiny_data, monkeypatch):
    """--quick's 2,000 test images, or all of a smaller test split (the 100 here) rather than a refusal."""
    from cnnlab.bench import suite

    cfg = suite.case_config(suite.CASES["fc"], "cpu", quick=True, data_dir=tiny_data)
    assert suite.quick_test_subset(cfg).dataset.test_subset == 100
    monkeypatch.setattr(suite, "QUICK_TEST_SUBSET", 40)
    assert suite.quick_test_subset(cfg).dataset.test_subset == 40


def test_the_reference_on_gz_only_mnist_says_to_gunzip(tiny_data, tmp_path):
    """cnnlab reads .gz IDX files; torchvision's MNIST class (the tutorials' loop) does not."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (Path(tiny_data) / "MNIST" / "raw").iterdir():
        if not f.name.endswith(".gz"):
            (raw / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
    cfg = load_config(ROOT / "configs" / "mnist_fc.yaml", [f"dataset.data_dir={tmp_path}", "device=cpu"])
    assert len(prepare_data(cfg, torch.device("cpu"))[0].x_train) > 0  # cnnlab itself trains on them
    with pytest.raises(DataError, match=r"needs the uncompressed IDX files in .*MNIST/raw.*gunzip them"):
        reference.datasets_for(cfg)


def test_reference_transforms_follow_the_config():
    cfg = load_config(ROOT / "configs" / "cifar10_trashnet.yaml")
    train, test = reference.transforms_for(cfg)
    assert [type(t).__name__ for t in train.transforms] == ["RandomHorizontalFlip", "RandomGrayscale", "ToTensor", "Normalize"]
    assert [type(t).__name__ for t in test.transforms] == ["ToTensor"]
    with pytest.raises(ValueError, match="permute"):
        reference.transforms_for(load_config(ROOT / "configs" / "mnist_cnn.yaml", ["transform.permute=true"]))


def test_runs_and_the_bench_name_the_cpu_alike():
    from cnnlab.bench.machine import cpu_model, machine_info
    from cnnlab.provenance import provenance

    cpu = torch.device("cpu")  # a run's summary.json said what platform.processor() says ('x86_64', or '')
    assert provenance(cpu)["device_name"] == machine_info(cpu)["device_name"] == cpu_model() != ""


def test_peak_memory_sees_an_allocation():
    with PeakMemory(torch.device("cpu")) as before:
        pass
    with PeakMemory(torch.device("cpu")) as during:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB
        del block
    assert during.mib > before.mib + 48


def test_each_dense_kernel_does_the_flops_it_is_credited_with():
    kernels = dense_kernels(torch.device("cpu"), 64, torch.float32)
    assert set(kernels) == {"matrix product", "1x1 convolution", "3x3 convolution"}
    for name, (flops, call) in kernels.items():
        with FlopCounterMode(display=False) as counter:
            call()
        assert counter.get_total_flops() == flops, name


def test_the_peaks_title_names_the_matrix_product_once():
    """It read '(matrix product; matrix product 429.9)' when the product was the fastest kernel."""
    info = {"peak_dtype": "float32", "peak_gflops": 429.9, "peak_kernel": "matrix product", "matmul_gflops": 429.9, "peak_gflops_1_thread": None, "threads": 1}
    assert peak_title(info, []) == "float32 compute peak 429.9 GFLOP/s (matrix product)"
    conv = {**info, "peak_gflops": 509.5, "peak_kernel": "3x3 convolution", "matmul_gflops": 199.5, "peak_gflops_1_thread": 249.9, "threads": 2}
    assert peak_title(conv, []) == (
        "float32 compute peak 509.5 GFLOP/s (3x3 convolution; matrix product 199.5) with 2 threads, 249.9 with 1 (each case against its own thread count)"
    )


def test_the_compute_peak_is_measured_per_thread_count_for_every_kernel():
    peaks = compute_peaks(torch.device("cpu"), 64)
    assert set(peaks) == {1, torch.get_num_threads()}
    for by_kernel in peaks.values():
        assert set(by_kernel) == {"matrix product", "1x1 convolution", "3x3 convolution"}
        assert all(0 < v < float("inf") for v in by_kernel.values())


def test_a_case_is_measured_against_the_fastest_kernel_at_its_thread_count(tiny_data, monkeypatch):
    # on AMD CPUs MKL's matrix product reaches 40% of oneDNN's convolutions: a ceiling from the
    # product alone put TrashNet at 120% of "the peak"
    threads = torch.get_num_threads()
    fake = {t: {"matrix product": 10.0 * t, "1x1 convolution": 15.0 * t**2, "3x3 convolution": 40.0} for t in {1, threads}}
    monkeypatch.setattr(suite, "compute_peaks", lambda *a, **k: fake)
    rows, info = run_bench(["fc"], quick=True, repeats=1, data_dir=tiny_data)
    best = {t: max(by_kernel.values()) for t, by_kernel in fake.items()}
    assert (info["peak_gflops"], info["matmul_gflops"], info["peak_gflops_1_thread"]) == (best[threads], 10.0 * threads, 40.0)
    assert info["peak_kernel"] == ("3x3 convolution" if threads == 1 else "1x1 convolution")
    assert rows[0]["peak_gflops_used"] == best[rows[0]["cnnlab_threads"]]
    assert rows[0]["fraction_of_peak"] == pytest.approx(rows[0]["gflops"] / rows[0]["peak_gflops_used"])


def test_with_threads_a_case_is_measured_against_the_peak_at_that_thread_count(tiny_data, monkeypatch):
    """--threads 3 trains cnnlab on 3 threads: its % of peak must use a 3-thread peak, not the
    all-cores one (on a 16-core machine that understated it 4x and called compute-bound cases overhead)."""
    assert set(compute_peaks(torch.device("cpu"), 64, threads=(3,))) == {1, torch.get_num_threads(), 3}
    asked = []

    def fake_peaks(device, n, dtype, threads=()):
        asked.append(threads)
        return {t: {"matrix product": 100.0 * t, "1x1 convolution": 1.0, "3x3 convolution": 1.0} for t in {1, torch.get_num_threads(), *threads}}

    monkeypatch.setattr(suite, "compute_peaks", fake_peaks)
    rows, info = run_bench(["fc"], quick=True, repeats=1, threads=3, data_dir=tiny_data)
    assert asked == [(3,)] and rows[0]["cnnlab_threads"] == 3
    assert rows[0]["peak_gflops_used"] == 300.0 and info["peak_gflops"] == 100.0 * torch.get_num_threads()


# ---------------------------------------------------------------------------- the command
def _numbers(df: pd.DataFrame, column: str) -> pd.Series:
    values = pd.to_numeric(df[column], errors="coerce")
    assert values.notna().all(), f"{column} not filled: {list(df[column])}"
    return values


def _markdown_tables(text: str) -> list[list[dict]]:
    """The Markdown tables in text, each a list of {column: cell} rows."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("| ") and lines[i + 1].startswith("| ---"):
            header = [c.strip() for c in line.strip("|").split("|")]
            body = [l for l in lines[i + 2 :]]
            body = body[: next((k for k, l in enumerate(body) if not l.startswith("| ")), len(body))]
            tables.append([dict(zip(header, (c.strip() for c in l.strip("|").split("|")))) for l in body])
    return tables


def test_bench_quick_prints_a_table_and_appends_the_csv(tiny_data, tmp_path):
    runs = tmp_path / "runs"
    first = cnnlab("bench", "--quick", "--cases", "fc,trashnet", "--device", "cpu", "--data-dir", tiny_data, "--runs-dir", runs, "--markdown")
    assert first.returncode == 0, first.stderr
    out_dir = Path(first.stdout.strip().splitlines()[-1])
    assert out_dir == runs / "bench"
    speed, machine = _markdown_tables(first.stdout)
    assert {"case", "budget", "reference s", "cnnlab s", "speed-up (min-max)", "test acc ref / cnnlab", "agree", "peak MiB ref / cnnlab"} <= set(speed[0])
    assert {"case", "MFLOP/sample", "cnnlab GFLOP/s", "% of peak", "bound"} <= set(machine[0])
    assert [r["case"] for r in speed] == [r["case"] for r in machine] == ["fc", "trashnet"]
    for row in speed:
        assert float(row["reference s"]) > 0 and float(row["cnnlab s"]) > 0
        assert re.fullmatch(r"[\d.]+x \([\d.]+-[\d.]+\)", row["speed-up (min-max)"])
        assert re.fullmatch(r"[\d.]+% / [\d.]+%", row["test acc ref / cnnlab"])
    assert all(float(r["cnnlab GFLOP/s"]) > 0 and r["bound"] in ("compute", "overhead") for r in machine)
    second = cnnlab("bench", "--quick", "--cases", "cnn", "--device", "cpu", "--data-dir", tiny_data, "--runs-dir", runs)
    assert second.returncode == 0, second.stderr

    results = pd.read_csv(out_dir / "results.csv")
    assert list(results["case"]) == ["fc", "trashnet", "cnn"]  # appended, not replaced
    assert not list(out_dir.glob("*.tmp"))
    for column in ("ref_seconds", "cnnlab_seconds", "speedup", "flops_per_sample", "gflops", "peak_gflops", "ref_peak_mib", "cnnlab_peak_mib"):
        assert (_numbers(results, column) > 0).all()
    accs = pd.concat([_numbers(results, "ref_acc"), _numbers(results, "cnnlab_acc")])
    assert accs.between(0, 1).all()
    assert set(results["device"]) == {"cpu"} and results["cpu_model"].notna().all() and (results["cores"] >= 1).all()
    assert set(results["torch_version"]) == {torch.__version__}
    # --quick caps a case at 100 steps (trashnet: 5): 300 MNIST images are 5 steps of 64, a whole
    # epoch; 600 CIFAR images are 6 steps of 100
    assert list(results["budget"]) == ["1 epoch", "5 steps", "1 epoch"]


def test_a_target_not_reached_is_not_reported_as_reached_or_rated(tiny_data, tmp_path):
    """lenet99 on random images never reaches 99%: no epochs 'to 99%', no GFLOP/s, no bound."""
    out = cnnlab("bench", "--repeats", "1", "--cases", "lenet99", "--device", "cpu", "--data-dir", tiny_data, "--runs-dir", tmp_path, "--markdown")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # as the console wraps it
    assert "lenet99: reference not reached, cnnlab not reached," in text and "not reached s" not in text
    assert "epochs to 99% test accuracy: reference not reached in 3, cnnlab not reached in 3" in text
    speed, machine = _markdown_tables(out.stdout)
    assert (speed[0]["reference s"], speed[0]["cnnlab s"], speed[0]["speed-up (min-max)"]) == ("not reached", "not reached", "-")
    assert (machine[0]["cnnlab GFLOP/s"], machine[0]["% of peak"], machine[0]["bound"]) == ("-", "-", "-")
    row = pd.read_csv(tmp_path / "bench" / "results.csv").iloc[0]
    assert pd.isna(row["cnnlab_seconds"]) and pd.isna(row["gflops"]) and pd.isna(row["bound"])


@contextlib.contextmanager
def _unwritable(path: Path):
    """path made unwritable: read-only, and immutable (chattr +i) where we are root, whom a mode does not stop."""
    path.chmod(0o444)
    immutable = os.access(path, os.W_OK) and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    try:
        if os.access(path, os.W_OK):
            pytest.skip("cannot make a file unwritable here")
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o644)


@pytest.mark.parametrize("text, spoil, says", [
    ("a,b\n1,2\n3,4,5\n", contextlib.nullcontext, "move it aside"),  # a hand-edited file pandas cannot parse
    ("case,speedup\nfc,16.0\n", _unwritable, "results.csv is not writable"),
    ("time,case\n2026-11-01,fc,a note\n", contextlib.nullcontext, "line 2 has 3 cells, the header 2"),  # pandas took time for an index: lost
    ("time,case,note,note\n2026-11-01,fc,a,b\n", contextlib.nullcontext, "the column 'note' twice"),  # pandas renamed one note.1
    # a quote left open: the rest of the file read as one cell, rewritten so for good
    ("case,x\n\"fc,1\ncnn,2\nlenet,3\n", contextlib.nullcontext, "(unexpected end of data); move it aside"),
])
def test_an_unreadable_or_unwritable_results_file_is_refused_before_measuring_and_never_loses_rows(tmp_path, text, spoil, says):
    from cnnlab.commands.bench import append_results

    results = tmp_path / "bench" / "results.csv"
    results.parent.mkdir()
    results.write_text(text)
    with spoil(results):
        out = cnnlab("bench", "--quick", "--cases", "fc", "--runs-dir", tmp_path, "--data-dir", tmp_path / "no-data")
        assert out.returncode == 1 and says in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "fc:" not in out.stdout  # nothing was measured
        # so only by the time the rows are written: they go to a file beside it
        written = append_results(results, [{"time": "2026-11-26T03:00:00+00:00", "case": "cnn"}])
    assert written != results and pd.read_csv(written)["case"].tolist() == ["cnn"]
    assert results.read_text() == text


def test_threads_beyond_the_cores_are_warned_of():
    """--threads 999 on 2 cores ran without a word; its speed-up (0.62x) measured the threads waiting."""
    from cnnlab.commands.bench import threads_warning

    assert threads_warning(999, 2).startswith("warning: --threads 999 is more than this machine's 2 cores")
    assert threads_warning(2, 2) is None and threads_warning(None, 2) is None and threads_warning(4, None) is None


def test_a_results_file_rewritten_keeps_its_mode(tmp_path):
    """The atomic rewrite made every file 0644: a results.csv made read-only (as root writes anyway)
    or group-writable for a team lost that."""
    from cnnlab.runs import atomic_write

    for mode in (0o444, 0o664, 0o600):
        path = tmp_path / f"r{mode:o}.csv"
        path.write_text("a\n")
        path.chmod(mode)
        atomic_write(path, "a\n1\n")
        assert path.stat().st_mode & 0o777 == mode and path.read_text() == "a\n1\n"
    atomic_write(tmp_path / "new.csv", "a\n")
    assert (tmp_path / "new.csv").stat().st_mode & 0o777 == 0o644  # a new file: readable by all, as before


def test_a_results_csv_that_is_a_directory_is_refused_before_measuring(tmp_path):
    """A directory cannot be replaced by the rewrite: the bench measured every case, then put its rows
    in results-<time>.csv beside it."""
    from cnnlab.commands.bench import append_results

    results = tmp_path / "bench" / "results.csv"
    results.mkdir(parents=True)
    out = cnnlab("bench", "--quick", "--cases", "fc", "--runs-dir", tmp_path, "--data-dir", tmp_path / "no-data")
    assert out.returncode == 1 and out.stderr.strip() == f"error: cannot read {results} (not a file); move it aside and run cnnlab bench again"
    assert "fc:" not in out.stdout
    written = append_results(results, [{"time": "2026-11-26T03:00:00+00:00", "case": "cnn"}])
    assert written != results and pd.read_csv(written)["case"].tolist() == ["cnn"] and results.is_dir()


def test_a_case_without_its_data_stops_the_bench_before_the_first_measurement(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(Path(tiny_data) / "MNIST", data / "MNIST")  # fc's data, but no CIFAR-10 for trashnet
    out = cnnlab("bench", "--quick", "--cases", "fc,trashnet", "--device", "cpu", "--data-dir", data, "--runs-dir", tmp_path / "runs")
    assert out.returncode == 1 and "CIFAR-10 not found" in out.stderr and "Traceback" not in out.stderr
    assert "fc:" not in out.stdout  # measuring fc first would have been minutes lost
    assert not (tmp_path / "runs").exists()  # a refused bench leaves no empty runs/bench behind


def test_a_damaged_mnist_file_is_one_line_for_the_reference_too(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(Path(tiny_data) / "MNIST", data / "MNIST")
    labels = data / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:50])
    out = cnnlab("bench", "--quick", "--cases", "fc", "--device", "cpu", "--data-dir", data, "--runs-dir", tmp_path / "runs")
    assert out.returncode == 1 and "truncated" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_before_looking_for_data(tmp_path):
    out = cnnlab("bench", "--quick", "--cases", "fc", "--device", "cuda", "--data-dir", tmp_path / "empty", "--runs-dir", tmp_path / "runs")
    assert out.returncode == 2 and "no CUDA device" in out.stderr and "not found" not in out.stderr
    assert "use --device cpu or --device auto" in out.stderr and "in the config" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_cuda_without_cuda_names_benchs_device_option_not_a_configs_device(monkeypatch, tiny_data):
    """bench ignores its cases' configs' device: 'device: cpu in the config' would send the user
    editing a file that changes nothing."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"no CUDA device; use --device cpu or --device auto$"):
        run_bench(["fc"], device="cuda", data_dir=tiny_data)


def test_quick_refuses_a_time_to_accuracy_case_before_measuring(tiny_data, tmp_path):
    """--quick caps lenet99 at 100 steps an epoch: on real MNIST 96.7% after its 3 epochs, never 99%."""
    out = cnnlab("bench", "--quick", "--cases", "fc,lenet99", "--device", "cpu", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    assert out.returncode == 2 and "--quick trains lenet99 100 steps an epoch, which never reach its 99% target" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr and "fc:" not in out.stdout
    assert not (tmp_path / "bench").exists()


def test_bench_rejects_an_unknown_case(tmp_path):
    out = cnnlab("bench", "--cases", "fc,resnet50", "--runs-dir", tmp_path)
    assert out.returncode == 2 and "unknown bench case" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "bench").exists()


@pytest.mark.parametrize("option, value", [("--amp", "fp16"), ("--device", "gpu")])
def test_a_bad_device_or_amp_names_the_option_not_a_case_config(tmp_path, option, value):
    out = cnnlab("bench", "--cases", "fc", option, value, "--runs-dir", tmp_path)
    assert out.returncode == 2 and out.stderr.startswith(f"error: unknown {option} {value!r}; valid: ")
    assert ".yaml" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_device_auto_on_a_gpu_gets_cudas_bf16_default(monkeypatch):
    from cnnlab.bench.suite import CASES, case_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = case_config(CASES["fc"], "auto")
    assert cfg.device == "cuda" and cfg.train.amp == "bf16"  # as --device cuda, which --help promises
    assert cfg.train.cuda_graphs and not case_config(CASES["fc"], "auto", cuda_graphs=False).train.cuda_graphs


def test_help_lists_every_device_bench_takes():
    out = subprocess.run([sys.executable, "-m", "cnnlab", "bench", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "COLUMNS": "200"})  # wide enough that the help is not wrapped
    assert out.returncode == 0 and "auto | cpu | cuda | cuda:N" in out.stdout


@pytest.mark.slow
def test_bench_quick_on_real_mnist_agrees(tmp_path):
    data = real_data("MNIST", "raw")
    out = cnnlab("bench", "--quick", "--cases", "fc,cnn", "--data-dir", data, "--runs-dir", tmp_path)
    assert out.returncode == 0, out.stderr
    results = pd.read_csv(tmp_path / "bench" / "results.csv")
    assert results["agree"].all(), results[["case", "ref_acc", "cnnlab_acc", "acc_tolerance"]]
    assert ((results["ref_acc"] - results["cnnlab_acc"]).abs() <= results["acc_tolerance"]).all()  # the flag's own claim
    assert (results["acc_tolerance"] == 0.15).all()  # --quick: a fraction of an epoch, the noisy part of the curve
    assert (results[["ref_acc", "cnnlab_acc"]] > 0.3).all().all()  # well above chance after 100 steps
    assert (results["speedup"] > 0).all()  # measured (no timing threshold: the machine may be busy)


# ---------------------------------------------------------------------------- a light CLI
_PROBE = """
import sys
sys.argv = ["cnnlab", *sys.argv[1:]]
from cnnlab.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
print("dynamo imported:", "torch._dynamo" in sys.modules)
print("torch imported:", "torch" in sys.modules, "exit:", code)
"""


@pytest.mark.parametrize("args, code", [(["--help"], 0), (["bench", "--help"], 0), (["train", "missing.yaml"], 2), (["train", "configs/mnist_cnn.yaml", "train.epochs=0"], 2),
                                        (["runs", "--dataset", "mnist", "--model", "fc", "--runs-dir", "{empty}"], 0),
                                        (["runs", "--runs-dir", "no-runs-here"], 1),
                                        (["configs"], 0), (["train", "mnist_cnnn"], 2), (["compare", "fc-vs-cnnn"], 2),
                                        # a command's missing argument is told before its work needs torch
                                        (["summary"], 2), (["samples"], 2), (["summary", "configs/mnist_cnn.yaml", "model.n_feature=0"], 2),
                                        (["shift-sweep", "--axis", "z", "--runs-dir", "{empty}"], 2),
                                        (["shift-sweep", "configs/mnist_cnn.yaml", "train.epoch=3", "--runs-dir", "{empty}"], 2),
                                        (["forward-check", "configs/mnist_cnn.yaml", "train.epoch=3"], 2),
                                        (["bench", "--cases", "nope", "--runs-dir", "{empty}"], 2),
                                        (["bench", "--amp", "fp16", "--runs-dir", "{empty}"], 2),
                                        (["samples", "mnist", "--runs-dir", "{empty}/a_file/runs"], 1),
                                        (["compare", "configs/mnist_fc.yaml", "--seeds", "99999999999", "--runs-dir", "{empty}"], 2),
                                        (["compare", "configs/mnist_fc.yaml", "configs/fashion_fc.yaml", "--runs-dir", "{empty}"], 2),
                                        # a resume's refused override; a --from-run that is no run (torch took 1.4 s, 2.6 s)
                                        (["train", "--resume", "{empty}/run", "optimizer.lr=0.5"], 1),
                                        (["shift-sweep", "--from-run", "{empty}/a_file", "--runs-dir", "{empty}"], 1),
                                        (["shift-sweep", "--from-run", "{empty}/run", "--runs-dir", "{empty}"], 1)])
def test_help_and_config_errors_do_not_import_torch(args, code, tmp_path):
    (tmp_path / "a_file").write_text("")  # a runs directory under a file is refused
    (tmp_path / "run").mkdir()  # a run stopped in its first epoch
    (tmp_path / "run" / "config.yaml").write_text((ROOT / "configs" / "mnist_fc.yaml").read_text())
    (tmp_path / "run" / "summary.json").write_text('{"status": "interrupted"}')
    out = probe([a.replace("{empty}", str(tmp_path)) for a in args])  # an empty runs directory: "no runs ..."
    assert out.splitlines()[-1] == f"torch imported: False exit: {code}", out


def test_a_run_without_its_data_is_told_without_loading_the_compiler(tmp_path):
    """torch._dynamo, which only train.compile needs, took a second to import before a run even
    looked for its data."""
    out = probe(["train", "configs/mnist_cnn.yaml", "--data-dir", str(tmp_path), "dataset.download=false"])
    assert out.splitlines()[-2:] == ["dynamo imported: False", "torch imported: True exit: 1"], out


def probe(args: list[str]) -> str:
    """_PROBE's output (and stderr) for the cnnlab command line args."""
    out = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "COLUMNS": "120"})
    return out.stderr + out.stdout.strip()


# ---------------------------------------------------------------------------- threads
def test_small_steps_train_on_one_thread_unless_told():
    from cnnlab.experiment import DEFAULT_THREADS, cpu_threads

    def threads(config, *overrides, share=None):
        cfg = load_config(ROOT / "configs" / f"{config}.yaml", list(overrides))
        shape = (3, 32, 32) if cfg.dataset.name == "cifar10" else (1, 28, 28)
        return cpu_threads(cfg, build_model(cfg.model, shape, 10), shape, share)

    assert threads("mnist_fc") == 1  # 64 x 0.03 MFLOP per step
    assert threads("mnist_cnn") == DEFAULT_THREADS  # 64 x 0.7 MFLOP per step
    assert threads("cifar10_trashnet") == DEFAULT_THREADS  # 100 x 0.2 GFLOP per step
    assert threads("mnist_cnn", "train.threads=3") == 3
    # a Ray trial's CPU share caps the threads of a large step; the config's own setting still wins
    assert threads("cifar10_trashnet", share=1) == 1 and threads("mnist_fc", share=4) == 1
    assert threads("mnist_cnn", "train.threads=3", share=1) == 3


def test_the_reference_loads_no_batch_past_its_step_budget():
    fetched = []

    def loader():  # a DataLoader's iteration: each batch is loaded and transformed when asked for
        for i in range(10):
            fetched.append(i)
            yield torch.randn(4, 3), torch.randint(0, 2, (4,))

    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reference.train_epoch(model, optimizer, None, loader(), nn.functional.cross_entropy, torch.device("cpu"), max_steps=5)
    assert fetched == [0, 1, 2, 3, 4]
    fetched.clear()
    reference.train_epoch(model, optimizer, None, loader(), nn.functional.cross_entropy, torch.device("cpu"))
    assert len(fetched) == 10


def test_the_reference_runs_study_a_cnn_as_written_with_cnnlabs_weights():
    opts = load_config(ROOT / "configs" / "mnist_cnn.yaml").model
    torch.manual_seed(0)
    ours = build_model(opts, (1, 28, 28), 10)
    torch.manual_seed(0)
    theirs = build_model(reference.as_written(opts), (1, 28, 28), 10)
    assert [type(m).__name__ for m in theirs.features] == ["Conv2d", "ReLU", "MaxPool2d"] * 2
    assert [type(m).__name__ for m in ours.features] == ["Conv2d", "MaxPool2d", "ReLU"] * 2
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    lenet = load_config(ROOT / "configs" / "lenet.yaml").model
    assert reference.as_written(lenet) == lenet  # the other models are already as written


def test_the_reference_ends_study_a_models_in_log_softmax_and_nll_as_written():
    """STUDIES.md writes study A's FC2Layer and CNN ending in LogSoftmax, trained with the NLL loss;
    the reference gave cross-entropy on logits (the same numbers, another program than written)."""
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for name in ("mnist_fc.yaml", "mnist_cnn.yaml"):
        cfg = load_config(ROOT / "configs" / name)
        bare = build_model(cfg.model, (1, 28, 28), 10)
        model, loss_fn = reference.with_written_loss(bare, cfg, nn.functional.cross_entropy)
        assert type(model[-1]).__name__ == "LogSoftmax" and model[0] is bare and loss_fn is nn.functional.nll_loss
        torch.testing.assert_close(loss_fn(model(x), y), nn.functional.cross_entropy(bare(x), y))
    for name in ("lenet.yaml", "cifar10_trashnet.yaml"):  # studies C and D write CrossEntropyLoss on logits
        cfg = load_config(ROOT / "configs" / name)
        bare = build_model(cfg.model, (3, 32, 32) if cfg.dataset.name == "cifar10" else (1, 28, 28), 10)
        assert reference.with_written_loss(bare, cfg, nn.functional.cross_entropy) == (bare, nn.functional.cross_entropy)


def test_the_process_settings_cnnlab_makes_do_not_leak_into_the_reference(tiny_data, monkeypatch):
    """setup() sets torch's thread count and, on CUDA, cuDNN's determinism for the whole process; the
    bench's next reference run must find them as they were."""
    from cnnlab.bench import suite

    real_setup = suite.setup

    def setup_as_on_cuda(cfg, device):
        torch.backends.cudnn.deterministic = True  # what setup() does on a CUDA device
        return real_setup(cfg, device)

    monkeypatch.setattr(suite, "setup", setup_as_on_cuda)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    threads = torch.get_num_threads()
    cfg = suite.case_config(suite.CASES["fc"], "cpu", quick=True, data_dir=tiny_data)  # fc: one training thread
    side = suite.Side()
    try:
        suite.run_cnnlab(suite.CASES["fc"], cfg, torch.device("cpu"), side)
        assert side.threads == 1 and side.seconds[0] > 0
        assert torch.get_num_threads() == threads and torch.backends.cudnn.deterministic is False
    finally:
        torch.set_num_threads(threads)


def test_appending_keeps_whole_numbers_whole_where_an_earlier_row_lacks_them(tmp_path):
    from cnnlab.commands.bench import append_results

    results = tmp_path / "results.csv"
    append_results(results, [{"case": "fc", "params": 6442, "threads": 1, "ref_s": 6.5}, {"case": "x", "params": None, "threads": 2, "ref_s": None}])
    append_results(results, [{"case": "cnn", "params": 6422, "threads": 2, "ref_s": 9.0}])
    rows = list(csv.DictReader(results.open()))
    assert [r["params"] for r in rows] == ["6442", "", "6422"] and [r["threads"] for r in rows] == ["1", "2", "2"]
    assert [r["ref_s"] for r in rows] == ["6.5", "", "9.0"] and [r["case"] for r in rows] == ["fc", "x", "cnn"]


def test_appending_keeps_true_and_false_as_written(tmp_path):
    """compile and cuda_graphs are bools: they stay True/False, not the 1/0 of a whole-number column."""
    from cnnlab.commands.bench import append_results

    results = tmp_path / "results.csv"
    append_results(results, [{"case": "fc", "compile": True, "cuda_graphs": False}, {"case": "x", "compile": False, "cuda_graphs": None}])
    append_results(results, [{"case": "cnn", "compile": False, "cuda_graphs": True}])
    rows = list(csv.DictReader(results.open()))
    assert [r["compile"] for r in rows] == ["True", "False", "False"] and [r["cuda_graphs"] for r in rows] == ["False", "", "True"]


def test_appending_keeps_a_hand_edited_file_as_written(tmp_path):
    """Rows are added, nothing else changes: a column cnnlab does not write keeps its cells (empty in the
    new rows), cells keep their text (no NA made empty, no 007 made 7, no 12.40 made 12.4), and a column
    of cnnlab's that the file lacks (removed by hand, or an older cnnlab's file) is added at the end,
    empty in the rows before."""
    from cnnlab.commands.bench import append_results

    results = tmp_path / "results.csv"
    results.write_text("time,case,speedup,note,box\n2026-11-01,fc,12.40,NA,007\n2026-11-02,cnn,3.0,\"idle, at night\",010\n")
    append_results(results, [{"time": "2026-11-03", "case": "lenet", "speedup": 1.8, "threads": 2, "busy": False}])
    assert results.read_text() == (
        "time,case,speedup,note,box,threads,busy\n2026-11-01,fc,12.40,NA,007,,\n2026-11-02,cnn,3.0,\"idle, at night\",010,,\n"
        "2026-11-03,lenet,1.8,,,2,False\n"
    )


def test_gflops_of_a_target_reached_in_some_repeats_counts_the_images_of_those_repeats():
    """lenet99 reached 99% after 2 epochs in one repeat and missed it in 3 in another: its GFLOP/s are
    the first repeat's images over the first repeat's time, not all repeats' images over it."""
    cfg = suite.case_config(suite.CASES["lenet99"], "cpu")
    epoch = 60000
    ours = suite.Side(seconds=[10.0, float("nan")], acc=[0.991, 0.985], epochs=[2, 3], peak_mib=[1.0, 1.0],
                      setup_seconds=[1.0, 1.0], samples=[2 * epoch, 3 * epoch], threads=1)
    ref = suite.Side(seconds=[20.0, float("nan")], acc=[0.99, 0.98], epochs=[2, 3], peak_mib=[1.0, 1.0],
                     setup_seconds=[1.0, 1.0], samples=[2 * epoch, 3 * epoch], threads=1)
    row = suite.summarize(suite.CASES["lenet99"], cfg, ref, ours, False, {1: 100.0}, flops=1000, memory_kind="test")
    assert row["cnnlab_seconds"] == 10.0
    assert row["gflops"] == pytest.approx(1000 * 2 * epoch / 10.0 / 1e9)


def test_epochs_to_a_target_reached_in_some_repeats_are_those_repeats_epochs():
    """One repeat reached 99% in 2 epochs, two missed it in 3: the seconds are the 2-epoch repeat's,
    and so are its epochs to 99% (the median over all three said 3, which no repeat reached it in)."""
    cfg = suite.case_config(suite.CASES["lenet99"], "cpu")
    nan = float("nan")

    def side(seconds, epochs):
        n = len(seconds)
        return suite.Side(seconds=seconds, acc=[0.99] * n, epochs=epochs, peak_mib=[1.0] * n, setup_seconds=[1.0] * n,
                          samples=[e * 60000 for e in epochs], threads=1)

    row = suite.summarize(suite.CASES["lenet99"], cfg, side([nan, nan], [3, 3]), side([10.0, nan, nan], [2, 3, 3]),
                          False, {1: 100.0}, flops=1000, memory_kind="test")
    assert (row["cnnlab_seconds"], row["cnnlab_epochs"]) == (10.0, 2)
    assert row["ref_epochs"] == 3  # none reached it: "not reached in 3"


def bench_here(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`cnnlab bench --device cpu ARGS` through the CLI's main() in this process, where suite can be
    patched, with a made-up compute peak (seconds saved): (exit code, stdout, stderr)."""
    from cnnlab.cli import main

    monkeypatch.setattr(suite, "compute_peaks", lambda *a, **k: {t: {"matrix product": 1.0} for t in {1, torch.get_num_threads()}})
    monkeypatch.setattr(sys, "argv", ["cnnlab", "bench", "--device", "cpu", *map(str, args)])
    with pytest.raises(SystemExit) as end:
        main()
    out = capsys.readouterr()
    return end.value.code, out.out, out.err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_bench_keeps_the_cases_it_finished(tiny_data, tmp_path, monkeypatch, capsys, signum):
    """Ctrl-C (or a scheduler's SIGTERM) during the second case: the first case's row is in the CSV
    already, and the bench ends in one line saying so, with 128 + the signal's number."""
    real, measured = suite.measure_case, []

    def measure_case(*args):
        if measured:  # the second case: the signal arrives while it is measured
            os.kill(os.getpid(), signum)
        measured.append(real(*args))
        return measured[-1]

    def unhandled(signum, frame):  # rather than SIGTERM's default, ending pytest, should bench not handle it
        raise KeyboardInterrupt

    monkeypatch.setattr(suite, "measure_case", measure_case)
    before = signal.signal(signum, unhandled)
    try:
        code, _, err = bench_here(monkeypatch, capsys, "--quick", "--cases", "fc,cnn", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    finally:
        signal.signal(signum, before)
    results = tmp_path / "bench" / "results.csv"
    assert code == 128 + signum and err.splitlines() == [
        f"interrupted: bench stopped by {signal.Signals(signum).name}; 1 finished case(s) kept in {results}"]
    assert pd.read_csv(results)["case"].tolist() == ["fc"] and len(measured) == 1
    assert not list(results.parent.glob(".*.tmp"))


def test_the_machine_line_is_one_line_in_a_pipe(tiny_data, tmp_path, monkeypatch, capsys):
    """Off a terminal the console is 120 columns wide: the 'machine: ...' line was broken in two (and,
    narrower, each case's line)."""
    from cnnlab import report

    monkeypatch.setattr(report.console, "width", 60)
    code, out, err = bench_here(monkeypatch, capsys, "--quick", "--cases", "fc", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    (line,) = [line for line in out.splitlines() if line.startswith("machine: ")]
    assert code == 0 and line.endswith("else per-step overhead"), out
    assert re.fullmatch(r"fc: reference .* s, cnnlab .* s, accuracy .*% vs .*%", out.splitlines()[0]), out


def test_a_machine_is_busy_when_other_work_took_more_than_one_core():
    from cnnlab.bench.machine import was_busy

    assert not was_busy(2, 0.7, 0.1)  # the README's idle 2-core machine
    assert was_busy(2, 0.7, 1.5) and was_busy(2, 1.5, None)  # others beside it, or before it where those are unknown
    assert not was_busy(16, 1.2, 0.1)  # a load average left by work that just ended (H200, a bench after another)
    assert was_busy(16, 14.0, None) and was_busy(16, 0.5, 2.0)  # 14 and 2 cores' worth of other jobs
    assert not was_busy(16, 1.0, 0.9)  # up to one core's worth: idle, on any machine
    assert was_busy(1, 0.5, None) and not was_busy(1, 0.0, 0.0)  # one core: any other work
    assert not was_busy(2, None, None)  # nothing known: no verdict


def test_other_work_is_the_machines_cpu_time_less_the_benchs_own_over_the_same_seconds():
    """Not the 1-minute load average less the bench's mean share: those cover different stretches,
    and a bench whose last minute was busier than its mean read as other work on many cores."""
    from cnnlab.bench.machine import cpu_seconds_used, others_share

    assert others_share(30.0, own=20.0, seconds=10.0) == 1.0
    assert others_share(19.0, own=20.0, seconds=10.0) == 0.0  # clock ticks against process time: never below 0
    assert others_share(None, own=20.0, seconds=10.0) is None
    if Path("/proc/stat").is_file():
        before = cpu_seconds_used()
        cpu = time.process_time()
        while time.process_time() - cpu < 0.3:  # this process working: the machine's count grows as much
            pass
        assert cpu_seconds_used() - before >= 0.25



def test_the_machines_cpu_seconds_are_its_working_fields_of_proc_stat(tmp_path, monkeypatch):
    """user, nice, system, irq, softirq and steal; not idle or I/O wait (an idle machine would read as
    all cores busy), nor guest time, which user already holds."""

    stat = tmp_path / "stat"
    monkeypatch.setattr(machine, "Path", lambda path: stat if path == "/proc/stat" else Path(path))
    stat.write_text("cpu  1 2 3 4000 5000 6 7 8 900 1000\ncpu0 1 2 3 4000 5000 6 7 8 900 1000\n")
    assert machine.cpu_seconds_used() == pytest.approx(27 / os.sysconf("SC_CLK_TCK"))
    stat.write_text("cpu  1 2\n")  # not the kernel's layout: no verdict
    assert machine.cpu_seconds_used() is None

def test_a_bench_busier_at_its_end_than_on_average_is_not_busy(tiny_data, tmp_path, monkeypatch, capsys):
    """16 cores: a load of 12 after a bench whose mean share was 9 is the bench's own last minute."""
    machine_info = suite.machine_info
    monkeypatch.setattr(suite, "machine_info", lambda dev: {**machine_info(dev), "cores": 16})
    loads = []
    monkeypatch.setattr(suite, "load_average", lambda: 12.0 if loads.append(1) or len(loads) > 1 else 0.2)  # 0.2 before it, 12 after
    monkeypatch.setattr(machine, "cpu_seconds_used", lambda: 1000.0 + time.process_time())  # no other work
    code, out, err = bench_here(monkeypatch, capsys, "--quick", "--cases", "fc", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    assert code == 0 and err == ""
    assert pd.read_csv(tmp_path / "bench" / "results.csv")["busy"].tolist() == [False]



def test_other_work_during_the_bench_alone_makes_it_busy(tiny_data, tmp_path, monkeypatch, capsys):
    """Jobs that start after the bench does: the load average before it is 0, but the machine's CPU
    seconds show 3 cores' worth of work beside the bench's own."""
    machine_info = suite.machine_info
    monkeypatch.setattr(suite, "machine_info", lambda dev: {**machine_info(dev), "cores": 16})
    monkeypatch.setattr(suite, "load_average", lambda: 0.0)
    monkeypatch.setattr(machine, "cpu_seconds_used", lambda: time.process_time() + 3 * time.perf_counter())
    code, out, err = bench_here(monkeypatch, capsys, "--quick", "--cases", "fc", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    assert code == 0 and len(err.splitlines()) == 1
    assert err.startswith("warning: the machine was busy: 1-minute load average before/after 0.0/0.0 on 16 cores, other work beside the bench 3.0 cores' worth")
    results = pd.read_csv(tmp_path / "bench" / "results.csv")
    assert results["busy"].tolist() == [True] and results["others_load"].item() == pytest.approx(3.0, abs=0.05)

@pytest.mark.parametrize("case", ["idle", "loaded before, /proc/stat unknown", "loaded before by work that ended"])
def test_a_busy_machine_is_one_warning_line_and_a_busy_column(tiny_data, tmp_path, monkeypatch, capsys, case):
    """The load average before the bench decides only where the other work beside it is unknown: it
    still holds work that has just ended (a bench started right after another)."""
    load = 0.0 if case == "idle" else 2.0 * os.cpu_count()
    monkeypatch.setattr(suite, "load_average", lambda: load)
    known = case != "loaded before, /proc/stat unknown"
    monkeypatch.setattr(machine, "cpu_seconds_used", lambda: time.process_time() if known else None)  # no other work beside it
    code, out, err = bench_here(monkeypatch, capsys, "--quick", "--cases", "fc", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    assert code == 0
    busy = not known
    if busy:
        assert len(err.splitlines()) == 1 and err.startswith(
            f"warning: the machine was busy: 1-minute load average before/after {load:.1f}/{load:.1f} on {os.cpu_count()} cores, "
            "other work beside the bench unknown; ")
        assert "unreliable" in err
    else:
        assert err == ""  # nothing extra
    assert pd.read_csv(tmp_path / "bench" / "results.csv")["busy"].tolist() == [busy]


def test_the_memory_column_says_how_the_runs_were_measured(monkeypatch):
    """It named a PeakMemory never entered, so never the fallback (ru_maxrss since the start, where
    /proc/self/clear_refs cannot be written), whose figure includes the other side's peak."""
    from types import SimpleNamespace

    from cnnlab.bench import suite
    from cnnlab.bench.suite import CASES, case_config

    cfg = case_config(CASES["fc"], "cpu", quick=True)

    def fake_run(case, cfg, device, side):
        mem = SimpleNamespace(mib=100.0, kind="process peak RSS (ru_maxrss, since start)")
        suite._record(side, case, cfg, 60000, 1.0, 0.9, 1, mem, 0.1)

    seen = []
    monkeypatch.setattr(suite, "run_reference", fake_run)
    monkeypatch.setattr(suite, "run_cnnlab", fake_run)
    monkeypatch.setattr(suite, "summarize", lambda *args: seen.append(args[-1]))
    suite.measure_case(CASES["fc"], cfg, torch.device("cpu"), 1, True, {})
    assert seen == ["process peak RSS (ru_maxrss, since start)"]


def test_gelu_is_counted():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.GELU())
    rows = {r.kind: r for r in count_layers(model, (1, 2, 2))}
    assert (rows["GELU"].forward, rows["GELU"].backward) == (8 * 3, 8 * 3)
