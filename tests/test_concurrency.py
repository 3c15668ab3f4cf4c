"""Several cnnlab processes at once: their own run directories, a true status for a run in progress,
and a run whose process was killed outright shown as dead, then resumed."""

import io
import json
import os
import subprocess
from datetime import datetime

import pandas as pd
import pytest

from cnnlab.config import load_config
from cnnlab.errors import RunError
from cnnlab.experiment import run
from fakedata import make_idx_dataset
from test_errors import OK, cli, start
from test_resume import check_files, metrics, wait_for_epochs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrency")
    make_idx_dataset(root / "data", n_train=200, n_test=50)
    (root / "ok.yaml").write_text(OK)
    return root


def runs_table(runs_dir, *options) -> pd.DataFrame:
    out = cli("runs", "--csv", "--runs-dir", runs_dir, *options)
    assert out.returncode == 0, out.stderr
    return pd.read_csv(io.StringIO(out.stdout)) if out.stdout.strip() else pd.DataFrame(columns=["id", "status"])


def test_two_runs_started_together_get_their_own_directories(data, tmp_path):
    args = ("train", data / "ok.yaml", "train.epochs=3", "--data-dir", data / "data", "--runs-dir", tmp_path)
    procs = [start(*args), start(*args)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]

    dirs = [tmp_path / out.strip().splitlines()[-1].rsplit("/", 1)[-1] for out, _ in outs]
    assert dirs[0] != dirs[1] and sorted(dirs) == sorted(tmp_path.iterdir())
    for run_dir in dirs:
        summary = check_files(run_dir)
        assert summary["status"] == "completed" and summary["epochs"] == 3
    # same config, same seed: neither run touched the other's files, so their numbers agree
    pd.testing.assert_frame_equal(metrics(dirs[0]), metrics(dirs[1]))


def test_a_run_directory_name_taken_meanwhile_is_passed_over(tmp_path, monkeypatch):
    """Two runs of one config in one second that draw the same id: the second takes another, never the
    first's directory (the real runs above almost never draw alike, so this forces it)."""
    from cnnlab import runs

    ids = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(runs.secrets, "token_hex", lambda n: next(ids))
    monkeypatch.setattr(runs, "datetime", type("Frozen", (), {"now": staticmethod(lambda tz: datetime(2026, 11, 28, 1, 2, 3, tzinfo=tz))}))
    first, second = runs.new_run_dir(tmp_path, "cfg"), runs.new_run_dir(tmp_path, "cfg")
    assert (first.name, second.name) == ("20261128-010203-cfg-aaaaaa", "20261128-010203-cfg-bbbbbb")


def test_runs_lists_newest_first_by_start_time_not_by_name(tmp_path):
    """Sorted by directory name, a run renamed by hand (best_lenet) came above every run."""
    for name, started in [("best_lenet", "2024-06-01T00:00:00+00:00"), ("20261128-010203-a-aaaaaa", "2026-11-28T01:02:03+00:00"),
                          ("20250101-000000-b-bbbbbb", "2025-01-01T00:00:00+00:00"), ("no_time", None)]:
        (tmp_path / name).mkdir()
        summary = {"status": "completed", **({"started_at": started} if started else {})}
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    from cnnlab.runs import list_runs

    assert [r["id"] for r in list_runs(tmp_path)] == ["20261128-010203-a-aaaaaa", "20250101-000000-b-bbbbbb", "best_lenet", "no_time"]


