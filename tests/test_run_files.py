"""Run directories under the ways users meet them: two processes on one run, data that moved, a
disk that filled up, directories cnnlab did not write, config paths with odd names."""

import errno
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cnnlab import runs
from cnnlab.cli import split_args
from cnnlab.config import load_config
from cnnlab.errors import ConfigError, RunError
from cnnlab.experiment import run
from cnnlab.studies.record import StudyRecord
from conftest import ROOT, no_room_for
from fakedata import make_idx_dataset

CONFIG = """name: files
seed: 1
device: cpu
dataset: {name: mnist, download: false}
model: {name: fc, hidden: [16]}
train: {epochs: 2, batch_size: 50, threads: 1}
"""


@pytest.fixture
def setup(tmp_path):
    make_idx_dataset(tmp_path / "data", n_train=200, n_test=50)
    (tmp_path / "files.yaml").write_text(CONFIG)
    return tmp_path


def test_a_run_being_trained_cannot_be_resumed_by_a_second_process(setup):
    first = run(load_config(setup / "files.yaml", ["train.epochs=1"]), runs_dir=setup / "runs", data_dir=setup / "data")
    before = (first.path / "summary.json").read_text()
    with runs.training_lock(first.path):  # as the process training it holds it
        with pytest.raises(RunError, match=f"is still being trained by process {os.getpid()}"):
            run(load_config(first.path / "config.yaml", ["train.epochs=2"]), resume=first.path)
    assert (first.path / "summary.json").read_text() == before  # the refused resume wrote nothing
    resumed = run(load_config(first.path / "config.yaml", ["train.epochs=2"]), resume=first.path)  # lock released
    assert resumed.summary["epochs"] == 2


def test_resume_reads_the_data_from_cnnlab_data_dir_when_the_data_moved(setup, monkeypatch):
    first = run(load_config(setup / "files.yaml", ["train.epochs=1"]), runs_dir=setup / "runs", data_dir=setup / "data")
    shutil.move(setup / "data", setup / "moved")
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(setup / "moved"))
    resumed = run(load_config(first.path / "config.yaml", ["train.epochs=2"]), resume=first.path)
    assert resumed.summary["epochs"] == 2 and resumed.summary["data_dir"] == str(setup / "moved")


def test_resume_keeps_the_runs_own_data_while_it_is_there(setup, monkeypatch):
    first = run(load_config(setup / "files.yaml", ["train.epochs=1"]), runs_dir=setup / "runs", data_dir=setup / "data")
    (setup / "other").mkdir()  # no MNIST there: a resume that read it would fail
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(setup / "other"))  # set for other work
    resumed = run(load_config(first.path / "config.yaml", ["train.epochs=2"]), resume=first.path)
    assert resumed.summary["data_dir"] == str(setup / "data")


def test_a_disk_full_before_the_first_checkpoint_resumes_from_the_start(setup, monkeypatch):
    real = os.replace
    no_room_for(monkeypatch, lambda path: path.name == runs.MODEL)
    with pytest.raises(RunError, match="No space left"):
        run(load_config(setup / "files.yaml"), runs_dir=setup / "runs", data_dir=setup / "data")
    (path,) = (setup / "runs").iterdir()
    assert len(pd.read_csv(path / "metrics.csv")) == 1 and not (path / runs.CHECKPOINT).exists()
    monkeypatch.setattr(os, "replace", real)  # room again
    resumed = run(load_config(path / "config.yaml"), resume=path)
    assert resumed.summary["status"] == "completed" and list(pd.read_csv(path / "metrics.csv")["epoch"]) == [1, 2]


def test_a_killed_study_shows_as_dead(tmp_path):
    record = StudyRecord(tmp_path, "s", study="fc-vs-cnn")
    summary = json.loads((record.path / "summary.json").read_text())
    assert summary["pid"] == os.getpid() and runs.shown_status(summary) == "running"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record.update(pid=int(gone.stdout))  # as if the process that wrote it had been killed
    assert [r["status"] for r in runs.list_runs(tmp_path)] == ["dead"]


