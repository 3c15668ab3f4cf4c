"""Shared test fixtures: where the real data is (when it is), and a scratch runs directory."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("CNNLAB_DATA_DIR") or ROOT.parent / "shared" / "data")


def real_data(*parts: str) -> Path:
    """The real dataset folder, or skip the test when this machine has none."""
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present at {path}")
    return REAL_DATA


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
