"""Small dataset files in the real formats (IDX for the MNISTs, pickled batches for CIFAR-10).

Tests write these into tmp_path and load them through cnnlab's real loading code.
"""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, gz: bool = False) -> None:
    """An IDX file of unsigned bytes: big-endian magic, one big-endian uint32 per dimension, data."""
    magic = 0x00000800 | array.ndim if magic is None else magic
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if gz:
        Path(str(path) + ".gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def make_idx_dataset(root: Path, folder: str = "MNIST", n_train: int = 12, n_test: int = 5, gz: bool = False):
    """Random 28x28 images and labels under root/<folder>/raw; returns {split: (images, labels)}."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(raw / IDX_FILES[split][0], images, gz=gz)
        write_idx(raw / IDX_FILES[split][1], labels, gz=gz)
        written[split] = (images, labels)
    return written


def write_pickle(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "batch_label": f"batch {seed}",
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        "labels": [int(v) for v in rng.integers(0, 10, size=n)],
        "filenames": [f"img_{seed}_{i}.png" for i in range(n)],
    }


def make_cifar(root: Path, n: int = 4, meta: bool = True) -> dict[str, dict]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {name: cifar_batch(n, seed) for seed, name in enumerate(names)}
    for name, batch in batches.items():
        write_pickle(folder / name, batch)
    if meta:
        labels = [f"class{i}" for i in range(10)]
        write_pickle(folder / "batches.meta", {"label_names": labels, "num_cases_per_batch": n, "num_vis": 3072})
    return batches