def test_a_failed_study_records_the_first_line_that_says_something(tmp_path):
    record = StudyRecord(tmp_path, "s", study="compare")
    with pytest.raises(RuntimeError):
        with record.running():
            raise RuntimeError("\n  the disk is full\nmore detail")  # a message that starts with a blank line
    summary = json.loads((record.path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "the disk is full"


def test_runs_filters_check_names_against_the_schema_which_matches_the_model_registry(tmp_path, monkeypatch, capsys):
    from cnnlab.config import model_names
    from cnnlab.models import MODELS
    from test_forward_check import cli

    assert sorted(model_names()) == sorted(MODELS)  # `cnnlab runs --model` checks the schema's names: no torch
    StudyRecord(tmp_path, "toy-study", study="compare", dataset="toy", model="toy")
    code, out, err = cli(monkeypatch, capsys, "runs", "--dataset", "toy", "--model", "toy", "--runs-dir", tmp_path)
    assert code == 0 and "toy-study" in out, err  # the toy is a dataset and a model too


@pytest.mark.parametrize("csv", [[], ["--csv"]], ids=["table", "csv"])
def test_runs_in_a_directory_given_that_is_not_one_is_an_error(tmp_path, monkeypatch, capsys, csv):
    """`cnnlab runs --runs-dir /tmp/typo` said 'no runs in /tmp/typo' (exit 0), as if the typo were an
    empty directory; so did $CNNLAB_RUNS_DIR=/tmp/typo. The default ./runs of a fresh clone still has no runs.
    A link to nothing (a drive not mounted) 'does not exist' where every other command said what it is."""
    from test_errors import error_line
    from test_resume import cnnlab_here

    monkeypatch.chdir(tmp_path)  # no ./runs here
    monkeypatch.delenv("CNNLAB_RUNS_DIR", raising=False)
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_link").symlink_to(tmp_path / "gone")
    for option, env, error in [
        (["--runs-dir", "typo"], None, "the runs directory typo does not exist"),
        ([], "typo", "the runs directory typo ($CNNLAB_RUNS_DIR) does not exist"),
        (["--runs-dir", "a_file"], None, "a_file is a file, not a runs directory"),
        ([], "a_file", "a_file is a file, not a runs directory"),
        (["--runs-dir", "a_link"], None, "a_link is a broken symbolic link, not a runs directory"),
        ([], "a_link", "a_link is a broken symbolic link, not a runs directory"),
    ]:
        if env is not None:
            monkeypatch.setenv("CNNLAB_RUNS_DIR", env)
        out = cnnlab_here(capsys, "runs", *csv, *option)
        assert (out.returncode, error_line(out.stderr), out.stdout) == (1, f"error: {error}", ""), (option, env)
        monkeypatch.delenv("CNNLAB_RUNS_DIR", raising=False)
    out = cnnlab_here(capsys, "runs", *csv)
    assert out.returncode == 0 and out.stderr == "" and not (tmp_path / "runs").exists()
    assert out.stdout == ("id,kind,name,dataset,model,epochs,test_acc,train_seconds,status\n" if csv else "no runs in runs\n")


def test_listing_skips_directories_whose_summary_is_not_cnnlabs(tmp_path):
    StudyRecord(tmp_path, "real", study="fc-vs-cnn")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "summary.json").write_text("[1, 2]")
    assert [r["name"] for r in runs.list_runs(tmp_path)] == ["real"]


def test_cnnlab_runs_says_which_of_its_directories_it_leaves_out(tmp_path):
    """A run, study or sweep whose summary.json was damaged by hand vanished from `cnnlab runs` unsaid;
    a folder that is not cnnlab's (no .kind) is still left out without a word."""
    StudyRecord(tmp_path, "real", study="fc-vs-cnn")
    damaged = StudyRecord(tmp_path, "damaged", study="fc-vs-cnn").path
    (damaged / "summary.json").write_text('{"name": "dam')
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "summary.json").write_text("[1, 2]")
    unreadable = []
    assert [r["name"] for r in runs.list_runs(tmp_path, unreadable)] == ["real"]
    assert unreadable == [damaged.name]
    # killed outright as it started (helper h105): .kind, config.yaml and a temp file, no summary.json
    killed = runs.new_run_dir(tmp_path, "mnist_cnn")
    (killed / ".summary.json.3m0zknz.tmp").write_text("{")
    sooner = tmp_path / "20261128-113544-mnist_cnn-8371a2"  # killed as its .kind was written
    sooner.mkdir()
    (sooner / "..kind.zh7gem4o.tmp").write_text("run")
    starting = runs.new_run_dir(tmp_path, "mnist_fc")  # one still starting: its process holds the lock
    with runs.training_lock(starting):
        out = subprocess.run([sys.executable, "-m", "cnnlab", "runs", "--runs-dir", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0 and "real" in out.stdout
    assert out.stderr == (f"note: left out 1 whose summary.json cannot be read (edited or damaged?): {damaged.name}\n"
                          f"note: left out 2 with no summary.json, whose process was killed as it started (nothing trained there; "
                          f"safe to remove): {killed.name}, {sooner.name}\n")


def test_listing_reads_a_kind_file_that_is_not_text(tmp_path):
    record = StudyRecord(tmp_path, "real", study="fc-vs-cnn")
    summary = json.loads((record.path / "summary.json").read_text())
    del summary["kind"]  # as a run's summary: the kind comes from .kind
    (record.path / "summary.json").write_text(json.dumps(summary))
    (record.path / ".kind").write_bytes(b"\xff\xfe")
    assert [r["name"] for r in runs.list_runs(tmp_path)] == ["real"]


def test_unreadable_files_of_a_run_are_one_line_not_a_traceback(tmp_path, monkeypatch):
    """As for a user who may not read them (tests run as root, who may: the read is made to fail)."""
    record = StudyRecord(tmp_path, "real", study="fc-vs-cnn")
    (record.path / "metrics.csv").write_text("epoch\n1\n")
    read_text = Path.read_text

    def denied(path, *args, **kwargs):
        if path.name in (".kind", "metrics.csv"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    monkeypatch.setattr(pd, "read_csv", lambda path, *a, **k: denied(Path(path)))
    with pytest.raises(RunError, match="cannot read .*metrics.csv: .*Permission denied"):
        runs.read_metrics(record.path)
    summary = json.loads(read_text(record.path / "summary.json"))
    del summary["kind"]  # as a run's summary: the kind comes from .kind
    (record.path / "summary.json").write_text(json.dumps(summary))
    assert [(r["name"], r["kind"]) for r in runs.list_runs(tmp_path)] == [("real", "run")]


def denied(path):
    """What a user without permission on path gets (tests run as root, who has it)."""
    raise PermissionError(errno.EACCES, "Permission denied", str(path))


def test_listing_skips_a_run_it_may_not_look_into_and_refuses_a_runs_directory_it_may_not_read(tmp_path, monkeypatch):
    """As for a user without those permissions (another user's run; tests run as root, who has them:
    the calls are made to fail). Both were a PermissionError's traceback."""
    StudyRecord(tmp_path, "real", study="fc-vs-cnn")
    (tmp_path / "theirs").mkdir()
    stat, listdir, scandir = os.stat, os.listdir, os.scandir
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: denied(path) if Path(path).parent.name == "theirs" else stat(path, *a, **k))
    assert [r["name"] for r in runs.list_runs(tmp_path)] == ["real"]
    monkeypatch.setattr(os, "listdir", lambda path=".": denied(path) if Path(path) == tmp_path else listdir(path))
    monkeypatch.setattr(os, "scandir", lambda path=".": denied(path) if Path(path) == tmp_path else scandir(path))
    with pytest.raises(RunError, match=f"^cannot read the runs directory {re.escape(str(tmp_path))}: Permission denied$"):
        runs.list_runs(tmp_path)


def test_a_completed_cell_whose_results_were_edited_by_hand_is_one_line(setup):
    """A study resumed takes its completed cells' results from their summary.json, and computes with them."""
    from cnnlab.runner import finished_result

    done = run(load_config(setup / "files.yaml", ["train.epochs=1"]), runs_dir=setup / "runs", data_dir=setup / "data")
    summary = json.loads((done.path / "summary.json").read_text())
    assert finished_result(done.path).summary["test_acc"] == summary["test_acc"]
    (done.path / "summary.json").write_text(json.dumps({**summary, "test_acc": "96%"}))
    with pytest.raises(RunError, match=r"summary.json: 'test_acc' should be a number, not '96%' \(edited by hand\?\)"):
        finished_result(done.path)


def test_a_resume_that_does_not_fit_says_which_weights_differ(setup):
    first = run(load_config(setup / "files.yaml", ["train.epochs=1"]), runs_dir=setup / "runs", data_dir=setup / "data")
    config = first.path / "config.yaml"
    config.write_text(config.read_text().replace("hidden: [16]", "hidden: [8]"))  # edited by hand
    with pytest.raises(RunError, match=r"size mismatch for .*weight"):
        run(load_config(config, ["train.epochs=2"]), resume=first.path)


def test_config_paths_may_hold_an_equals_sign_and_spaces(tmp_path):
    folder = tmp_path / "lr=0.1"
    folder.mkdir()
    (folder / "my exp.yaml").write_text("model: {name: fc}\n")
    path = str(folder / "my exp.yaml")
    assert split_args([path, "train.epochs=2"]) == (path, ["train.epochs=2"])
    assert load_config(path).name == "my_exp"  # the name comes from the file, made a valid run name


def read_events(path: Path) -> list:
    """The Event records of a TensorBoard event file (TFRecord framing: length, its CRC, data, CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    data, events, i = path.read_bytes(), [], 0
    while i < len(data):
        (length,) = struct.unpack("<Q", data[i : i + 8])
        events.append(Event.FromString(data[i + 12 : i + 12 + length]))
        i += 12 + length + 4
    return events


def test_tensorboard_logs_every_epochs_metrics_into_the_run(setup):
    pytest.importorskip("tensorboardX")
    result = run(load_config(setup / "files.yaml", ["train.tensorboard=true"]), runs_dir=setup / "runs", data_dir=setup / "data")
    (events_file,) = result.path.glob("events.out.tfevents.*")
    logged = {(v.tag, e.step): v.simple_value for e in read_events(events_file) for v in e.summary.value}
    table = pd.read_csv(result.path / "metrics.csv")
    assert {tag for tag, _ in logged} >= {"loss/train", "loss/test", "accuracy/train", "accuracy/test", "lr"}
    assert list(table.epoch) == [1, 2]
    for row in table.to_dict("records"):
        assert logged[("accuracy/test", row["epoch"])] == pytest.approx(row["test_acc"])
        assert logged[("loss/train", row["epoch"])] == pytest.approx(row["train_loss"])


def test_tensorboard_without_tensorboardx_is_refused_before_the_run_starts(setup, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'cnnlab\[tensorboard\]'"):
        run(load_config(setup / "files.yaml", ["train.tensorboard=true"]), runs_dir=setup / "runs", data_dir=setup / "data")
    assert not (setup / "runs").exists()


def test_a_run_trained_without_checkpoints_is_not_silently_retrained(setup):
    first = run(load_config(setup / "files.yaml", ["train.epochs=1", "train.checkpoint=false"]), runs_dir=setup / "runs", data_dir=setup / "data")
    with pytest.raises(RunError, match="checkpoint.pt does not exist"):  # even when the resume asks for checkpoints
        run(load_config(first.path / "config.yaml", ["train.epochs=2", "train.checkpoint=true"]), resume=first.path)
    assert list(pd.read_csv(first.path / "metrics.csv")["epoch"]) == [1]


def test_a_run_whose_checkpoint_was_removed_is_not_silently_retrained(setup):
    """It started afresh: metrics.csv and model.pt were deleted at once, and every epoch trained again."""
    from cnnlab.resume import check_resume

    first = run(load_config(setup / "files.yaml"), runs_dir=setup / "runs", data_dir=setup / "data")
    (first.path / runs.CHECKPOINT).unlink()  # to save room: model.pt holds the weights
    files = {f: (first.path / f).read_bytes() for f in ("config.yaml", "summary.json", "metrics.csv", "model.pt")}
    refusal = re.escape(f"cannot resume: {first.path / runs.CHECKPOINT} does not exist, though metrics.csv holds 2 epochs (removed?)")
    for epochs in ("train.epochs=2", "train.epochs=3"):
        cfg = load_config(first.path / "config.yaml", [epochs])
        with pytest.raises(RunError, match=refusal):
            run(cfg, resume=first.path)
        with pytest.raises(RunError, match=refusal):  # --print-config refuses it alike
            check_resume(first.path, load_config(first.path / "config.yaml", stored=True), cfg)
    assert {f: (first.path / f).read_bytes() for f in files} == files


def test_a_resume_that_changes_what_or_how_the_run_learns_is_refused(setup):
    first = run(load_config(setup / "files.yaml", ["train.epochs=1"]), runs_dir=setup / "runs", data_dir=setup / "data")
    files = {f: (first.path / f).read_bytes() for f in ("config.yaml", "summary.json", "metrics.csv")}
    changes = {
        "optimizer.lr=0.5": "optimizer.lr", "schedule={name: cosine}": "schedule.name", "seed=7": "seed",
        "dataset.name=fashion-mnist": "dataset.name", "transform.permute=true": "transform.permute",
        "train.batch_size=32": "train.batch_size", "model.hidden=[8]": "model.hidden",
    }
    for change, key in changes.items():
        for epochs in ("train.epochs=1", "train.epochs=2"):  # nothing left to train, or one more epoch
            with pytest.raises(RunError, match=f"with another {re.escape(key)}"):
                run(load_config(first.path / "config.yaml", [epochs, change]), resume=first.path)
    assert {f: (first.path / f).read_bytes() for f in files} == files  # the run's record is as it trained
    # the line names the values, the run's and the new (it said "trained without it", even of a seed)
    with pytest.raises(RunError, match=re.escape("with another seed (1, now 7), model.hidden ([16], now [8]): its epochs so far trained with the first; train a new run")):
        run(load_config(first.path / "config.yaml", ["train.epochs=2", "seed=7", "model.hidden=[8]"]), resume=first.path)
    # how it runs may change
    again = run(load_config(first.path / "config.yaml", ["train.epochs=2", "device=cpu", "train.threads=1", "train.eval_batch_size=7"]), resume=first.path)
    assert again.summary["epochs"] == 2 and again.summary["status"] == "completed"


def test_a_resumed_run_has_not_finished_while_it_trains(setup):
    """It kept its earlier session's finished_at: a resumed study cell its study then cut off was
    settled as interrupted at the time its first session ended (settle keeps a finished_at)."""
    first = run(load_config(setup / "files.yaml", ["train.epochs=1"]), runs_dir=setup / "runs", data_dir=setup / "data")
    on_disk = []
    resumed = run(load_config(first.path / "config.yaml", ["train.epochs=2"]), resume=first.path,
                  on_epoch=lambda row, path: on_disk.append(runs.read_json(path / runs.SUMMARY)))
    assert [(s["status"], s["finished_at"]) for s in on_disk] == [("running", None)]
    assert resumed.summary["finished_at"] >= first.summary["finished_at"]


def test_a_stale_running_summary_does_not_block_a_resume(setup):
    """After a kill -9 the summary still says running, and its pid may belong to another process by
    now: the free lock, not the pid, says nobody trains the run."""
    first = run(load_config(setup / "files.yaml", ["train.epochs=1"]), runs_dir=setup / "runs", data_dir=setup / "data")
    summary = json.loads((first.path / "summary.json").read_text())
    (first.path / "summary.json").write_text(json.dumps({**summary, "status": "running", "pid": 1}))  # pid 1 lives
    assert run(load_config(first.path / "config.yaml", ["train.epochs=2"]), resume=first.path).summary["epochs"] == 2


def test_tensorboard_keeps_every_epoch_across_a_quick_resume(setup):
    pytest.importorskip("tensorboardX")
    first = run(load_config(setup / "files.yaml", ["train.epochs=1", "train.tensorboard=true"]), runs_dir=setup / "runs", data_dir=setup / "data")
    run(load_config(first.path / "config.yaml", ["train.epochs=2"]), resume=first.path)  # within the same second
    steps = {e.step for f in first.path.glob("events.out.tfevents.*") for e in read_events(f) if e.summary.value}
    assert steps == {1, 2}


def test_tensorboard_keeps_an_epoch_whose_files_a_signal_waited_for(setup, monkeypatch):
    """A SIGTERM while an epoch's files were written waits for them, then stops the run: the epoch is
    in metrics.csv and the checkpoint, so the resume goes on after it; TensorBoard never got it."""
    import signal

    from cnnlab.interrupts import Interrupted

    pytest.importorskip("tensorboardX")
    write_json = runs.write_json

    def write_and_signal(path, data):
        write_json(path, data)
        if data.get("epochs") == 1 and data.get("status") == "running":
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(runs, "write_json", write_and_signal)
    with pytest.raises(Interrupted) as stopped:
        run(load_config(setup / "files.yaml", ["train.tensorboard=true"]), runs_dir=setup / "runs", data_dir=setup / "data")
    path = stopped.value.run_dir
    monkeypatch.setattr(runs, "write_json", write_json)
    run(load_config(path / "config.yaml", ["train.epochs=2"]), resume=path)
    steps = sorted(e.step for f in path.glob("events.out.tfevents.*") for e in read_events(f) for v in e.summary.value if v.tag == "accuracy/test")
    assert steps == list(pd.read_csv(path / "metrics.csv")["epoch"]) == [1, 2]


def test_every_command_reads_existing_files_with_an_equals_sign_as_paths(tmp_path):
    from cnnlab.cli import positional_and_overrides

    config = tmp_path / "lr=0.1.yaml"
    config.write_text("model: {name: fc}\n")
    assert positional_and_overrides(["fc-vs-cnn", str(config), "train.epochs=2"]) == (["fc-vs-cnn", str(config)], ["train.epochs=2"])


def test_turning_checkpoints_off_on_resume_drops_the_old_checkpoint(setup):
    first = run(load_config(setup / "files.yaml", ["train.epochs=2"]), runs_dir=setup / "runs", data_dir=setup / "data")
    run(load_config(first.path / "config.yaml", ["train.epochs=4", "train.checkpoint=false"]), resume=first.path)
    assert not (first.path / runs.CHECKPOINT).exists()  # it held epoch 2: a later resume would undo 3 and 4
    with pytest.raises(RunError, match="does not exist"):
        run(load_config(first.path / "config.yaml", ["train.epochs=5"]), resume=first.path)
    assert list(pd.read_csv(first.path / "metrics.csv")["epoch"]) == [1, 2, 3, 4]


def test_a_relative_data_dir_does_not_follow_the_working_directory_on_resume(setup, monkeypatch):
    (setup / "w1").mkdir()
    shutil.move(setup / "data", setup / "w1" / "data")
    monkeypatch.chdir(setup / "w1")
    first = run(load_config(setup / "files.yaml", ["train.epochs=1", "dataset.data_dir=data"]), runs_dir=setup / "runs")
    (setup / "w2" / "data").mkdir(parents=True)  # a different (empty) data folder under the same relative name
    monkeypatch.chdir(setup / "w2")
    resumed = run(load_config(first.path / "config.yaml", ["train.epochs=2"]), resume=first.path)
    assert resumed.summary["data_dir"] == str(setup / "w1" / "data")


def test_the_lock_names_its_holder_and_tells_a_live_run_from_a_dead_one(setup):
    first = run(load_config(setup / "files.yaml", ["train.epochs=1"]), runs_dir=setup / "runs", data_dir=setup / "data")
    summary = json.loads((first.path / "summary.json").read_text())
    summary = {k: v for k, v in summary.items() if k not in ("host", "pid")}  # as an edited or foreign summary
    (first.path / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    assert [r["status"] for r in runs.list_runs(setup / "runs")] == ["dead"]  # its lock is free
    with runs.training_lock(first.path):
        assert (first.path / runs.LOCK).read_text().strip() == str(os.getpid())
        assert [r["status"] for r in runs.list_runs(setup / "runs")] == ["running"]
        probe = subprocess.run([sys.executable, "-c", f"from cnnlab import runs\nwith runs.training_lock({str(first.path)!r}): pass"],
                               capture_output=True, text=True)
        assert f"still being trained by process {os.getpid()}" in probe.stderr


def test_a_long_run_prints_and_tables_a_sample_of_its_epochs(capsys):
    """The toy's 2,000 epochs: the first, every 40th and the last, in the lines and the table alike."""
    from rich.console import Console

    from cnnlab.report import ConsoleProgress, epochs_table, table

    rows = [{"epoch": e, "train_loss": 1 / e, "train_acc": 0.5, "test_loss": 1 / e, "test_acc": 0.5, "epoch_seconds": 0.01,
             "samples_per_sec": 100.0} for e in range(1, 2001)]
    progress = ConsoleProgress(2000, "toy", live=False)
    for row in rows:
        progress.epoch_end(row)
    printed = [int(line.split()[1].split("/")[0]) for line in capsys.readouterr().out.splitlines()]
    assert printed == [1, *range(40, 2001, 40)]
    shown, title = epochs_table(rows)
    out = Console(width=200, file=io.StringIO())
    out.print(table(shown, title=title))
    text = out.file.getvalue()
    assert "51 of 2000 epochs (all in metrics.csv)" in text and "│    40 │" in text and "│    41 │" not in text

    short = ConsoleProgress(16, "lenet", live=False)  # up to 50 epochs: every one
    for row in rows[:16]:
        short.epoch_end(row)
    assert len(capsys.readouterr().out.splitlines()) == 16


def test_a_resumed_session_prints_its_first_epoch(capsys):
    """Resumed at epoch 101 of 2,000: the session's first epoch is shown, then the sample goes on."""
    from cnnlab.report import ConsoleProgress

    progress = ConsoleProgress(2000, "toy", live=False)
    for epoch in range(101, 201):
        progress.epoch_end({"epoch": epoch, "train_loss": 0.1, "train_acc": 0.5, "test_loss": 0.1, "test_acc": 0.5,
                            "epoch_seconds": 0.01, "samples_per_sec": 100.0})
    printed = [int(line.split()[1].split("/")[0]) for line in capsys.readouterr().out.splitlines()]
    assert printed == [101, 120, 160, 200]


def test_the_live_bar_shows_a_label_with_square_brackets_as_it_is():
    from cnnlab.report import ConsoleProgress

    progress = ConsoleProgress(2, "a[/x]b[bold]c", live=True)  # a config named so: rich markup would fail on '[/x]'
    try:
        progress.epoch_start(1, 3)
        progress.step(3, 3, 0.5)
        shown = [column.render(task).plain for task in progress._bar.tasks for column in progress._bar.columns[:1]]
    finally:
        progress.close()
    assert shown == ["a[/x]b[bold]c epoch 1/2"]


RUNS_DIR_COMMANDS = [
    ["train", "configs/mnist_fc.yaml", "train.max_steps=1"],
    ["compare", "configs/mnist_fc.yaml", "--seeds", "1", "train.max_steps=1"],
    ["shift-sweep", "configs/mnist_fc.yaml", "--image-index", "0", "train.max_steps=1"],
    ["sweep", "configs/sweeps/lenet_lr.yaml"],
    ["samples", "mnist", "--n", "2"],
    ["bench", "--quick", "--cases", "fc"],
    ["runs"],  # which makes nothing: a runs directory under a file 'does not exist' (the test above)
]


@pytest.mark.parametrize("command", RUNS_DIR_COMMANDS, ids=lambda c: c[0])
def test_every_command_refuses_a_runs_directory_that_is_a_file_in_the_same_words(command, tmp_path, monkeypatch, capsys):
    """train said 'cannot create the runs directory F: File exists' where runs said 'F is a file, not a
    runs directory' (samples: 'cannot create F: File exists'; bench named its results directory)."""
    from test_errors import error_line
    from test_resume import cnnlab_here

    make_idx_dataset(tmp_path / "data", "MNIST", n_train=4, n_test=4)
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(ROOT)
    (tmp_path / "a_file").write_text("mine")
    for runs_dir, error in [
        (tmp_path / "a_file", f"{tmp_path}/a_file is a file, not a runs directory"),
        (tmp_path / "a_file" / "runs", f"cannot create the runs directory {tmp_path}/a_file/runs: {tmp_path}/a_file is a file"),
    ][: 1 if command == ["runs"] else 2]:
        out = cnnlab_here(capsys, *command, "--runs-dir", runs_dir)
        assert (out.returncode, error_line(out.stderr), out.stdout) == (1, f"error: {error}", ""), runs_dir
    assert (tmp_path / "a_file").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "data"]


def test_a_runs_directory_that_is_a_broken_link_is_named_as_one_not_the_working_directory(tmp_path, monkeypatch):
    """A runs directory linked to a drive not mounted was 'cannot create the runs directory runs: . is a
    file' (check_dir let it pass, then mkdir's 'File exists' was blamed on the nearest folder that exists)."""
    monkeypatch.chdir(tmp_path)
    Path("runs").symlink_to(tmp_path / "gone" / "runs")
    for path, error in [
        (Path("runs"), "runs is a broken symbolic link, not a runs directory"),
        (Path("runs/sub"), "cannot create the runs directory runs/sub: runs is a broken symbolic link"),
    ]:
        for check in (runs.check_dir, runs.ensure_dir):
            with pytest.raises(RunError, match=f"^{re.escape(error)}$"):
                check(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"] and Path("runs").is_symlink()


@pytest.mark.parametrize("command", RUNS_DIR_COMMANDS, ids=lambda c: c[0])
def test_every_command_refuses_a_runs_directory_under_one_it_may_not_enter_in_one_line(command, tmp_path, monkeypatch, capsys):
    """As for a user without search permission on a parent (tests run as root, who has it: the stat
    is made to fail). It was a PermissionError's traceback."""
    from test_resume import cnnlab_here

    stat = os.stat
    closed = tmp_path / "closed"
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: denied(path) if Path(path).parent == closed else stat(path, *a, **k))
    make_idx_dataset(tmp_path / "data", "MNIST", n_train=4, n_test=4)
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(ROOT)
    out = cnnlab_here(capsys, *command, "--runs-dir", closed / "runs")
    assert (out.returncode, out.stderr, out.stdout) == (1, f"error: cannot reach the runs directory {closed}/runs: Permission denied\n", "")


def test_check_dir_refuses_a_runs_directory_it_could_not_write_without_making_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.os, "access", lambda path, mode: False)  # as a user without write permission (tests run as root)
    with pytest.raises(RunError, match=f"^the runs directory {re.escape(str(tmp_path))} is not writable$"):
        runs.check_dir(tmp_path)
    with pytest.raises(RunError, match=f"^cannot create the runs directory .*/a/b: {re.escape(str(tmp_path))} is not writable$"):
        runs.check_dir(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("command", RUNS_DIR_COMMANDS[:3], ids=lambda c: c[0])
def test_a_runs_directory_that_is_a_file_is_refused_before_the_data_is_looked_for(command, tmp_path, monkeypatch, capsys):
    """train and shift-sweep named a runs directory that is a file only after loading the data (seconds
    of real MNIST), and with the data missing they named the data instead: the first mistake to fix."""
    from test_errors import error_line
    from test_resume import cnnlab_here

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.chdir(ROOT)
    (tmp_path / "a_file").write_text("mine")
    out = cnnlab_here(capsys, *command, "dataset.download=false", "--runs-dir", tmp_path / "a_file")
    assert (out.returncode, error_line(out.stderr)) == (1, f"error: {tmp_path}/a_file is a file, not a runs directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "empty"] and not any((tmp_path / "empty").iterdir())


def test_settling_cut_off_runs_leaves_a_run_another_process_still_holds(tmp_path):
    """settle_cut_off removed a run directory without a summary.json and marked a 'running' run
    interrupted even while a live process held its training lock (a Ray worker not yet gone after the
    driver's shutdown, as on a cluster that `--address` joined): its files were deleted under it, or its
    next epoch's summary said 'running' again. A run whose lock is held is its owner's to settle."""
    cells = tmp_path / "cells"
    being_made = runs.new_run_dir(cells, "made")
    training = runs.new_run_dir(cells, "training")
    runs.write_json(training / runs.SUMMARY, {"status": "running", "epochs": 1, "epochs_planned": 2})
    with runs.training_lock(being_made), runs.training_lock(training):
        runs.settle_cut_off(cells, "the study was interrupted", grace=0.3)
    assert being_made.is_dir() and json.loads((training / runs.SUMMARY).read_text())["status"] == "running"
    runs.settle_cut_off(cells, "the study was interrupted")  # once they are let go, they are settled
    assert not being_made.exists() and json.loads((training / runs.SUMMARY).read_text())["status"] == "interrupted"


def test_settling_cut_off_runs_waits_for_workers_going_down_to_let_their_runs_go(tmp_path):
    """A Ray worker of this machine still held its run's lock for a moment after the driver's shutdown
    (seen on a busy machine: a sweep stopped by SIGTERM left a trial 'running' for good), and was then
    killed without settling it. settle_cut_off now waits a few seconds for such locks."""
    import threading

    cells = tmp_path / "cells"
    training = runs.new_run_dir(cells, "training")
    runs.write_json(training / runs.SUMMARY, {"status": "running", "epochs": 1, "epochs_planned": 2})
    holding, release = threading.Event(), threading.Event()

    def worker():  # another open file of the lock, as another process's
        with runs.training_lock(training):
            holding.set()
            release.wait()

    thread = threading.Thread(target=worker)
    thread.start()
    holding.wait()
    threading.Timer(0.5, release.set).start()  # the worker goes down half a second later
    runs.settle_cut_off(cells, "the study was interrupted")
    thread.join()
    assert json.loads((training / runs.SUMMARY).read_text())["status"] == "interrupted"


def test_settling_cut_off_runs_leaves_a_folder_that_is_none_of_its_runs(tmp_path):
    """settle_cut_off removed every directory without a summary.json in a study's cells/ (a sweep's
    trials/), a folder the user made there as well: empty, or holding only a config.yaml. Now only a
    directory named as new_run_dir names a run (<UTC time>-<name>-<id>, whatever the name) is removed."""
    cells = tmp_path / "cells"
    unwritten = runs.new_run_dir(cells, "mnist_fc-s0")
    other = runs.new_run_dir(cells, "mnist_cnn-s0")  # any name: a trial Tune started after its last save has none on record
    (cells / "notes").mkdir()
    (cells / "drafts").mkdir()
    (cells / "drafts" / runs.CONFIG).write_text("seed: 1\n")
    (cells / "20260101-120000-mine").mkdir()  # a run's time, but no id
    runs.settle_cut_off(cells, "the study was interrupted")
    assert not unwritten.exists() and not other.exists()
    assert sorted(p.name for p in cells.iterdir()) == ["20260101-120000-mine", "drafts", "notes"]


# ---------------------------------------------------------------------------- review of runs and resume (helper h71)
def cli_here(capsys, monkeypatch, *args):
    """main() in this process: (exit code, stdout, stderr)."""
    from cnnlab.cli import main

    monkeypatch.setattr(sys, "argv", ["cnnlab", *map(str, args)])
    with pytest.raises(SystemExit) as end:
        main()
    out = capsys.readouterr()
    return end.value.code, out.out, out.err


def test_a_run_whose_first_files_cannot_be_written_leaves_no_directory(setup, monkeypatch):
    """It kept a directory with only .kind and .lock: no path printed, not listed, never removed."""
    no_room_for(monkeypatch, lambda path: path.name == runs.CONFIG)
    with pytest.raises(RunError, match="No space left"):
        run(load_config(setup / "files.yaml"), runs_dir=setup / "runs", data_dir=setup / "data")
    assert list((setup / "runs").iterdir()) == []


def test_a_signal_as_the_finished_run_is_told_still_ends_stdout_with_its_directory(setup, monkeypatch, capsys):
    import signal as signals

    from cnnlab import cli
    from cnnlab.interrupts import Interrupted

    def stopped(cfg, result):
        print("epoch 1/1 ...")
        raise Interrupted(signals.SIGTERM)

    monkeypatch.setattr(cli, "_tell_result", stopped)
    code, out, err = cli_here(capsys, monkeypatch, "train", setup / "files.yaml", "--runs-dir", setup / "runs", "--data-dir", setup / "data")
    (path,) = (setup / "runs").iterdir()
    assert code == 143 and out.splitlines()[-1] == str(path)
    assert err.strip() == f"interrupted: stopped by SIGTERM while its results were shown; the run is complete: {path}"
    assert runs.read_json(path / runs.SUMMARY)["status"] == "completed"


def test_a_resume_it_refuses_is_told_before_its_data_is_read(setup, monkeypatch, capsys):
    done = run(load_config(setup / "files.yaml"), runs_dir=setup / "runs", data_dir=setup / "data")
    (setup / "empty").mkdir()
    code, _, err = cli_here(capsys, monkeypatch, "train", "--resume", done.path, "--data-dir", setup / "empty")
    assert code == 1 and err.startswith(f"error: {done.path} is already complete (2 epochs)"), err


def test_a_resume_refuses_hand_edited_numbers_in_one_line_and_forgets_the_last_sessions_cache(setup, monkeypatch, capsys):
    done = run(load_config(setup / "files.yaml", ["train.epochs=1"]), runs_dir=setup / "runs", data_dir=setup / "data")
    summary = runs.read_json(done.path / runs.SUMMARY)
    runs.write_json(done.path / runs.SUMMARY, {**summary, "compile_seconds": "x"})
    code, _, err = cli_here(capsys, monkeypatch, "train", "--resume", done.path, "train.epochs=2")
    assert code == 1 and err == f"error: cannot read {done.path / runs.SUMMARY}: 'compile_seconds' should be a number, not 'x' (edited by hand?)\n"
    # a session with the compiled step cached, then one without train.compile: it no longer says so
    runs.write_json(done.path / runs.SUMMARY, {**summary, "compile_seconds": 0.004, "compiled_step_cached": True})
    code, out, err = cli_here(capsys, monkeypatch, "train", "--resume", done.path, "train.epochs=2")
    assert code == 0, err
    assert "compiled_step_cached" not in runs.read_json(done.path / runs.SUMMARY) and "from the cache" not in out
    import torch

    ckpt = torch.load(done.path / runs.CHECKPOINT, weights_only=False)
    torch.save({**ckpt, "epoch": -1}, done.path / runs.CHECKPOINT)
    code, _, err = cli_here(capsys, monkeypatch, "train", "--resume", done.path, "train.epochs=3")
    assert code == 1 and err == f"error: cannot resume from {done.path}: its checkpoint says epoch -1 (edited by hand?)\n"


def test_a_directory_missing_one_run_file_names_that_one(setup, monkeypatch, capsys):
    done = run(load_config(setup / "files.yaml", ["train.epochs=1"]), runs_dir=setup / "runs", data_dir=setup / "data")
    (done.path / runs.SUMMARY).unlink()
    code, _, err = cli_here(capsys, monkeypatch, "show", done.path)
    assert code == 1 and err == f"error: not a run directory: {done.path} has no summary.json\n"
    code, _, err = cli_here(capsys, monkeypatch, "show", "")
    assert code == 2 and err == "error: RUN_DIR is empty: give a run, study or sweep directory\n"


def test_runs_csv_keeps_whole_numbers_whole_and_a_narrow_table_keeps_accuracy_and_status(setup, monkeypatch, capsys):
    from cnnlab.report import console

    done = run(load_config(setup / "files.yaml", ["train.epochs=1", "name=" + "a_long_name" * 5]), runs_dir=setup / "runs", data_dir=setup / "data")
    other = run(load_config(setup / "files.yaml", ["train.epochs=1"]), runs_dir=setup / "runs", data_dir=setup / "data")
    summary = runs.read_json(other.path / runs.SUMMARY)
    runs.write_json(other.path / runs.SUMMARY, {**summary, "epochs": None})  # an older cnnlab's, or edited
    code, out, err = cli_here(capsys, monkeypatch, "runs", "--csv", "--runs-dir", setup / "runs")
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out), dtype=str, keep_default_na=False)
    assert sorted(table["epochs"]) == ["", "1"]  # not 1.0
    monkeypatch.setattr(console, "width", 60)
    code, out, err = cli_here(capsys, monkeypatch, "runs", "--runs-dir", setup / "runs")
    row = next(line for line in out.splitlines() if done.path.name in line)
    assert f"{done.summary['test_acc']:.2%}" in row and "completed" in row, out


@pytest.mark.parametrize("content", [b"hello\n", b""], ids=["text", "empty"])
def test_a_damaged_torch_file_is_told_as_such(tmp_path, content):
    """`echo hello > checkpoint.pt` was told 'cannot read .../checkpoint.pt: 101' (torch's KeyError
    on the first byte), an empty one 'EOFError'."""
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(RunError, match=r"checkpoint\.pt: not a file torch\.save wrote, or a damaged one \((KeyError|EOFError)"):
        runs.load_tensors(path)