def test_runs_shows_a_live_run_as_running_and_a_killed_one_as_dead(data, tmp_path):
    proc = start(
        "train", data / "ok.yaml", "train.epochs=100000", "--data-dir", data / "data", "--runs-dir", tmp_path,
        stdout=subprocess.DEVNULL,  # an epoch line every few milliseconds would fill a pipe nobody reads
    )
    try:
        run_id = wait_for_epochs(proc, tmp_path, 1).name
        table = runs_table(tmp_path)
        assert list(table["id"]) == [run_id] and list(table["status"]) == ["running"]

        # a second process must not resume a run that is still being trained
        cfg = load_config(tmp_path / run_id / "config.yaml")
        with pytest.raises(RunError, match="still being trained by process"):
            run(cfg, resume=tmp_path / run_id)
    finally:
        proc.kill()  # SIGKILL: no handler runs, nothing marks the run finished
        proc.wait()

    table = runs_table(tmp_path, "--status", "dead")
    assert list(table["id"]) == [run_id] and list(table["status"]) == ["dead"]
    summary = json.loads((tmp_path / run_id / "summary.json").read_text())
    assert summary["status"] == "running"  # the file is left as it was: the listing tells the truth

    # whatever moment the kill came, every file is whole and the run resumes from its last epoch
    run_dir = tmp_path / run_id
    done = pd.read_csv(run_dir / "metrics.csv")["epoch"].max()
    result = run(load_config(run_dir / "config.yaml", [f"train.epochs={done + 1}"]), resume=run_dir)
    assert check_files(run_dir)["status"] == "completed" and result.summary["epochs"] == done + 1


def test_a_glance_at_the_lock_does_not_refuse_a_trainer(tmp_path):
    """`cnnlab runs` takes the lock shared for an instant to see whether a run is alive; a resume
    starting in that instant waits it out instead of saying the run is being trained."""
    import fcntl
    import threading

    from cnnlab import runs

    fd = os.open(tmp_path / runs.LOCK, os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)
    threading.Timer(0.3, os.close, (fd,)).start()  # closing lets the shared lock go
    with runs.training_lock(tmp_path):
        assert runs.lock_held(tmp_path)


@pytest.mark.parametrize("columns, name", [(200, "fashion_cnn"), (100, "fashion_cnn"), (80, "fashion_cnn"), (80, "cifar10_trashnet_fixed_lr")])
def test_runs_on_a_narrow_terminal_leaves_columns_out_rather_than_squeezing_them(data, tmp_path, columns, name):
    """At 80 columns every cell but the whole ids used to shrink to an ellipsis ('r…', 'mn…', '89…').
    Now the least needed columns go, in this order, until the table fits, and a last line says which.
    A long config name's id left the status squeezed ('complet…') until model went too."""
    order = ["name", "kind", "train_seconds", "epochs", "dataset", "model"]
    run(load_config(data / "ok.yaml", ["train.epochs=1", f"name={name}"]), runs_dir=tmp_path, data_dir=data / "data")
    out = cli("runs", "--runs-dir", tmp_path, env={**os.environ, "COLUMNS": str(columns)})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(map(len, lines[:-1])) <= columns and "…" not in out.stdout
    header = lines[1]
    missing = [c for c in order if f" {c} " not in header]
    assert all(f" {c} " in header for c in ["id", "test_acc", "status"])
    assert missing == order[:len(missing)]  # in the order they go
    assert (missing == []) == (columns == 200)
    if missing:
        assert lines[-1] == f"(left out at {columns} columns: {', '.join(missing)}; --csv has them all)"
    else:
        assert lines[-1].startswith("└")


