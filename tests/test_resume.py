"""Nothing written is lost, and a resumed run is the run that was never stopped.

A real `cnnlab train` subprocess is interrupted with SIGINT, SIGTERM or SIGHUP after its first complete
epoch, checked file by file, resumed with `cnnlab train --resume`, and its final metrics compared
for exact equality with an uninterrupted run of the same config and seed. The config uses random
flips and translations, momentum and a learning-rate schedule, so the data-order and augmentation
generators, the optimizer state and the schedule must all come back exactly.
"""

import errno
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
import torch

from cnnlab import engine, runs
from cnnlab.cli import main
from cnnlab.config import load_config
from cnnlab.errors import RunError
from cnnlab.experiment import run
from cnnlab.models import build_model
from cnnlab.resume import check_epochs
from conftest import ROOT, needs_cuda
from fakedata import make_idx_dataset
from test_errors import cli, error_line, start

CONFIG = """name: resume
seed: 3
device: cpu
dataset: {name: mnist, download: false}
transform: {augment: {hflip: true, translate: 2}}
model: {name: fc, hidden: [32]}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
schedule: {name: step, step_size: 1, gamma: 0.8}
train: {epochs: 20, batch_size: 32, threads: 1}
"""
TIMINGS = {"epoch_seconds", "eval_seconds", "samples_per_sec"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The data, the config file, and the metrics of the uninterrupted 20-epoch run."""
    root = tmp_path_factory.mktemp("resume")
    make_idx_dataset(root / "data", n_train=1500, n_test=100)
    (root / "resume.yaml").write_text(CONFIG)
    reference = run(load_config(root / "resume.yaml"), runs_dir=root / "reference", data_dir=root / "data")
    return root, metrics(reference.path)


def cnnlab_here(capsys, *args) -> subprocess.CompletedProcess:
    """The CLI's main() in this process: the code `cnnlab` runs, without starting (and importing
    torch in) another process."""
    with mock.patch.object(sys, "argv", ["cnnlab", *map(str, args)]), pytest.raises(SystemExit) as end:
        main()
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, end.value.code, out.out, out.err)


def metrics(run_dir: Path) -> pd.DataFrame:
    """metrics.csv without the timing columns, which no two runs share."""
    table = pd.read_csv(run_dir / "metrics.csv")
    return table[[c for c in table.columns if c not in TIMINGS]]


def temp_files(run_dir: Path) -> list[str]:
    return [name for name in os.listdir(run_dir) if name.endswith(".tmp")]


def check_files(run_dir: Path) -> dict:
    """Every file of the run parses; returns summary.json."""
    cfg = load_config(run_dir / "config.yaml")
    summary = json.loads((run_dir / "summary.json").read_text())
    model = build_model(cfg.model, (1, 28, 28), 10)
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == summary["epochs"] == len(pd.read_csv(run_dir / "metrics.csv"))
    assert not temp_files(run_dir)
    return summary


def wait_for_epochs(proc, run_root: Path, n: int, timeout: float = 120) -> Path:
    """The run directory, once its metrics.csv holds n complete epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended early ({proc.returncode}): {proc.stderr.read()}"
        for path in run_root.glob("*/metrics.csv"):
            if len(pd.read_csv(path)) >= n:  # always a whole file: it is replaced, never appended
                return path.parent
        time.sleep(0.02)
    raise AssertionError(f"no {n} complete epoch(s) within {timeout} s")


