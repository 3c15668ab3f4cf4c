"""Dataset registry and loaders: name -> (train, test) uint8 tensors with classes and mean/std
(float32 for the built-in toy dataset, which has no files).

cnnlab parses the files itself (IDX for MNIST and Fashion-MNIST, the python pickles of CIFAR-10),
laid out as torchvision lays them out under the data directory. torchvision is only used, lazily,
to download and extract files that are missing, into a scratch folder: only the files missing are
moved into place, never over one the user has. Every problem a user can cause becomes one
DataError line.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import math
import os
import pickle
import socket
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.config import DATASET_SHAPES, Config
from cnnlab.errors import ConfigError, DataError
from cnnlab.runs import file_in_the_way, nearest_existing

DATA_DIR_ENV = "CNNLAB_DATA_DIR"
DEFAULT_DATA_DIR = "data"
DOWNLOAD_TIMEOUT_S = 60  # per connect or read: torchvision's urlopen has none, and a stalled connection waits forever


@dataclass
class Split:
    """One split, loaded whole. Shared through an in-process cache: callers must not mutate it."""

    images: torch.Tensor  # uint8, (N, C, H, W), contiguous, on CPU (the built-in toy: float32, already scaled)
    labels: torch.Tensor  # int64, (N,)
    classes: list[str]  # class names, index = label
    mean: tuple[float, ...]  # per-channel training-set mean on the 0..1 scale (published constants)
    std: tuple[float, ...]


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # registry key, e.g. 'fashion-mnist'
    title: str  # how messages name it, e.g. 'Fashion-MNIST'
    folder: str  # where the files sit, relative to the data directory
    train_files: tuple[str, ...]  # IDX: (images, labels); CIFAR: the batches
    test_files: tuple[str, ...]
    torchvision_class: str  # the torchvision.datasets class that downloads it
    format: str  # 'idx', 'cifar' or 'builtin' (no files): which reader makes the splits
    classes: tuple[str, ...]  # CIFAR-10: fallback when batches.meta is absent
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        return DATASET_SHAPES[self.name]

    @property
    def required_files(self) -> tuple[str, ...]:
        return self.train_files + self.test_files

    @property
    def file_kind(self) -> str:
        """How messages name one of its files."""
        return "an IDX file" if self.format == "idx" else "a CIFAR batch"


_IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_META = "batches.meta"

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", "MNIST", "MNIST/raw", _IDX_TRAIN, _IDX_TEST, "MNIST", "idx",
        classes=tuple(str(i) for i in range(10)), mean=(0.1307,), std=(0.3081,),
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "Fashion-MNIST", "FashionMNIST/raw", _IDX_TRAIN, _IDX_TEST, "FashionMNIST", "idx",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        mean=(0.2860,), std=(0.3530,),
    ),
    "cifar10": DatasetInfo(
        "cifar10", "CIFAR-10", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "CIFAR10", "cifar",
        classes=("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"),
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    ),
    # the first article's toy: two 4x4 examples, nothing to read; mean 0 / std 1 leave them as they are
    "toy": DatasetInfo("toy", "Toy 4x4", "", (), (), "", "builtin", classes=("0", "1"), mean=(0.0,), std=(1.0,)),
}

# The toy's two examples as the article writes them (label 0, then label 1), divided by 8 there too.
# They can be negative, so they are kept as float32 (already scaled) instead of uint8 0..255.
TOY_EXAMPLES = (
    ([[1, 2, 3, 4], [2, 3, 4, 5], [5, 6, 7, 8], [1, 3, 4, 5]], 0),
    ([[-1, 2, 3, -4], [2, -3, 4, 5], [-5, 6, -7, 8], [-1, -3, -4, -5]], 1),
)


# ---------------------------------------------------------------------------- public entry points
def resolve_data_dir(cli_value: str | None = None, config_value: str | None = None) -> Path:
    """--data-dir, else the config's dataset.data_dir, else $CNNLAB_DATA_DIR, else ./data"""
    value = str(cli_value or config_value or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
    if "\0" in value:  # no OS takes it: resolve() would raise ValueError
        raise DataError(f"data directory {value!r} contains a NUL byte")
    try:
        return _absolute(value)
    except RuntimeError as e:  # ~ of no such user
        raise DataError(f"cannot reach the data directory {value}: {e}") from None


def _absolute(path: str | Path) -> Path:
    """path made absolute, its links left as they are: a link to nothing (a drive not mounted) is
    refused by _ensure_files as a link, not followed to create its target and download there."""
    return Path(os.path.abspath(Path(path).expanduser()))


def _resolved(root: Path) -> Path:
    try:
        return root.resolve()
    except RuntimeError as e:  # a symlink loop
        raise DataError(f"cannot reach the data directory {root}: {e}") from None


def load_dataset(name: str, data_dir: Path, download: bool = True) -> tuple[Split, Split]:
    """(train, test). Raises cnnlab.errors.DataError with ONE clear line on any problem.

    Parsed splits are cached per (name, directory, the files' sizes and times) for the life of the
    process, so the returned tensors are shared between callers: never modify them in place (index
    or clone instead). A file changed on disk is parsed again.
    """
    info = DATASETS.get(name)
    if info is None:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    root = _absolute(data_dir)
    _ensure_files(info, root, download)
    return _cached_splits(info, root)


def load_splits(cfg: Config, data_dir: str | Path | None = None, stored: bool = False) -> tuple[Split, Split]:
    """load_dataset of a config's dataset section, from --data-dir (data_dir) or where the config says;
    ConfigError when its train_subset or test_subset asks for more images than the split holds. stored:
    a run's own config, which an earlier cnnlab may have run with a larger subset, cut to the split
    (as slicing with it still does): not refused, or the run could no longer be resumed or checked."""
    train, test = load_dataset(cfg.dataset.name, resolve_data_dir(data_dir, cfg.dataset.data_dir), cfg.dataset.download)
    if not stored:
        _check_subsets(cfg, len(train.labels), len(test.labels))
    return train, test


def check_subsets(cfg: Config, data_dir: str | Path | None = None) -> None:
    """load_splits' refusal of a subset larger than its split, reading only the split sizes of files
    check_files has made sure of: a study checks every cell still to train before its first one does."""
    if cfg.dataset.train_subset is None and cfg.dataset.test_subset is None:
        return  # nothing to read
    _check_subsets(cfg, *_split_sizes(DATASETS[cfg.dataset.name], resolve_data_dir(data_dir, cfg.dataset.data_dir)))


def _check_subsets(cfg: Config, n_train: int, n_test: int) -> None:
    """A subset larger than its split is refused, not cut to it: a run would use fewer images than
    its config.yaml and summary.json say."""
    for key, split, size in (("train_subset", "training", n_train), ("test_subset", "test", n_test)):
        n = getattr(cfg.dataset, key)
        if n is not None and n > size:
            raise ConfigError(
                f"dataset.{key}={n} is more than the {size:,} images of the {cfg.dataset.name} {split} split; "
                f"ask for {size:,} or fewer, or leave it out to use them all"
            )


def check_files(name: str, data_dir: Path, download: bool = True) -> None:
    """Make sure a dataset's files are there (downloading them when allowed) without reading them:
    a study checks every member's data before its first cell trains. DataError when they are not."""
    info = DATASETS.get(name)
    if info is None:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    _ensure_files(info, _absolute(data_dir), download)


# ---------------------------------------------------------------------------- finding and downloading
def _existing(info: DatasetInfo, folder: Path, filename: str) -> Path | None:
    """The file, or its .gz version when only that is there, or None; a directory in its place (and
    no file) is a DataError, not a missing file: no download can put the file there."""
    paths = (folder / filename, folder / (filename + ".gz"))
    try:
        for path in paths:
            if path.is_file():
                return path
        for path in paths:
            if path.is_dir():
                raise DataError(f"{path} is a directory, not {info.file_kind}")
    except OSError as e:  # is_file() is False for "not there" but raises for a folder we may not search
        raise DataError(f"cannot read {path}: {_one_line(e)}") from None
    return None


def _missing(info: DatasetInfo, folder: Path) -> list[str]:
    return [f for f in info.required_files if _existing(info, folder, f) is None]


def _not_found(info: DatasetInfo, folder: Path, failure: str | None = None) -> str:
    """One line naming the files still missing (all of them: the dataset is not there at all)."""
    missing = _missing(info, folder) or list(info.required_files)
    download = f" and the download failed ({failure})" if failure else ""
    where = f"not found in {folder}" if len(missing) == len(info.required_files) else f"incomplete in {folder}"
    return (
        f"{info.title} {where}{download}; put {', '.join(missing)} there, "
        f"or point --data-dir / {DATA_DIR_ENV} at a folder that has them"
    )


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ensure_files(info: DatasetInfo, root: Path, download: bool) -> None:
    """Return when the files are in place; download them first when allowed."""
    folder = root / info.folder
    if not _missing(info, folder):
        return
    existing = nearest_existing(folder)
    if not existing.is_dir():  # a file (or a link to nothing) where the folder or a parent should be: no download can make it
        raise DataError(file_in_the_way(folder, existing, f"folder for {info.title}"))
    if not download:
        raise DataError(_not_found(info, folder))
    new_dirs = [d for d in (folder, *folder.parents) if not d.exists()]  # deepest first
    default_timeout = socket.getdefaulttimeout()
    try:
        import torchvision.datasets

        folder.mkdir(parents=True, exist_ok=True)
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        # torchvision fetches every file and extracts over what is there (a copy of the user's own
        # among them): it works in a scratch folder inside the dataset's (the same disk whatever
        # links lead there: moves are renames), which takes with it a file cut off, an error page
        # that failed its md5, and the archives
        with tempfile.TemporaryDirectory(prefix=".cnnlab-download-", dir=folder, ignore_cleanup_errors=True) as scratch:
            getattr(torchvision.datasets, info.torchvision_class)(root=scratch, train=True, download=True)
            _move_missing(info, Path(scratch) / info.folder, folder)
    except Exception as e:  # no network, a stalled one, a refused md5, a full disk, ...
        failure = _one_line(e)
    except BaseException:  # Ctrl-C: the folders made for the download go too
        _remove_empty(new_dirs)
        raise
    else:
        if not _missing(info, folder):
            return
        failure = "files still missing afterwards"  # _not_found names them
    finally:
        socket.setdefaulttimeout(default_timeout)
    _remove_empty(new_dirs)
    raise DataError(_not_found(info, folder, failure))


def _move_missing(info: DatasetInfo, fetched: Path, folder: Path) -> None:
    """Move into folder what the download put in fetched and folder lacks: each required file (as it
    is there, or as its .gz) that folder has in neither form, and the others (CIFAR-10's
    batches.meta and readme.html) that it does not have. Nothing folder has is replaced, a link to nothing neither."""
    required = {name for f in info.required_files for name in (f, f + ".gz")}
    sources = [_existing(info, fetched, name) for name in _missing(info, folder)]
    sources += [p for p in fetched.iterdir() if p.name not in required and p.is_file()] if fetched.is_dir() else []
    for source in filter(None, sources):
        if not os.path.lexists(folder / source.name):
            os.replace(source, folder / source.name)


def _remove_empty(dirs: list[Path]) -> None:
    """rmdir each (deepest first) that a failed or interrupted download left empty; one that holds a file stays."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:  # not empty, never made, or not a directory
            pass


def _data_files(info: DatasetInfo, folder: Path) -> set[Path]:
    """The files in folder that would be read as the dataset's: its required files and their .gz."""
    paths = (folder / name for f in info.required_files for name in (f, f + ".gz"))
    return {path for path in paths if path.is_file()}


def _cached_splits(info: DatasetInfo, root: Path) -> tuple[Split, Split]:
    """The splits in root, parsed once a process: one copy in memory however the folder is reached
    (resolved), parsed again when a file has changed (its size, time or inode: a copy replaced, or
    cut short, between two runs of a study)."""
    root = _resolved(root)
    stamps = []
    for path in sorted(_data_files(info, root / info.folder)) if info.format != "builtin" else []:
        try:
            st = path.stat()
        except OSError:  # gone meanwhile: reading it says so, in one line
            continue
        stamps.append((str(path), st.st_size, st.st_mtime_ns, st.st_ino))
    return _read_splits(info.name, root, tuple(stamps))


@functools.lru_cache(maxsize=8)
def _read_splits(name: str, root: Path, stamps: tuple = ()) -> tuple[Split, Split]:
    """The parsed splits of dataset name in root; stamps: its files' (see _cached_splits), in the
    cache's key alone."""
    info = DATASETS[name]
    folder = root / info.folder
    if info.format == "builtin":  # the toy: one set of examples serves as both splits
        images = torch.tensor([x for x, _ in TOY_EXAMPLES], dtype=torch.float32).div_(8).unsqueeze(1)
        labels = torch.tensor([y for _, y in TOY_EXAMPLES])
        return tuple(Split(images, labels, list(info.classes), info.mean, info.std) for _ in range(2))
    if info.format == "idx":
        read = functools.partial(_read_idx_split, info, folder)
        classes = list(info.classes)
    else:
        read = functools.partial(_read_cifar_split, info, folder)
        classes = _read_cifar_classes(info, folder)

    def split(files: tuple[str, ...]) -> Split:
        images, labels = read(files)
        if not len(labels):  # would train on nothing, or test to 0%, and exit 0
            raise DataError(f"{info.title} in {folder}: no images in {', '.join(files)}")
        return Split(images, labels, classes, info.mean, info.std)

    return split(info.train_files), split(info.test_files)


def _split_sizes(info: DatasetInfo, root: Path) -> tuple[int, int]:
    """How many images the (train, test) splits hold: an IDX split's from its small label file alone,
    the others' as loaded (cached for the training that follows)."""
    if info.format != "idx":
        return tuple(len(split.labels) for split in _cached_splits(info, root))
    folder = root / info.folder
    return tuple(len(read_idx(_existing(info, folder, labels), IDX_LABELS_MAGIC)) for _, labels in (info.train_files, info.test_files))


def _open(path: Path):
    """The file opened for binary reading, decompressing a .gz on the fly."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _read_bytes(path: Path) -> bytearray:
    """The file's bytes in a mutable buffer, so numpy and torch can share it without a warning."""
    try:
        with _open(path) as f:
            return bytearray(f.read())
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {_one_line(e)}") from None


def _check_labels(labels: np.ndarray, n_classes: int, path: Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels.max() if labels.max() >= n_classes else labels.min()
        raise DataError(f"{path}: label {int(bad)} is outside 0..{n_classes - 1}")


# ---------------------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes, checking magic number and size; returns the array."""
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, shorter than its {header}-byte header)")
    (found,) = struct.unpack_from(">I", data, 0)
    if found != magic:
        raise DataError(f"{path}: bad magic number 0x{found:08x}, expected 0x{magic:08x}; not an IDX file of this kind")
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    expected = header + math.prod(dims)  # Python's ints: a forged header's sizes could pass 2**63
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long"
        shape = "x".join(map(str, dims))
        raise DataError(f"{path}: {what}: {len(data)} bytes, but the header ({shape}) says {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_split(info: DatasetInfo, folder: Path, files: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    image_path, label_path = (_existing(info, folder, f) for f in files)
    images = read_idx(image_path, IDX_IMAGES_MAGIC)
    labels = read_idx(label_path, IDX_LABELS_MAGIC)
    c, h, w = info.shape
    if images.shape[1:] != (h, w):
        raise DataError(f"{image_path}: images are {images.shape[1]}x{images.shape[2]}, expected {h}x{w} for {info.title}")
    if len(images) != len(labels):
        raise DataError(f"{image_path.name} has {len(images)} images but {label_path.name} has {len(labels)} labels (in {folder})")
    _check_labels(labels, len(info.classes), label_path)
    return torch.from_numpy(images).view(len(images), c, h, w), torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------- CIFAR-10 python pickles
def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """What protocol-2 pickles call to rebuild bytes; only the latin1 codec is let through."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"unexpected codec {encoding!r}")
    return codecs.encode(text, "latin1")


_NP_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_NP_SCALAR = np.int64(0).__reduce__()[0]
_NP_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # how protocol 5 (pickle.HIGHEST_PROTOCOL) rebuilds arrays
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _NP_SCALAR,
    ("numpy._core.multiarray", "scalar"): _NP_SCALAR,
    ("numpy.core.numeric", "_frombuffer"): _NP_FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _NP_FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    # builtins under Python 2's name too: what Python 2 writes, and Python 3 at protocols 0-2 (fix_imports)
    **{(module, f.__name__): f for module in ("builtins", "__builtin__") for f in (bytes, bytearray, set, frozenset)},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, strings and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise DataError(f"refusing to unpickle {module}.{name}") from None


def _text(value: object) -> object:
    """bytes as str: what pickle.load(f, encoding='bytes'), the CIFAR-10 page's own loader, makes of
    the official files' strings (b'data', b'labels', b'label_names'), and so what a copy it re-pickles holds."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def read_pickle(path: Path) -> object:
    """Load a CIFAR pickle with the restricted unpickler (a dict's bytes keys as str); any failure
    is one DataError line."""
    try:
        with _open(path) as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
        return {_text(k): v for k, v in obj.items()} if isinstance(obj, dict) else obj
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {_one_line(e)}") from None
    except Exception as e:  # truncated, garbage, wrong types inside: all "corrupt"
        raise DataError(f"{path}: not a valid CIFAR pickle ({_one_line(e)})") from None


def _read_cifar_batch(path: Path, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
    batch = read_pickle(path)
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: not a CIFAR batch (expected a dict with 'data' and 'labels')")
    data, labels = batch["data"], batch["labels"]
    size = int(np.prod(info.shape))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != size:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be uint8 of shape (N, {size}), got {got}")
    try:
        labels = np.asarray(labels)
        if labels.size and labels.dtype.kind not in "iu":  # 2.7 would be read as 2
            raise TypeError
        labels = labels.astype(np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: 'labels' must be a list of integers") from None
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but 'labels' has shape {labels.shape}")
    _check_labels(labels, len(info.classes), path)
    return data, labels


def _read_cifar_split(info: DatasetInfo, folder: Path, files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [_read_cifar_batch(_existing(info, folder, f), info) for f in files]
    images = np.concatenate([d for d, _ in batches]).reshape(-1, *info.shape)  # R, G, B planes
    labels = np.concatenate([l for _, l in batches])
    return torch.from_numpy(images), torch.from_numpy(labels)


def _read_cifar_classes(info: DatasetInfo, folder: Path) -> list[str]:
    """Class names from batches.meta, or the standard ones when that file is absent."""
    path = folder / _CIFAR_META
    if not path.is_file():
        return list(info.classes)
    meta = read_pickle(path)
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if isinstance(names, list):
        names = [_text(n) for n in names]
    if not isinstance(names, list) or len(names) != len(info.classes) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: expected a dict whose 'label_names' lists {len(info.classes)} class names")
    return names