@pytest.mark.parametrize("columns, left_out", [(40, ["samples_per_sec", "epoch_seconds", "train_loss", "test_loss"]), (60, ["samples_per_sec", "epoch_seconds"]), (120, [])])
def test_the_epochs_and_layers_tables_leave_columns_out_rather_than_cut_numbers(data, tmp_path, columns, left_out):
    """At 40 columns train's and show's epochs table read '2.…', '1…' in every cell and summary's
    layers 'featur…', 'ZeroPa…'. Now whole columns go, in a fixed order, and a last line says which."""
    out = cli("train", data / "ok.yaml", "train.epochs=2", "--runs-dir", tmp_path, "--data-dir", data / "data",
              env={**os.environ, "COLUMNS": str(columns)})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "…" not in out.stdout and max(len(line) for line in lines if "│" in line) <= columns, out.stdout
    header = next(line for line in lines if line.startswith("┃"))
    shown = [c for c in ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_seconds", "samples_per_sec"] if f" {c} " in header]
    assert shown == [c for c in ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_seconds", "samples_per_sec"] if c not in left_out]
    note = f"(left out at {columns} columns: {', '.join(left_out)}; metrics.csv has them all)"
    assert (note in lines) == bool(left_out)
    shown_run = cli("show", lines[-1], env={**os.environ, "COLUMNS": str(columns)})
    assert shown_run.returncode == 0 and "│     2 │" in shown_run.stdout and ((note in shown_run.stdout.splitlines()) == bool(left_out)), shown_run.stdout
    layers = cli("summary", "lenet5_classic", env={**os.environ, "COLUMNS": str(max(columns, 50))})
    assert layers.returncode == 0 and "features.0" in layers.stdout and "ZeroPad2d" in layers.stdout and "…" not in layers.stdout, layers.stdout
    assert ("(left out at 50 columns: output size)" in layers.stdout) == (columns < 60)
    # a table with nothing to leave out (forward-check's) is printed whole, for the terminal to wrap
    checked = cli("forward-check", data / "ok.yaml", "--data-dir", data / "data", env={**os.environ, "COLUMNS": str(columns)})
    assert checked.returncode == 0 and "…" not in checked.stdout and " Linear " in checked.stdout and "e-0" in checked.stdout, checked.stdout


@pytest.mark.parametrize("columns", ["0", "abc", "-5", " "])
def test_a_columns_that_is_no_width_is_as_if_unset(data, tmp_path, columns):
    """COLUMNS=0 printed nothing at all (exit 0); abc, -5 or a blank made rich fit a pipe's tables
    to 80 columns, leaving columns out."""
    run(load_config(data / "ok.yaml", ["train.epochs=1", "name=a_rather_long_fashion_cnn_experiment_name"]),
        runs_dir=tmp_path, data_dir=data / "data")
    out = cli("runs", "--runs-dir", tmp_path, env={**os.environ, "COLUMNS": columns})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all(f" {c} " in lines[1] for c in ["id", "kind", "name", "dataset", "model", "epochs", "test_acc", "train_seconds", "status"]), out.stdout
    assert lines[-1].startswith("└")


def test_emoji_codes_in_a_run_id_and_a_path_are_printed_as_written(data, tmp_path):
    """rich turned ':fire:' into a flame: a run directory named so was listed as another id, and the
    runs directory's path in 'no runs in ...' changed."""
    empty = tmp_path / ":fire:"
    empty.mkdir()
    out = cli("runs", "--runs-dir", empty)
    assert out.returncode == 0 and out.stdout.strip() == f"no runs in {empty}", out.stdout
    runs_dir = tmp_path / "runs"
    result = run(load_config(data / "ok.yaml", ["train.epochs=1"]), runs_dir=runs_dir, data_dir=data / "data")
    result.path.rename(runs_dir / "b:fire:")  # a run directory renamed by hand
    out = cli("runs", "--runs-dir", runs_dir, env={**os.environ, "COLUMNS": "300"})
    assert " b:fire: " in out.stdout and "\U0001f525" not in out.stdout, out.stdout


def test_output_a_terminal_cannot_encode_is_replaced_not_a_traceback(data, tmp_path):
    """An ASCII (or cp1252) stdout ended `cnnlab configs` in a UnicodeEncodeError traceback at its '…'."""
    out = cli("configs", env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert out.returncode == 0 and "Traceback" not in out.stderr and out.stderr == "", out.stderr
    assert "mnist_cnn" in out.stdout


def test_runs_into_a_pipe_shows_every_column(data, tmp_path):
    """A pipe or a file (`cnnlab runs | less`) has no width: it used to be fitted to 120 columns, leaving
    out name, kind, train_seconds and epochs of a long-named run. Now every column is there, whole."""
    run(load_config(data / "ok.yaml", ["train.epochs=1", "name=a_rather_long_fashion_cnn_experiment_name"]),
        runs_dir=tmp_path, data_dir=data / "data")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = cli("runs", "--runs-dir", tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all(f" {c} " in lines[1] for c in ["id", "kind", "name", "dataset", "model", "epochs", "test_acc", "train_seconds", "status"])
    assert max(map(len, lines)) > 120 and "…" not in out.stdout  # wider than the console's default
    assert " a_rather_long_fashion_cnn_experiment_name " in lines[3] and lines[-1].startswith("└")  # no footnote