# the second case resumes through main() in this process, to spare a second torch start-up
@pytest.mark.parametrize("signum,here", [(signal.SIGINT, False), (signal.SIGTERM, True)], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_keeps_its_epochs_and_resumes_exactly(setup, tmp_path, capsys, signum, here):
    root, reference = setup
    proc = start("train", root / "resume.yaml", "--data-dir", root / "data", "--runs-dir", tmp_path)
    run_dir = wait_for_epochs(proc, tmp_path, 1)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    line = error_line(err)
    assert line.startswith(f"interrupted: stopped by {signum.name} during epoch") and f"--resume {run_dir}" in line
    assert out.splitlines()[-1] == str(run_dir)  # the last line, as for a run that finished: `| tail -1` finds it
    summary = check_files(run_dir)
    done = summary["epochs"]
    assert summary["status"] == "interrupted" and 1 <= done < 20
    assert f"during epoch {done + 1}" in summary["error"]
    pd.testing.assert_frame_equal(metrics(run_dir), reference.iloc[:done])

    # the run remembers its data directory: --resume needs nothing else
    out = cnnlab_here(capsys, "train", "--resume", run_dir) if here else cli("train", "--resume", run_dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(run_dir)
    summary = check_files(run_dir)
    assert summary["status"] == "completed" and summary["epochs"] == 20 and summary["error"] is None
    pd.testing.assert_frame_equal(metrics(run_dir), reference, check_exact=True)


def test_an_interrupted_run_without_checkpoints_does_not_offer_a_resume(setup, tmp_path):
    root, _ = setup
    proc = start("train", root / "resume.yaml", "train.checkpoint=false", "--data-dir", root / "data", "--runs-dir", tmp_path)
    run_dir = wait_for_epochs(proc, tmp_path, 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    line = error_line(err)
    assert proc.returncode == 128 + signal.SIGINT and "no checkpoint to continue from (train.checkpoint=false)" in line
    assert "--resume" not in line and not (run_dir / "checkpoint.pt").exists()


@pytest.mark.parametrize("nohup", [False, True], ids=["terminal", "nohup"])
def test_a_closed_terminal_stops_the_run_as_an_interruption_unless_under_nohup(setup, tmp_path, nohup):
    """Closing the terminal a run was started in (or losing its SSH session) sends it SIGHUP, which
    ended the process on the spot and left the run 'running' for good. Now it stops as at Ctrl-C:
    epochs and checkpoint kept, resumable, exit code 128 + SIGHUP, and no traceback or other exit
    code from writing to the terminal that is gone. Started under nohup (SIGHUP ignored, output to a
    file), the run goes on to its end, as nohup promises."""
    root, reference = setup
    args = ["train", root / "resume.yaml", "--data-dir", root / "data", "--runs-dir", tmp_path / "runs"]
    pid, terminal = pty.fork()  # the child in a session of its own, the pty its controlling terminal
    if pid == 0:
        try:
            os.chdir(ROOT)
            # as a shell starts a command, whatever this test runner was started with (nohup pytest)
            signal.signal(signal.SIGHUP, signal.SIG_IGN if nohup else signal.SIG_DFL)
            if nohup:  # what nohup does too before it runs the command
                out = os.open(tmp_path / "nohup.out", os.O_WRONLY | os.O_CREAT)
                os.dup2(out, 1)
                os.dup2(out, 2)
            os.execv(sys.executable, [sys.executable, "-m", "cnnlab", *map(str, args)])
        finally:
            os._exit(127)
    try:
        deadline = time.monotonic() + 120
        while not any(len(pd.read_csv(p)) >= 1 for p in tmp_path.glob("runs/*/metrics.csv")):
            assert time.monotonic() < deadline, "no complete epoch within 120 s"
            if select.select([terminal], [], [], 0.05)[0]:
                os.read(terminal, 65536)  # what it prints, read so that it never waits for the terminal
    finally:
        os.close(terminal)  # the terminal closes: the kernel sends SIGHUP
        status = wait_or_kill(pid, 120)
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = check_files(run_dir)
    if nohup:
        assert os.waitstatus_to_exitcode(status) == 0, (tmp_path / "nohup.out").read_text()
        assert summary["status"] == "completed" and summary["epochs"] == 20
    else:
        assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGHUP
        assert summary["status"] == "interrupted" and summary["error"].startswith("stopped by SIGHUP during epoch")
    pd.testing.assert_frame_equal(metrics(run_dir), reference.iloc[: summary["epochs"]])


def wait_or_kill(pid: int, timeout: float) -> int:
    """The child's wait status, once it ends; killed (and the test failed) if it outlives timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the run did not end within {timeout} s")


def test_extending_a_finished_run_equals_training_longer_from_the_start(setup, tmp_path, capsys):
    root, _ = setup
    short = run(load_config(root / "resume.yaml", ["train.epochs=2"]), runs_dir=tmp_path / "short", data_dir=root / "data")
    longer = run(load_config(root / "resume.yaml", ["train.epochs=4"]), runs_dir=tmp_path / "long", data_dir=root / "data")

    out = cnnlab_here(capsys, "train", "--resume", short.path, "train.epochs=4")
    assert out.returncode == 0, out.stderr
    summary = check_files(short.path)
    assert summary["status"] == "completed" and summary["epochs"] == summary["epochs_planned"] == 4
    assert load_config(short.path / "config.yaml").train.epochs == 4
    pd.testing.assert_frame_equal(metrics(short.path), metrics(longer.path), check_exact=True)


@pytest.mark.parametrize("schedule", ["{name: cosine}", "{name: onecycle, pct_start: 0.25}"])
def test_an_extended_run_goes_on_at_the_stretched_schedules_rate(setup, tmp_path, capsys, schedule):
    """Under a schedule that depends on the run's length, the first step after an extension took the
    old schedule's last rate (cosine's 0 at epoch 2 of 2) before the stretched schedule took over:
    the lr column read 0.01, 0.005, 0.0, 0.00146 for cosine extended from 2 epochs to 4."""
    from cnnlab.experiment import build_scheduler

    root, _ = setup
    short = run(load_config(root / "resume.yaml", ["train.epochs=2", f"schedule={schedule}"]), runs_dir=tmp_path, data_dir=root / "data")
    out = cnnlab_here(capsys, "train", "--resume", short.path, "train.epochs=4")
    assert out.returncode == 0, out.stderr

    cfg = load_config(short.path / "config.yaml", stored=True)
    steps = engine.steps_per_epoch(1500, cfg.train.batch_size, cfg.train.max_steps)  # the 1,500 training images of setup
    sched = build_scheduler(cfg, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.optimizer.lr), steps)
    expected = []
    for epoch in range(4):  # the rate each epoch starts at, under the 4-epoch schedule
        expected.append(sched.get_last_lr()[0])
        for _ in range(steps):
            sched.optimizer.step()
            sched.step()
    lrs = pd.read_csv(short.path / "metrics.csv")["lr"].tolist()
    assert lrs[2:] == pytest.approx(expected[2:], rel=1e-9, abs=1e-12) and lrs[2] > 0, (lrs, expected)


def test_a_signal_that_library_code_swallowed_still_stops_the_run_at_the_epochs_end(setup, tmp_path):
    """A SIGTERM whose Interrupted some library code caught (seen once, in about 25 runs) was lost:
    the run trained on to its end and completed, exit 0, and a scheduler's SIGKILL would follow."""
    from cnnlab.interrupts import Interrupted

    root, _ = setup

    class Swallowing:  # the progress callbacks, one of which catches what the handler raises
        def epoch_start(self, epoch, steps):
            pass

        def step(self, step, steps, loss):
            if step == 2 and not hasattr(self, "sent"):
                self.sent = True
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(1)
                except KeyboardInterrupt:
                    pass  # swallowed

        def epoch_end(self, row):
            pass

    with pytest.raises(Interrupted) as stopped:
        run(load_config(root / "resume.yaml", ["train.epochs=3"]), runs_dir=tmp_path, data_dir=root / "data", progress=Swallowing())
    assert stopped.value.signum == signal.SIGTERM
    (path,) = tmp_path.iterdir()
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs"] == 1  # stopped after the epoch it came in


def test_a_run_interrupted_before_its_first_epoch_resumes_from_the_start(setup, tmp_path):
    root, reference = setup
    cfg = load_config(root / "resume.yaml", ["train.epochs=2"])
    interrupted = run(cfg, runs_dir=tmp_path, data_dir=root / "data")
    for name in ("checkpoint.pt", "metrics.csv", "model.pt"):  # as if stopped during epoch 1
        (interrupted.path / name).unlink()
    resumed = run(cfg, resume=interrupted.path)
    assert resumed.path == interrupted.path and check_files(resumed.path)["status"] == "completed"
    pd.testing.assert_frame_equal(metrics(resumed.path), reference.iloc[:2])


def test_a_resume_trains_only_the_missing_epochs_and_keeps_the_rows_it_had(setup, tmp_path, monkeypatch):
    root, reference = setup
    short = run(load_config(root / "resume.yaml", ["train.epochs=2"]), runs_dir=tmp_path, data_dir=root / "data")
    before = pd.read_csv(short.path / "metrics.csv")  # with the timings, which a retrained epoch would not repeat
    trained, real = [], engine.train_epoch
    monkeypatch.setattr(engine, "train_epoch", lambda state, *args, **kw: trained.append(state.epoch + 1) or real(state, *args, **kw))

    resumed = run(load_config(root / "resume.yaml", ["train.epochs=4"]), resume=short.path)
    assert trained == [3, 4]
    after = pd.read_csv(short.path / "metrics.csv")
    pd.testing.assert_frame_equal(after.iloc[:2], before, check_exact=True)
    assert resumed.summary["train_seconds"] == pytest.approx(after["epoch_seconds"].sum())
    pd.testing.assert_frame_equal(metrics(short.path), reference.iloc[:4])


def test_a_run_resumed_on_another_kind_of_device_goes_on_with_a_stream_seeded_from_its_checkpoint(setup, tmp_path):
    """A CUDA generator's state (16 bytes) does not fit a CPU one (and back): a resume that moves a
    run between them reseeds the augmentation from the saved state, the same way every time."""
    root, _ = setup
    first = run(load_config(root / "resume.yaml", ["train.epochs=1"]), runs_dir=tmp_path / "a", data_dir=root / "data")
    ckpt = runs.load_tensors(first.path / "checkpoint.pt")
    assert ckpt["aug_gen"].numel() != 16
    ckpt["aug_gen"] = torch.arange(16, dtype=torch.uint8)  # as a CUDA generator would have left it
    runs.atomic_torch_save(ckpt, first.path / "checkpoint.pt")
    second = tmp_path / "b" / first.path.name
    shutil.copytree(first.path, second)
    for path in (first.path, second):
        assert run(load_config(root / "resume.yaml", ["train.epochs=2"]), resume=path).summary["status"] == "completed"
    pd.testing.assert_frame_equal(metrics(first.path), metrics(second), check_exact=True)


def test_a_saved_stream_of_another_size_seeds_a_new_one_from_its_bytes():
    """The reseeding the test above relies on: the same saved state gives the same new stream, another
    state another one, and neither is the generator's stream before the resume."""
    from cnnlab.resume import set_aug_state

    states = []
    for saved in (torch.arange(16, dtype=torch.uint8), torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)):
        gen = torch.Generator().manual_seed(3)
        set_aug_state(gen, saved)
        states.append(gen.get_state())
    assert torch.equal(states[0], states[1]) and not torch.equal(states[0], states[2])
    assert not torch.equal(states[0], torch.Generator().manual_seed(3).get_state())


@needs_cuda
def test_a_checkpoint_from_a_machine_with_more_gpus_sets_the_cuda_streams_of_the_gpus_here():
    """A checkpoint keeps one CUDA RNG state per GPU its machine had (a workstation's two, say); a
    resume where fewer are visible (a Ray trial's one) sets those it has. torch.cuda.set_rng_state_all
    stopped at the first GPU missing with an IndexError, a traceback no resume error caught."""
    from cnnlab.resume import _rng_state, _set_rng_state

    saved = _rng_state(torch.device("cuda", 0))
    torch.cuda.manual_seed_all(11)
    wanted = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
    torch.cuda.manual_seed_all(12)
    saved["cuda"] = wanted + [wanted[0]]  # one GPU more than this machine has
    _set_rng_state(saved, torch.device("cuda", 0))
    assert all(torch.equal(torch.cuda.get_rng_state(i), state) for i, state in enumerate(wanted))


def test_a_run_resumed_on_another_gpu_goes_on_with_the_stream_it_trained_with(monkeypatch):
    """Dropout draws from the training GPU's own CUDA stream. The streams were restored by index, so
    a run trained on cuda:1 and resumed on cuda:0 drew from cuda:0's, untouched since the seed, and
    its dropout masks differed from an unbroken run's. (The GPUs are stood in for: none here.)"""
    from cnnlab import resume

    streams = {0: "untouched", 1: "advanced"}  # what each GPU's stream holds after training on cuda:1
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    set_to: dict[int, str] = {}
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: set_to.__setitem__(index, state))
    saved = {**resume._rng_state(torch.device("cpu")), "cuda": [streams[0], streams[1]], "cuda_device": 1}
    resume._set_rng_state(saved, torch.device("cuda", 0))
    assert set_to == {0: "advanced", 1: "advanced"}
    resume._set_rng_state(saved, torch.device("cuda"))  # 'cuda': the current GPU, 0
    assert set_to[0] == "advanced"
    set_to.clear()
    resume._set_rng_state(saved, torch.device("cuda", 1))  # the same GPU: each stream back on its own
    assert set_to == {0: "untouched", 1: "advanced"}
    set_to.clear()
    resume._set_rng_state({**saved, "cuda_device": None}, torch.device("cuda", 0))  # trained on the CPU
    assert set_to == {0: "untouched", 1: "advanced"}
    assert resume._rng_state(torch.device("cpu"))["cuda_device"] is None


