"""Shared test fixtures: where the real data is (when it is), a scratch runs directory, a full disk,
whether Ray is installed, and whether this machine has a CUDA device."""

import atexit
import errno
import importlib.util
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# where the real datasets may be: $CNNLAB_DATA_DIR, then ../shared/data (a data dir set for other
# work must not hide the shared copy from the real-data tests), then ./data (where `make cifar-data`
# builds CIFAR-10 when ../shared/data is read-only)
REAL_DATA_DIRS = [
    Path(p) for p in (os.environ.get("CNNLAB_DATA_DIR"), ROOT.parent / "shared" / "data", ROOT / "data") if p
]


# a suite started in the background by a shell without job control (`make test &` in a script)
# inherits SIGINT ignored, as does every process it starts: the tests of Ctrl-C found it ignored
# (exit 0 instead of 130). Python's own handler here: a process started from it gets SIGINT's default
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# the width cnnlab's tables are printed at is the tests' own (report.console_width: 120 off a
# terminal), not the shell's: with COLUMNS=80 set around the suite, tables wrapped their headers and
# the tests that read them failed (seen on the GPU machine, whose shell sets it); tests of COLUMNS set it
os.environ.pop("COLUMNS", None)

# train.compile's compiled steps (cnnlab/aot_step.py) go to a cache of the test session's own, which
# the CLI's subprocesses inherit: none in the user's ~/.cache, and none left from an earlier session
os.environ["CNNLAB_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnnlab-test-cache-")
atexit.register(shutil.rmtree, os.environ["CNNLAB_CACHE_DIR"], ignore_errors=True)

# cnnlab sweep needs Ray (the `ray` extra); a machine without it refuses every sweep in one line
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed (pip install 'cnnlab[ray]')")
# the tests only a GPU runs: scripts/gpu_report.sh runs each of them (test_cuda_graphs checks it names them)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def real_data(*parts: str) -> Path:
    """The first real data folder that holds files under parts, or skip the test when this machine
    has none (an empty folder left by a failed download does not count)."""
    for root in REAL_DATA_DIRS:
        folder = root.joinpath(*parts)
        if folder.is_dir() and any(folder.iterdir()):
            return root
    pytest.skip(f"real data not present at {' or '.join(str(r.joinpath(*parts)) for r in REAL_DATA_DIRS)}")


def no_room_for(monkeypatch, full) -> None:
    """A full disk for the files whose path full(path) picks: their os.replace fails with ENOSPC,
    the others are written."""
    real = os.replace

    def replace(src, dst):
        if full(Path(dst)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Small random MNIST and Fashion-MNIST IDX files (300 train / 100 test images each) and CIFAR-10
    pickled batches (120 images per batch)."""
    from fakedata import make_cifar, make_idx_dataset

    root = tmp_path_factory.mktemp("data")
    make_idx_dataset(root, "MNIST", n_train=300, n_test=100)
    make_idx_dataset(root, "FashionMNIST", n_train=300, n_test=100)
    make_cifar(root, n=120)
    return root


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    path = tmp_path / "runs"
    monkeypatch.setenv("CNNLAB_RUNS_DIR", str(path))
    return path