@needs_cuda
def test_a_cpu_run_on_a_gpu_machine_does_not_start_cuda(tmp_path):
    """Its checkpoint read every GPU's RNG state, which started CUDA in the run's process (GPU memory
    and start-up time for nothing, a failure where the GPUs are another job's in exclusive mode).
    A process that never started CUDA has its CUDA streams as seeded: a resume seeds them alike."""
    code = (
        "import torch\nfrom cnnlab.config import load_config\nfrom cnnlab.experiment import run\n"
        "cfg = load_config('configs/toy_4x4.yaml', ['device=cpu', 'train.epochs=1', 'train.checkpoint=true'])\n"
        f"assert (run(cfg, runs_dir={str(tmp_path)!r}).path / 'checkpoint.pt').is_file()\n"
        "print('cuda started:', torch.cuda.is_initialized())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and "cuda started: False" in done.stdout, done.stderr


DROPOUT = """name: dropout
seed: 5
device: cpu
dataset: {name: cifar10, download: false, train_subset: 64, test_subset: 40}
transform: {normalize: none}
model: {name: keras_cnn}
optimizer: {name: rmsprop, lr: 0.001}
train: {epochs: 3, batch_size: 32, threads: 1}
"""


def test_a_resumed_run_with_dropout_draws_the_masks_it_would_have_drawn(tiny_data, tmp_path):
    """Dropout takes its masks from the global RNG: the checkpoint must bring its state back."""
    (tmp_path / "dropout.yaml").write_text(DROPOUT)
    whole = run(load_config(tmp_path / "dropout.yaml"), runs_dir=tmp_path / "whole", data_dir=tiny_data)
    part = run(load_config(tmp_path / "dropout.yaml", ["train.epochs=1"]), runs_dir=tmp_path / "part", data_dir=tiny_data)
    run(load_config(tmp_path / "dropout.yaml"), resume=part.path)
    pd.testing.assert_frame_equal(metrics(part.path), metrics(whole.path), check_exact=True)

@pytest.mark.parametrize("optimizer,first,then", [("{name: sgd, lr: 0.05, momentum: 0.9}", True, False), ("{name: adam, lr: 0.003}", False, True)],
                         ids=["sgd_to_nchw", "adam_to_channels_last"])
def test_a_resume_that_changes_channels_last_goes_on_with_the_optimizer_state_it_had(tiny_data, tmp_path, optimizer, first, then):
    """The checkpoint's momentum (Adam's moments) is in the layout it was trained in; the fused
    optimizers read it in the parameter's memory order, so it must come back in the new layout
    (only the last bits of the convolutions may differ, not the momentum's meaning)."""
    overrides = ["device=cpu", "train.threads=1", f"optimizer={optimizer}", "train.batch_size=32", "train.max_steps=4", f"train.channels_last={first}"]
    paths = []
    for layout in (first, then):
        part = run(load_config(ROOT / "configs/mnist_cnn.yaml", overrides + ["train.epochs=1"]), runs_dir=tmp_path / str(layout), data_dir=tiny_data)
        run(load_config(part.path / "config.yaml", ["train.epochs=3", f"train.channels_last={layout}"]), resume=part.path)
        paths.append(part.path)
    same, changed = (torch.load(p / "model.pt", weights_only=True) for p in paths)
    for name, weight in same.items():
        torch.testing.assert_close(changed[name], weight, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------- atomic writes
@pytest.fixture
def replaces(monkeypatch):
    """Record every os.replace(src, dst); a test may set `fail` to make some of them fail."""
    calls, real = [], os.replace
    state = {"calls": calls, "fail": lambda dst: False}

    def replace(src, dst):
        calls.append((Path(src), Path(dst)))
        if state["fail"](Path(dst)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return state


def test_every_file_in_a_run_is_renamed_into_place(setup, tmp_path, replaces):
    root, _ = setup
    result = run(load_config(root / "resume.yaml", ["train.epochs=2"]), runs_dir=tmp_path, data_dir=root / "data")
    written = {dst.name for _, dst in replaces["calls"] if dst.parent == result.path}
    files = set(os.listdir(result.path)) - {runs.LOCK}  # the training lock: the trainer's pid, never data
    assert written == files >= {"config.yaml", "metrics.csv", "summary.json", "model.pt", "checkpoint.pt"}
    for src, dst in replaces["calls"]:
        assert src.parent == dst.parent and src.name.startswith(f".{dst.name}.") and src.name.endswith(".tmp")


def test_a_failed_write_keeps_the_previous_complete_file(setup, tmp_path, replaces):
    root, reference = setup
    cfg = load_config(root / "resume.yaml", ["train.epochs=3"])
    metrics_writes = []

    def second_metrics_write(dst: Path) -> bool:
        if dst.name == "metrics.csv":
            metrics_writes.append(dst)
        return len(metrics_writes) == 2 and dst.name == "metrics.csv"

    replaces["fail"] = second_metrics_write
    with pytest.raises(RunError, match="cannot write .*metrics.csv: No space left on device"):
        run(cfg, runs_dir=tmp_path, data_dir=root / "data")
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["error"]
    assert not temp_files(run_dir)
    pd.testing.assert_frame_equal(metrics(run_dir), reference.iloc[:1])  # epoch 1, whole
    # the summary says what metrics.csv holds (it said epoch 2, with epoch 2's accuracy)
    assert summary["epochs"] == 1 and summary["test_acc"] == pd.read_csv(run_dir / "metrics.csv")["test_acc"].iloc[-1]

    replaces["fail"] = lambda dst: False  # the disk has room again: the run resumes after epoch 1
    run(cfg, resume=run_dir)
    assert check_files(run_dir)["status"] == "completed"
    pd.testing.assert_frame_equal(metrics(run_dir), reference.iloc[:3])


def test_a_run_whose_directory_can_no_longer_be_written_says_what_it_kept_and_how_to_go_on(setup, tmp_path, replaces):
    """A run directory made unwritable after epoch 1 (helper h105: `chattr +i`) ended in "cannot write
    in RUN: Operation not permitted" alone: its summary could not be marked failed either, and that
    second error went out instead of the first, without the run directory that a failed run's
    output ends with, or a word on the epoch kept."""
    root, reference = setup
    cfg = load_config(root / "resume.yaml", ["train.epochs=3"])
    metrics_writes = []

    def from_the_second_metrics_write(dst: Path) -> bool:
        metrics_writes.extend([dst] if dst.name == "metrics.csv" else [])
        return len(metrics_writes) >= 2

    replaces["fail"] = from_the_second_metrics_write
    with pytest.raises(RunError) as failed:
        run(cfg, runs_dir=tmp_path, data_dir=root / "data")
    (run_dir,) = tmp_path.iterdir()
    assert str(failed.value) == (f"cannot write {run_dir / 'metrics.csv'}: No space left on device; 1 complete epoch(s) kept; "
                                 f"once fixed, continue with: cnnlab train --resume {run_dir}")
    assert failed.value.run_dir == run_dir
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"  # as it could not be rewritten

    # every epoch written, but the summary cannot say "completed"
    last_epochs = []

    def the_last_summary(dst: Path) -> bool:  # after epoch 3's own summary, the one that says "completed"
        table = dst.with_name("metrics.csv")
        last_epochs.extend([dst] if dst.name == "summary.json" and table.exists() and len(pd.read_csv(table)) == 3 else [])
        return len(last_epochs) == 2 and dst.name == "summary.json"

    replaces["fail"] = the_last_summary
    with pytest.raises(RunError) as unfinished:
        run(cfg, resume=run_dir)
    assert str(unfinished.value) == (f"cannot write {run_dir / 'summary.json'}: No space left on device; every epoch is written, but "
                                     f"summary.json cannot say it is complete: once fixed, cnnlab train --resume {run_dir} marks it so")
    assert unfinished.value.run_dir == run_dir
    replaces["fail"] = lambda dst: False
    run(cfg, resume=run_dir)
    assert check_files(run_dir)["status"] == "completed"
    pd.testing.assert_frame_equal(metrics(run_dir), reference.iloc[:3])

    # epoch 2's checkpoint not written (the largest file meets a full disk first): the resume
    # continues from epoch 1, and that is what is kept (helper h108: it said 2)
    checkpoints = []
    replaces["fail"] = lambda dst: dst.name == "checkpoint.pt" and (checkpoints.append(dst) or len(checkpoints) == 2)
    with pytest.raises(RunError, match=r"checkpoint\.pt: No space left on device; 1 complete epoch\(s\) kept; once fixed, continue with"):
        run(cfg, runs_dir=tmp_path / "second", data_dir=root / "data")
    # without checkpoints no resume can go on, nor mark a run complete: none is offered
    replaces["fail"] = lambda dst: dst.name == "metrics.csv" and len(metrics_writes.append(dst) or metrics_writes) > 3
    with pytest.raises(RunError) as no_checkpoint:
        run(load_config(root / "resume.yaml", ["train.epochs=3", "train.checkpoint=false"]), runs_dir=tmp_path / "third", data_dir=root / "data")
    assert str(no_checkpoint.value).endswith("; 1 complete epoch(s) kept; no checkpoint to continue from (train.checkpoint=false)")
    last_epochs.clear()
    replaces["fail"] = the_last_summary
    with pytest.raises(RunError) as unsaid:
        run(load_config(root / "resume.yaml", ["train.epochs=3", "train.checkpoint=false"]), runs_dir=tmp_path / "fourth", data_dir=root / "data")
    assert str(unsaid.value).endswith("; every epoch is written, but summary.json cannot say it is complete")


def test_a_resume_drops_every_trace_of_the_epochs_past_the_checkpoint(setup, tmp_path, replaces):
    """A checkpoint write that failed leaves metrics.csv, model.pt and summary.json an epoch ahead of
    the checkpoint; the resume trains that epoch again, and until it has, the run's files must
    describe the checkpoint's epochs, even when the resume is interrupted first."""
    from cnnlab.interrupts import Interrupted

    root, reference = setup
    cfg = load_config(root / "resume.yaml", ["train.epochs=3"])
    checkpoints = []
    replaces["fail"] = lambda dst: dst.name == "checkpoint.pt" and (checkpoints.append(dst) or len(checkpoints) == 2)
    with pytest.raises(RunError, match="No space left on device"):
        run(cfg, runs_dir=tmp_path, data_dir=root / "data")
    (run_dir,) = tmp_path.iterdir()
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 2 and runs.load_tensors(run_dir / "checkpoint.pt")["epoch"] == 1
    replaces["fail"] = lambda dst: False

    class StopInEpoch2:
        def epoch_start(self, epoch, steps):
            pass

        def step(self, step, steps, loss):
            raise Interrupted(signal.SIGINT)

    with pytest.raises(Interrupted):
        run(cfg, resume=run_dir, progress=StopInEpoch2())
    summary = check_files(run_dir)  # epochs: checkpoint = summary = metrics rows
    assert summary["status"] == "interrupted" and summary["epochs"] == 1
    table = pd.read_csv(run_dir / "metrics.csv")
    assert summary["test_acc"] == table["test_acc"].iloc[-1] and summary["train_loss"] == table["train_loss"].iloc[-1]
    assert summary["train_seconds"] == pytest.approx(table["epoch_seconds"].sum())
    weights, saved = torch.load(run_dir / "model.pt", weights_only=True), runs.load_tensors(run_dir / "checkpoint.pt")["model"]
    assert all(torch.equal(weights[k], saved[k]) for k in saved)

    run(cfg, resume=run_dir)
    assert check_files(run_dir)["status"] == "completed"
    pd.testing.assert_frame_equal(metrics(run_dir), reference.iloc[:3])


# ---------------------------------------------------------------------------- safe loading
class Payload:
    """Unpickling this runs a shell command: a config, checkpoint or data file must never do that."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_completed_run_of_one_epoch_says_one_epoch():
    with pytest.raises(RunError, match=r"^runs/x is already complete \(1 epoch\): nothing to train; extend it with train.epochs=2 or more$"):
        check_epochs(Path("runs/x"), 1, 1, {"status": "completed"})


def test_a_resume_that_cannot_go_on_leaves_the_run_as_it_was(setup, tmp_path, capsys):
    root, _ = setup
    finished = run(load_config(root / "resume.yaml", ["train.epochs=1"]), runs_dir=tmp_path, data_dir=root / "data")
    before = (finished.path / "summary.json").read_text()

    out = cnnlab_here(capsys, "train", "--resume", finished.path, "model.hidden=[5]")
    assert out.returncode == 1 and "with another model.hidden" in error_line(out.stderr)
    config = (finished.path / "config.yaml").read_text()
    (finished.path / "config.yaml").write_text(config.replace("hidden: [32]", "hidden: [5]"))  # a config.yaml edited by hand
    out = cnnlab_here(capsys, "train", "--resume", finished.path, "train.epochs=2")
    assert out.returncode == 1 and "does not fit this config" in error_line(out.stderr)
    (finished.path / "config.yaml").write_text(config)

    longer = run(load_config(root / "resume.yaml", ["train.epochs=2"]), runs_dir=tmp_path / "longer", data_dir=root / "data")
    kept = {name: (longer.path / name).read_bytes() for name in ("config.yaml", "summary.json", "metrics.csv")}
    out = cnnlab_here(capsys, "train", "--resume", longer.path, "train.epochs=1")  # fewer epochs than it has
    assert out.returncode == 1 and "already has 2 epochs" in error_line(out.stderr)
    out = cnnlab_here(capsys, "train", "--resume", longer.path)  # nothing left to train
    assert out.returncode == 1 and "already complete (2 epochs): nothing to train" in error_line(out.stderr)
    assert {name: (longer.path / name).read_bytes() for name in kept} == kept
    out = cnnlab_here(capsys, "train", "--resume", longer.path, "train.epochs=3", "--runs-dir", tmp_path / "elsewhere")
    assert out.returncode == 2 and "give no --runs-dir" in error_line(out.stderr)  # not trained on, in place, silently
    assert not (tmp_path / "elsewhere").exists()
    out = cnnlab_here(capsys, "train", "--resume", longer.path, "description=a label only", "train.epochs=3")
    assert out.returncode == 0, out.stderr
    assert load_config(longer.path / "config.yaml").description == "a label only"

    marker = tmp_path / "payload_ran"
    torch.save({"epoch": 1, "model": Payload(marker)}, finished.path / "checkpoint.pt")
    out = cnnlab_here(capsys, "train", "--resume", finished.path, "train.epochs=2")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "refusing to load" in error_line(out.stderr) and f"{os.system.__module__}.system" in out.stderr
    assert not marker.exists()
    assert (finished.path / "summary.json").read_text() == before
    assert load_config(finished.path / "config.yaml").model.hidden == [32]


@pytest.mark.parametrize("key, value", [("aug_gen", [1, 2]), ("scheduler", 5), ("order_gen", "x"), ("epoch", 0.7), ("epoch", "1"), ("epoch", True)])
def test_a_checkpoint_edited_by_hand_is_one_line(setup, tmp_path, capsys, key, value):
    """A list where the augmentation generator's state was, or a number for the scheduler's, ended
    in an AttributeError traceback ('list' object has no attribute 'numel')."""
    root, _ = setup
    done = run(load_config(root / "resume.yaml", ["train.epochs=1"]), runs_dir=tmp_path, data_dir=root / "data")
    ckpt = torch.load(done.path / "checkpoint.pt", weights_only=True)
    torch.save({**ckpt, key: value}, done.path / "checkpoint.pt")
    out = cnnlab_here(capsys, "train", "--resume", done.path, "train.epochs=2")
    assert out.returncode == 1 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    if key == "epoch":  # 0.7 was taken as epoch 0, and the epoch written trained again
        assert error_line(out.stderr) == f"error: cannot resume from {done.path}: its checkpoint says epoch {value!r}, not a whole number (edited by hand?)"
    else:
        assert error_line(out.stderr).startswith(f"error: cannot resume from {done.path}: it does not fit this config (")


def test_a_resume_of_a_run_whose_metrics_lost_an_epoch_is_refused(setup, tmp_path, capsys):
    """A row deleted from metrics.csv by hand was resumed from the checkpoint: the table went on after a gap."""
    root, _ = setup
    done = run(load_config(root / "resume.yaml", ["train.epochs=2"]), runs_dir=tmp_path, data_dir=root / "data")
    table = (done.path / "metrics.csv").read_text()
    (done.path / "metrics.csv").write_text(table.rsplit("\n", 2)[0] + "\n")  # the last epoch's row gone
    before = {p.name: p.read_bytes() for p in done.path.iterdir()}
    out = cnnlab_here(capsys, "train", "--resume", done.path, "train.epochs=3")
    assert out.returncode == 1
    assert error_line(out.stderr) == f"error: cannot resume {done.path}: metrics.csv has 1 epoch(s) but the checkpoint is at epoch 2 (edited by hand?)"
    assert {p.name: p.read_bytes() for p in done.path.iterdir()} == before


def test_a_run_an_earlier_cnnlab_accepted_still_resumes_under_a_newer_check(tiny_data, tmp_path, capsys):
    """A check added later (here: a cosine warm-up as long as the run) refuses new configs, not the
    config.yaml of a run written before it: that run still resumes and extends."""
    from cnnlab.errors import ConfigError
    from cnnlab.interrupts import Interrupted

    class StopInEpoch2:
        def epoch_start(self, epoch, steps):
            self.epoch = epoch

        def step(self, step, steps, loss):
            if self.epoch == 2:
                raise Interrupted(signal.SIGINT)

        def epoch_end(self, row):
            pass

    with pytest.raises(Interrupted):
        run(load_config(ROOT / "configs/mnist_fc.yaml", ["device=cpu", "train.epochs=2", "train.max_steps=2", "schedule={name: cosine, warmup_epochs: 1}"]),
            runs_dir=tmp_path, data_dir=tiny_data, progress=StopInEpoch2())
    (done,) = tmp_path.iterdir()
    config = done / "config.yaml"
    config.write_text(config.read_text().replace("warmup_epochs: 1.0", "warmup_epochs: 2.0"))  # as the earlier cnnlab wrote it
    with pytest.raises(ConfigError, match="warmup_epochs"):
        load_config(config)  # given now, it is refused
    out = cnnlab_here(capsys, "train", "--resume", done, "--data-dir", tiny_data)  # the interrupted run goes on as it was
    assert out.returncode == 0, out.stderr
    assert json.loads((done / "summary.json").read_text())["epochs"] == 2
    out = cnnlab_here(capsys, "train", "--resume", done, "train.epochs=3", "--data-dir", tiny_data)
    assert out.returncode == 0, out.stderr
    assert json.loads((done / "summary.json").read_text())["epochs"] == 3


@pytest.mark.parametrize("when", ["after the last epoch's files", "as the summary says completed"])
def test_a_signal_once_every_epoch_is_written_leaves_the_run_completed_and_still_stops(tiny_data, tmp_path, monkeypatch, when):
    from cnnlab.interrupts import Interrupted

    kill = lambda: os.kill(os.getpid(), signal.SIGTERM)  # noqa: E731
    on_epoch = (lambda row, path: row["epoch"] == 2 and kill()) if when.startswith("after") else None
    if on_epoch is None:
        write_json = runs.write_json

        def write_and_signal(path, data):
            write_json(path, data)
            if data.get("status") == "completed":
                kill()

        monkeypatch.setattr(runs, "write_json", write_and_signal)
    cfg = load_config(ROOT / "configs/mnist_fc.yaml", ["device=cpu", "train.epochs=2", "train.max_steps=2"])
    with pytest.raises(Interrupted) as stopped:
        run(cfg, runs_dir=tmp_path, data_dir=tiny_data, on_epoch=on_epoch)
    (path,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert stopped.value.signum == signal.SIGTERM
    assert str(stopped.value) == f"stopped by SIGTERM after the last epoch; the run is complete: {path}"
    assert stopped.value.run_dir == path  # what cnnlab train prints last
    summary = json.loads((path / runs.SUMMARY).read_text())
    assert (summary["status"], summary["epochs"], summary["error"]) == ("completed", 2, None)
    assert len(pd.read_csv(path / runs.METRICS)) == 2


def test_a_signal_before_the_last_epochs_files_are_written_leaves_the_run_interrupted(tiny_data, tmp_path, monkeypatch):
    """fit counts the last epoch (state.epoch) a moment before the run writes its files: a signal in
    that moment leaves the run interrupted with the epochs it wrote, not completed one epoch short."""
    from cnnlab import experiment
    from cnnlab.interrupts import Interrupted

    real_fit = experiment.fit

    def fit(state, data, pipeline, train_cfg, loss_fn, on_epoch=None, **kwargs):
        def signalled(row, st):
            if st.epoch == train_cfg.epochs:  # as if SIGTERM came just before the run's on_epoch began writing
                raise Interrupted(signal.SIGTERM)
            on_epoch(row, st)

        real_fit(state, data, pipeline, train_cfg, loss_fn, on_epoch=signalled, **kwargs)

    monkeypatch.setattr(experiment, "fit", fit)
    cfg = load_config(ROOT / "configs/mnist_fc.yaml", ["device=cpu", "train.epochs=2", "train.max_steps=2"])
    with pytest.raises(Interrupted) as stopped:
        run(cfg, runs_dir=tmp_path, data_dir=tiny_data)
    (path,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert str(stopped.value).startswith("stopped by SIGTERM during epoch 2; 1 complete epoch(s) kept")
    summary = json.loads((path / runs.SUMMARY).read_text())
    assert (summary["status"], summary["epochs"]) == ("interrupted", 1)
    assert len(pd.read_csv(path / runs.METRICS)) == 1


def test_a_resume_that_turns_checkpoints_off_and_is_stopped_before_an_epoch_ends_says_it_can_go_on(tiny_data, tmp_path):
    from cnnlab.interrupts import Interrupted

    def resume_config(run_dir, overrides=None):  # as cnnlab train --resume RUN_DIR [overrides] reads it
        path = runs.open_run(run_dir)
        return path, load_config(path / runs.CONFIG, overrides, stored=True)

    first = run(load_config(ROOT / "configs/mnist_fc.yaml", ["device=cpu", "train.epochs=1", "train.max_steps=2"]), runs_dir=tmp_path, data_dir=tiny_data)

    class StopInEpoch2:
        def epoch_start(self, epoch, steps):
            os.kill(os.getpid(), signal.SIGTERM)

        def step(self, step, steps, loss): ...
        def epoch_end(self, row): ...

    path, cfg = resume_config(first.path, ["train.epochs=2", "train.checkpoint=false"])
    with pytest.raises(Interrupted) as stopped:
        run(cfg, resume=path, data_dir=tiny_data, progress=StopInEpoch2())
    assert str(stopped.value).endswith(f"1 complete epoch(s) kept; continue with: cnnlab train --resume {path}")
    assert stopped.value.run_dir == path  # a resumed run's directory, printed last as a new run's
    assert (path / runs.CHECKPOINT).exists()
    path, cfg = resume_config(path)  # and it does go on, from that checkpoint
    assert run(cfg, resume=path, data_dir=tiny_data).summary["epochs"] == 2
