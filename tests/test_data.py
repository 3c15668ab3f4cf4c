"""cnnlab.data: the IDX and CIFAR readers on small files written here, errors, and the real data."""

import os
import pickle
import pickletools
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import DATASETS, check_subsets, load_dataset, load_splits, read_pickle, resolve_data_dir
from cnnlab.errors import ConfigError, DataError
from conftest import real_data
from fakedata import IDX_FILES, cifar_batch, make_cifar, make_idx_dataset, write_idx, write_pickle

def load_error(*args, **kwargs) -> str:
    """The DataError message of load_dataset(...), checked to be a single line."""
    with pytest.raises(DataError) as info:
        load_dataset(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


# ---------------------------------------------------------------------------- IDX
def test_mnist_from_idx_files(tmp_path):
    written = make_idx_dataset(tmp_path, "MNIST")
    train, test = load_dataset("mnist", tmp_path, download=False)
    for key, split in (("train", train), ("test", test)):
        expected_images, expected_labels = written[key]
        assert split.images.dtype == torch.uint8 and split.images.is_contiguous()
        assert split.images.shape == (len(expected_images), 1, 28, 28)
        assert split.labels.dtype == torch.int64
        assert np.array_equal(split.images[:, 0].numpy(), expected_images)
        assert split.labels.tolist() == expected_labels.tolist()
        assert split.classes == [str(i) for i in range(10)]
        assert (split.mean, split.std) == ((0.1307,), (0.3081,))


def test_fashion_mnist_reads_gz_files(tmp_path):
    written = make_idx_dataset(tmp_path, "FashionMNIST", gz=True)
    assert not (tmp_path / "FashionMNIST/raw/train-images-idx3-ubyte").exists()
    train, test = load_dataset("fashion-mnist", tmp_path, download=False)
    assert np.array_equal(test.images[:, 0].numpy(), written["test"][0])
    assert train.labels.tolist() == written["train"][1].tolist()
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot" and len(train.classes) == 10
    assert (train.mean, train.std) == ((0.2860,), (0.3530,))


def test_parsed_splits_are_cached(tmp_path):
    make_idx_dataset(tmp_path, "MNIST")
    first = load_dataset("mnist", tmp_path, download=False)
    assert load_dataset("mnist", str(tmp_path / "."), download=False) is first


def test_a_file_changed_on_disk_is_read_again_not_served_from_the_cache(tmp_path):
    """The cache kept the first parse for the life of the process: a file replaced between two runs
    of a study gave the old pixels, and one cut short after the first load was accepted."""
    make_idx_dataset(tmp_path, "MNIST", n_train=12, n_test=5)
    first, _ = load_dataset("mnist", tmp_path, download=False)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    write_idx(images, np.full((12, 28, 28), 7, np.uint8))
    again, _ = load_dataset("mnist", tmp_path, download=False)
    assert again is not first and int(again.images.min()) == int(again.images.max()) == 7
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated: "):
        load_dataset("mnist", tmp_path, download=False)


def test_a_study_checking_subsets_through_a_symbolic_link_parses_cifar_once(tmp_path):
    """The subset check read the splits under the path as given, training under the resolved one:
    a data directory reached through a link parsed CIFAR-10 twice and held it twice (180 MB)."""
    import cnnlab.data
    from cnnlab.config import config_from_dict

    make_cifar(tmp_path / "real", n=4)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    cfg = config_from_dict({"name": "t", "dataset": {"name": "cifar10", "train_subset": 10, "test_subset": 2}, "model": {"name": "fc"}})
    cnnlab.data._read_splits.cache_clear()
    cnnlab.data.check_subsets(cfg, tmp_path / "link")
    load_splits(cfg, tmp_path / "link")
    info = cnnlab.data._read_splits.cache_info()
    assert (info.misses, info.hits) == (1, 1), info


def append_bytes(path: Path, extra: bytes) -> None:
    path.write_bytes(path.read_bytes() + extra)


@pytest.mark.parametrize(
    "name, change, expected",
    [
        ("train-labels-idx1-ubyte", lambda p: write_idx(p, np.zeros(12, np.uint8), magic=0x803),
         "bad magic number 0x00000803, expected 0x00000801"),
        ("t10k-images-idx3-ubyte", lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated: "),
        ("train-images-idx3-ubyte", lambda p: p.write_bytes(b"\x00\x00\x08"), "shorter than its 16-byte header"),
        ("train-images-idx3-ubyte", lambda p: p.write_bytes(b"\x00\x00\x08\x03" + b"\xff" * 12),  # sizes whose product passes 2**63
         f"truncated: 16 bytes, but the header (4294967295x4294967295x4294967295) says {16 + (2**32 - 1) ** 3}"),
        ("t10k-labels-idx1-ubyte", lambda p: append_bytes(p, b"\x00"), "too long: 14 bytes, but the header (5) says 13"),
        ("train-images-idx3-ubyte", lambda p: write_idx(p, np.zeros((12, 32, 32), np.uint8)), "32x32, expected 28x28"),
        ("train-labels-idx1-ubyte", lambda p: write_idx(p, np.zeros(11, np.uint8)),
         "12 images but train-labels-idx1-ubyte has 11 labels"),
        ("t10k-labels-idx1-ubyte", lambda p: write_idx(p, np.full(5, 10, np.uint8)), "label 10 is outside 0..9"),
    ],
)
def test_malformed_idx_file(tmp_path, name, change, expected):
    make_idx_dataset(tmp_path, "MNIST")
    change(tmp_path / "MNIST" / "raw" / name)
    message = load_error("mnist", tmp_path, download=False)
    assert name in message and expected in message


def test_an_empty_split_is_an_error(tmp_path):
    """A split of no images would train on nothing or report 0% test accuracy, exit 0."""
    make_idx_dataset(tmp_path, "MNIST", n_test=0)
    message = load_error("mnist", tmp_path, download=False)
    assert message == f"MNIST in {tmp_path / 'MNIST' / 'raw'}: no images in t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
    make_idx_dataset(tmp_path / "no-train", "MNIST", n_train=0)
    message = load_error("mnist", tmp_path / "no-train", download=False)
    assert message == f"MNIST in {tmp_path / 'no-train' / 'MNIST' / 'raw'}: no images in train-images-idx3-ubyte, train-labels-idx1-ubyte"
    make_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(cifar_batch(0, 0), protocol=4))
    assert load_error("cifar10", tmp_path, download=False).endswith(": no images in test_batch")


def test_corrupt_gz_file(tmp_path):
    make_idx_dataset(tmp_path, "MNIST", gz=True)
    (tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    assert "cannot read" in load_error("mnist", tmp_path, download=False)


def test_a_folder_without_search_permission(tmp_path, monkeypatch):
    """stat() in a folder the user may not search fails with EACCES (simulated: root ignores modes)."""
    make_idx_dataset(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if Path(path).parent == raw:
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    message = load_error("mnist", tmp_path, download=False)
    assert message == f"cannot read {raw / 'train-images-idx3-ubyte'}: PermissionError: [Errno 13] Permission denied: '{raw / 'train-images-idx3-ubyte'}'"


# ---------------------------------------------------------------------------- missing files and downloads
def test_missing_files_without_download(tmp_path):
    message = load_error("mnist", tmp_path, download=False)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "CNNLAB_DATA_DIR" in message
    assert "download" not in message
    assert "put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte there" in message


def test_incomplete_idx_files_name_only_the_missing_one(tmp_path):
    make_idx_dataset(tmp_path, "FashionMNIST", gz=True)
    (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    message = load_error("fashion-mnist", tmp_path, download=False)
    assert message.startswith(f"Fashion-MNIST incomplete in {tmp_path / 'FashionMNIST' / 'raw'}; put t10k-labels-idx1-ubyte there")
    assert "train-images" not in message

@pytest.fixture
def fake_torchvision(monkeypatch):
    """Stand-in torchvision.datasets (importing the real one takes seconds); set classes on it."""
    datasets = types.ModuleType("torchvision.datasets")
    torchvision = types.ModuleType("torchvision")
    torchvision.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    return datasets


def test_missing_files_when_the_download_fails(tmp_path, fake_torchvision):
    def no_network(root, train, download):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirror: no network")

    fake_torchvision.FashionMNIST = no_network
    message = load_error("fashion-mnist", tmp_path, download=True)
    assert message.startswith(f"Fashion-MNIST not found in {tmp_path / 'FashionMNIST' / 'raw'} and the download failed (")
    assert "no network" in message and "--data-dir" in message


def test_download_then_read_with_own_reader(tmp_path, fake_torchvision):
    calls = []

    def fake_mnist(root, train, download):
        calls.append((root, train, download))
        make_idx_dataset(Path(root), "MNIST", n_train=3, n_test=2)

    fake_torchvision.MNIST = fake_mnist
    train, test = load_dataset("mnist", tmp_path)
    # into a scratch folder inside the dataset's, gone once its files are moved into place
    ((scratch, train_split, download),) = calls
    raw = tmp_path.resolve() / "MNIST" / "raw"
    assert Path(scratch).parent == raw and Path(scratch).name.startswith(".cnnlab-download-") and train_split and download
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX_FILES["train"] + IDX_FILES["test"])
    assert (len(train.labels), len(test.labels)) == (3, 2)


def test_a_download_works_where_a_link_leads_the_dataset_folder(tmp_path, fake_torchvision):
    """The scratch folder sat in the data directory: with MNIST/ a link to another disk, moving the
    files from it failed (EXDEV) after every full download. It now sits inside the dataset's folder,
    wherever the links lead."""
    calls = []
    fake_torchvision.MNIST = lambda root, train, download: calls.append(root) or make_idx_dataset(Path(root), "MNIST", n_train=3, n_test=2)
    (tmp_path / "disk" / "MNIST").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "MNIST").symlink_to(tmp_path / "disk" / "MNIST")
    train, _ = load_dataset("mnist", tmp_path / "data")
    assert len(train.labels) == 3 and Path(calls[0]).parent.resolve() == (tmp_path / "disk" / "MNIST" / "raw").resolve()
    assert sorted(p.name for p in (tmp_path / "disk" / "MNIST" / "raw").iterdir()) == sorted(IDX_FILES["train"] + IDX_FILES["test"])


def test_a_cifar_download_brings_batches_meta_and_keeps_the_users(tmp_path, fake_torchvision):
    """Only the required files were moved from the scratch folder: batches.meta (the class names,
    which torchvision's own CIFAR10 needs) went with it."""
    fake_torchvision.CIFAR10 = lambda root, train, download: make_cifar(Path(root), n=4)
    train, _ = load_dataset("cifar10", tmp_path / "a")
    assert train.classes == [f"class{i}" for i in range(10)] and (tmp_path / "a" / "cifar-10-batches-py" / "batches.meta").is_file()
    folder = tmp_path / "b" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    write_pickle(folder / "batches.meta", {"label_names": [f"mine{i}" for i in range(10)]})  # the user's: kept
    train, _ = load_dataset("cifar10", tmp_path / "b")
    assert train.classes == [f"mine{i}" for i in range(10)]


def test_a_download_never_overwrites_the_users_own_files(tmp_path, fake_torchvision):
    """torchvision fetches all four files and extracts them over what is there: a user's own copy of
    one (re-encoded, say), with another missing, was replaced by the official file."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", np.full((3, 28, 28), 7, np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8), gz=True)  # the user's, compressed
    mine = {p.name: p.read_bytes() for p in raw.iterdir()}
    fake_torchvision.MNIST = lambda root, train, download: make_idx_dataset(Path(root), "MNIST", n_train=3, n_test=2)

    train, test = load_dataset("mnist", tmp_path)
    assert {name: (raw / name).read_bytes() for name in mine} == mine and bool((train.images == 7).all())
    assert (test.labels == 0).all()
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte.gz"]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["MNIST"]


def test_download_that_leaves_files_missing(tmp_path, fake_torchvision):
    fake_torchvision.CIFAR10 = lambda root, train, download: None
    message = load_error("cifar10", tmp_path)
    assert "download failed (files still missing afterwards); put data_batch_1, data_batch_2" in message
    assert message.count("test_batch") == 1


def test_a_data_dir_that_links_to_nothing_is_refused_not_followed(tmp_path, fake_torchvision):
    """The path was resolved first: the link's target was created and the download went there (for
    a link to a drive not mounted, under the bare mount point)."""
    fake_torchvision.MNIST = lambda root, train, download: make_idx_dataset(Path(root), "MNIST", n_train=3, n_test=2)
    (tmp_path / "data").symlink_to(tmp_path / "drive" / "data")
    message = load_error("mnist", tmp_path / "data")
    assert message == f"cannot create the folder for MNIST {tmp_path / 'data' / 'MNIST' / 'raw'}: {tmp_path / 'data'} is a broken symbolic link"
    assert not (tmp_path / "drive").exists()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")  # a link that leads to itself leads nowhere too
    assert load_error("mnist", tmp_path / "loop" / "data").endswith(f"{tmp_path / 'loop'} is a broken symbolic link")
    (tmp_path / "drive" / "data").mkdir(parents=True)  # mounted: read through the link
    train, _ = load_dataset("mnist", tmp_path / "data")
    assert len(train.labels) == 3 and (tmp_path / "drive" / "data" / "MNIST" / "raw").is_dir()


def test_a_failed_download_removes_the_empty_folders_it_made(tmp_path, fake_torchvision):
    def no_network(root, train, download):  # what torchvision does: make <root>/MNIST/raw, then fail
        (Path(root) / "MNIST" / "raw").mkdir(parents=True)
        raise RuntimeError("no network")

    fake_torchvision.MNIST = no_network
    (tmp_path / "old_empty").mkdir()
    assert "download failed (RuntimeError: no network)" in load_error("mnist", tmp_path / "absent" / "data")
    assert "download failed" in load_error("mnist", tmp_path / "old_empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old_empty"]  # it was there before: kept
    assert list((tmp_path / "old_empty").iterdir()) == []


def test_a_failed_download_leaves_nothing_it_wrote_in_the_scratch_folder(tmp_path, fake_torchvision):
    def half_download(root, train, download):
        (Path(root) / "MNIST" / "raw").mkdir(parents=True)
        (Path(root) / "MNIST" / "logs").mkdir()
        (Path(root) / "MNIST" / "logs" / "download.log").write_text("connection reset\n")
        raise RuntimeError("connection reset")

    fake_torchvision.MNIST = half_download
    (tmp_path / "data" / "MNIST" / "notes").mkdir(parents=True)
    (tmp_path / "data" / "MNIST" / "notes" / "mine.txt").write_text("the user's\n")
    assert "download failed (RuntimeError: connection reset)" in load_error("mnist", tmp_path / "data")
    # raw, made for the download and left empty, is gone; so is all the download wrote
    assert [p.name for p in (tmp_path / "data" / "MNIST").iterdir()] == ["notes"]
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["MNIST"]


def test_a_failed_download_keeps_the_whole_files_it_moved_and_their_folders(tmp_path, fake_torchvision, monkeypatch):
    import cnnlab.data

    fake_torchvision.MNIST = lambda root, train, download: make_idx_dataset(Path(root), "MNIST", n_train=3, n_test=2)
    moves = []
    real_replace = os.replace

    def second_move_fails(src, dst):  # a full disk, say, after the first file
        moves.append(dst)
        if len(moves) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(cnnlab.data.os, "replace", second_move_fails)
    message = load_error("mnist", tmp_path / "new" / "data")
    assert "download failed (OSError: [Errno 28] No space left on device)" in message
    raw = tmp_path / "new" / "data" / "MNIST" / "raw"
    assert [p.name for p in raw.iterdir()] == [Path(moves[0]).name]  # whole (torchvision checked it): kept, with its new folders


def test_a_ctrl_c_during_a_download_removes_the_folders_made_for_it(tmp_path, fake_torchvision):
    def interrupted(root, train, download):
        raise KeyboardInterrupt

    fake_torchvision.MNIST = interrupted
    with pytest.raises(KeyboardInterrupt):
        load_dataset("mnist", tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_a_link_to_nothing_in_place_of_a_file_is_never_replaced(tmp_path, fake_torchvision):
    """A user's link to a file on a drive not mounted is the user's: the download does not put a file in its place."""
    fake_torchvision.MNIST = lambda root, train, download: make_idx_dataset(Path(root), "MNIST", n_train=3, n_test=2)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").symlink_to(tmp_path / "drive" / "t10k-images-idx3-ubyte")
    message = load_error("mnist", tmp_path)
    assert "download failed (files still missing afterwards); put t10k-images-idx3-ubyte there" in message
    assert (raw / "t10k-images-idx3-ubyte").is_symlink() and not (raw / "t10k-images-idx3-ubyte").exists()


def test_a_failed_download_leaves_no_file_that_counts_as_data(tmp_path, fake_torchvision):
    """A file cut off (or an error page that failed its md5) stayed: it was left out of the files the
    error asked for, counted as there from then on, and failed as 'cannot read' once the others were put."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8))  # the user's own: kept

    def cut_off(root, train, download):
        fetched = Path(root) / "MNIST" / "raw"
        fetched.mkdir(parents=True)
        write_idx(fetched / "train-images-idx3-ubyte", np.zeros((12, 28, 28), np.uint8), gz=True)
        write_idx(fetched / "train-images-idx3-ubyte", np.zeros((12, 28, 28), np.uint8))
        (fetched / "train-labels-idx1-ubyte.gz").write_bytes(b"<html>sign in to this network</html>")
        raise RuntimeError("Error downloading train-labels-idx1-ubyte.gz: File not found or corrupted.")

    fake_torchvision.MNIST = cut_off
    expected = "put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte there"
    assert expected in load_error("mnist", tmp_path)
    assert sorted(p.name for p in raw.iterdir()) == ["t10k-labels-idx1-ubyte"]
    assert expected in load_error("mnist", tmp_path, download=False)


def test_a_download_from_a_stalled_network_times_out(tmp_path, fake_torchvision, monkeypatch):
    """torchvision's urlopen has no timeout: a server that accepts and never answers kept the download
    (and the command) waiting forever. Here the server is a listening socket that never replies."""
    import socket
    import urllib.request

    import cnnlab.data

    monkeypatch.setattr(cnnlab.data, "DOWNLOAD_TIMEOUT_S", 0.2)
    server = socket.create_server(("127.0.0.1", 0))

    def stalled(root, train, download):
        assert socket.getdefaulttimeout() is not None, "the download would wait forever"
        urllib.request.urlopen(f"http://127.0.0.1:{server.getsockname()[1]}/train-images-idx3-ubyte.gz")

    fake_torchvision.MNIST = stalled
    with server:
        assert "download failed (TimeoutError: timed out)" in load_error("mnist", tmp_path)
    assert socket.getdefaulttimeout() is None


def test_unknown_dataset(tmp_path):
    assert "valid: mnist, fashion-mnist, cifar10" in load_error("svhn", tmp_path)


# ---------------------------------------------------------------------------- CIFAR-10
def test_cifar_from_pickled_batches(tmp_path):
    batches = make_cifar(tmp_path, n=4)
    train, test = load_dataset("cifar10", tmp_path, download=False)
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.images.is_contiguous()
    assert train.labels.dtype == torch.int64
    # batches in order 1..5; row = R plane, G plane, B plane, each 32x32 row-major
    row = batches["data_batch_2"]["data"][3]
    image = train.images[4 + 3]
    for channel in range(3):
        assert np.array_equal(image[channel].numpy(), row[channel * 1024:(channel + 1) * 1024].reshape(32, 32))
    assert int(image[1, 2, 5]) == int(row[1024 + 2 * 32 + 5])
    expected = sum((batches[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    assert train.labels.tolist() == expected
    assert test.labels.tolist() == batches["test_batch"]["labels"]
    assert train.classes == [f"class{i}" for i in range(10)]
    assert train.mean == (0.4914, 0.4822, 0.4465) and train.std == (0.2470, 0.2435, 0.2616)


def test_cifar_classes_fall_back_without_meta(tmp_path):
    make_cifar(tmp_path, meta=False)
    train, _ = load_dataset("cifar10", tmp_path, download=False)
    assert train.classes[:2] == ["airplane", "automobile"] and train.classes[-1] == "truck"


def test_cifar_pickles_naming_the_old_numpy_module(tmp_path):
    """The official batches (numpy 1.x era) name numpy.core.multiarray, numpy 2 writes numpy._core."""
    batches = make_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py/test_batch"
    path.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in path.read_bytes()
    _, test = load_dataset("cifar10", tmp_path, download=False)
    assert np.array_equal(test.images.reshape(4, -1).numpy(), batches["test_batch"]["data"])


def short_unicode(text: str) -> bytes:
    """text as pickle's SHORT_BINUNICODE opcode writes it (a global's module name, for one)."""
    return b"\x8c" + bytes([len(text)]) + text.encode()


@pytest.mark.parametrize("module", ["numpy._core.numeric", "numpy.core.numeric"])
def test_cifar_pickles_of_protocol_5(tmp_path, module):
    """A copy re-pickled with pickle.HIGHEST_PROTOCOL (5) rebuilds its arrays with numpy's _frombuffer,
    named numpy._core.numeric by numpy 2 and numpy.core.numeric by numpy 1 (whichever is installed here)."""
    batches = make_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py/data_batch_2"
    written = pickle.dumps(batches["data_batch_2"], protocol=5)
    for name in ("numpy._core.numeric", "numpy.core.numeric"):  # the installed numpy's name, as the other numpy writes it
        written = written.replace(short_unicode(name), short_unicode(module))
    path.write_bytes(pickletools.optimize(written))  # frames the pickle again around the renamed module
    data = path.read_bytes()
    assert short_unicode(module) in data and b"_frombuffer" in data and (b"numpy._core" in data) == (module == "numpy._core.numeric")
    train, _ = load_dataset("cifar10", tmp_path, download=False)
    assert np.array_equal(train.images[4:8].reshape(4, -1).numpy(), batches["data_batch_2"]["data"])
    assert train.labels[4:8].tolist() == batches["data_batch_2"]["labels"]


def test_cifar_pickles_with_bytes_keys(tmp_path):
    """The CIFAR-10 page's loader, pickle.load(f, encoding='bytes'), reads the official (Python 2)
    files as b'data', b'labels' and b'label_names' of bytes: a copy it re-pickles loads too."""
    batches = make_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    as_bytes = lambda value: value.encode() if isinstance(value, str) else value  # noqa: E731
    write_pickle(folder / "test_batch", {as_bytes(k): v for k, v in batches["test_batch"].items()})
    write_pickle(folder / "batches.meta", {b"label_names": [as_bytes(f"class{i}") for i in range(10)]})
    train, test = load_dataset("cifar10", tmp_path, download=False)
    assert np.array_equal(test.images.reshape(4, -1).numpy(), batches["test_batch"]["data"])
    assert test.labels.tolist() == batches["test_batch"]["labels"]
    assert train.classes == [f"class{i}" for i in range(10)]


def pickle_globals(data: bytes) -> set[str]:
    """The 'module name' of every global a pickle names."""
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


class Python2Array:
    """Pickles as Python 2's numpy writes an array: numpy.core.multiarray._reconstruct, with the raw
    bytes as a (latin1) str, which is what a Python 2 str reads back as here."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __reduce__(self):
        rebuild = np.ndarray.__reduce__(self.array)[0]
        return rebuild, (np.ndarray, (0,), "b"), (1, self.array.shape, self.array.dtype, False, self.array.tobytes().decode("latin1"))


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_cifar_pickles_of_python_2_protocols(tmp_path, protocol):
    """Protocols 0-2, as Python 3 writes them (fix_imports) and as Python 2 did (the official batches
    are protocol 2 from Python 2): an array and lists name no builtin."""
    batches = make_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "test_batch").write_bytes(pickle.dumps(batches["test_batch"], protocol=protocol, fix_imports=True))
    as_python_2 = pickle.dumps({**batches["data_batch_1"], "data": Python2Array(batches["data_batch_1"]["data"])}, protocol=protocol)
    (folder / "data_batch_1").write_bytes(as_python_2.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    for name in ("test_batch", "data_batch_1"):
        assert not any(g.startswith(("__builtin__", "copy_reg")) for g in pickle_globals((folder / name).read_bytes()))
    assert "_codecs encode" not in pickle_globals(as_python_2)  # the array's bytes are a str, as in Python 2
    train, test = load_dataset("cifar10", tmp_path, download=False)
    assert np.array_equal(test.images.reshape(4, -1).numpy(), batches["test_batch"]["data"])
    assert np.array_equal(train.images[:4].reshape(4, -1).numpy(), batches["data_batch_1"]["data"])


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_cifar_pickles_naming_builtins_as_python_2_did(tmp_path, protocol):
    """A bytearray, set or frozenset is __builtin__.NAME at protocols 0-2 (Python 2's module name,
    which Python 3 writes too, with fix_imports): it loads as builtins.NAME does at protocol 5."""
    path = tmp_path / "batch"
    extras = {"batch_label": bytearray(b"testing batch 1 of 1"), "seen": {1, 2}, "kept": frozenset({3})}
    written = pickle.dumps({**cifar_batch(4, 0), **extras}, protocol=protocol, fix_imports=True)
    assert {"__builtin__ bytearray", "__builtin__ set", "__builtin__ frozenset"} <= pickle_globals(written)
    path.write_bytes(written)
    loaded = read_pickle(path)
    assert {k: loaded[k] for k in extras} == extras and np.array_equal(loaded["data"], cifar_batch(4, 0)["data"])


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_cifar_pickles_with_empty_bytes(tmp_path, protocol):
    """b'' is __builtin__.bytes called with no arguments at protocols 0-2: a re-pickled copy with an
    empty batch_label was refused as if it were code."""
    written = pickle.dumps({**cifar_batch(4, 0), "batch_label": b""}, protocol=protocol)
    assert "__builtin__ bytes" in pickle_globals(written)
    (tmp_path / "batch").write_bytes(written)
    loaded = read_pickle(tmp_path / "batch")
    assert loaded["batch_label"] in (b"", "") and np.array_equal(loaded["data"], cifar_batch(4, 0)["data"])


class Payload:
    """Unpickling this runs a shell command: the restricted unpickler must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def broken_cifar_error(tmp_path: Path, name: str, change) -> str:
    """Write a valid CIFAR folder, replace batch `name` by change(batch), return the load error."""
    make_cifar(tmp_path)
    batch = cifar_batch(4, 0)
    change(batch)
    write_pickle(tmp_path / "cifar-10-batches-py" / name, batch)
    message = load_error("cifar10", tmp_path, download=False)
    assert name in message
    return message


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    message = broken_cifar_error(tmp_path, "data_batch_3", lambda b: b.update(labels=Payload(marker)))
    assert f"refusing to unpickle {os.system.__module__}.system" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "name, change, expected",
    [
        ("test_batch", lambda b: b.update(data=b["data"].reshape(4, 3, 32, 32)), "must be uint8 of shape (N, 3072)"),
        ("data_batch_4", lambda b: b.update(data=b["data"].astype(np.int16)), "got int16 (4, 3072)"),
        ("data_batch_1", lambda b: b.pop("labels"), "with 'data' and 'labels'"),
        ("data_batch_2", lambda b: b.update(labels=b["labels"][:3]), "4 images but 'labels' has shape (3,)"),
        ("data_batch_5", lambda b: b.update(labels=[10, 0, 0, 0]), "label 10 is outside 0..9"),
        ("test_batch", lambda b: b.update(labels=[0.7, 1.7, 2.7, 3.7]), "'labels' must be a list of integers"),  # not read as 0..3
    ],
)
def test_malformed_cifar_batch(tmp_path, name, change, expected):
    assert expected in broken_cifar_error(tmp_path, name, change)


def test_corrupt_cifar_pickle(tmp_path):
    make_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py/data_batch_5"
    path.write_bytes(path.read_bytes()[:200])
    message = load_error("cifar10", tmp_path, download=False)
    assert "data_batch_5" in message and "not a valid CIFAR pickle" in message


def test_missing_cifar_names_the_folder(tmp_path):
    message = load_error("cifar10", tmp_path, download=False)
    assert f"CIFAR-10 not found in {tmp_path / 'cifar-10-batches-py'}" in message and "test_batch" in message


def test_incomplete_cifar_names_only_the_missing_batch(tmp_path):
    make_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    message = load_error("cifar10", tmp_path, download=False)
    assert message.startswith(f"CIFAR-10 incomplete in {tmp_path / 'cifar-10-batches-py'}; put data_batch_4 there, or point --data-dir")
    assert "data_batch_1" not in message and "test_batch" not in message


@pytest.mark.parametrize("name, make, folder, filename, kind", [
    ("mnist", make_idx_dataset, "MNIST/raw", "train-images-idx3-ubyte", "an IDX file"),
    ("cifar10", make_cifar, "cifar-10-batches-py", "data_batch_1", "a CIFAR batch"),
])
def test_a_directory_where_a_data_file_should_be_is_named(tmp_path, fake_torchvision, name, make, folder, filename, kind):
    """It was reported as the dataset being incomplete, after a download it could not help."""
    downloads = []
    fake_torchvision.MNIST = fake_torchvision.CIFAR10 = lambda root, train, download: downloads.append(root)
    make(tmp_path)
    path = tmp_path / folder / filename
    path.unlink()
    path.mkdir()
    for download in (False, True):
        assert load_error(name, tmp_path, download=download) == f"{path} is a directory, not {kind}"
    assert downloads == []


@pytest.mark.parametrize("name, file", [
    ("mnist", "data"),  # the data directory itself
    ("fashion-mnist", "data/FashionMNIST"),
    ("cifar10", "data/cifar-10-batches-py"),
])
def test_a_file_where_the_data_folder_should_be_is_named(tmp_path, fake_torchvision, name, file):
    """It was reported as the files not found there ('put them there', which no one can), after a
    download that could not make the folder."""
    downloads = []
    fake_torchvision.MNIST = fake_torchvision.FashionMNIST = fake_torchvision.CIFAR10 = lambda root, train, download: downloads.append(root)
    (tmp_path / file).parent.mkdir(exist_ok=True)
    (tmp_path / file).write_text("not a folder\n")
    info = DATASETS[name]
    folder = tmp_path / "data" / info.folder
    expected = (f"{folder} is a file, not a folder for {info.title}" if folder == tmp_path / file
                else f"cannot create the folder for {info.title} {folder}: {tmp_path / file} is a file")
    for download in (False, True):
        assert load_error(name, tmp_path / "data", download=download) == expected
    assert downloads == [] and (tmp_path / file).read_text() == "not a folder\n"


# ---------------------------------------------------------------------------- a config's subsets
def subset_config(data_dir: Path, name: str = "mnist", **subsets):
    from cnnlab.config import config_from_dict

    return config_from_dict({"name": "t", "dataset": {"name": name, "data_dir": str(data_dir), "download": False, **subsets}, "model": {"name": "fc"}})


def test_subsets_up_to_the_split_sizes_are_taken(tmp_path):
    make_idx_dataset(tmp_path, "MNIST", n_train=12, n_test=5)
    train, test = load_splits(subset_config(tmp_path, train_subset=12, test_subset=5))
    assert (len(train.labels), len(test.labels)) == (12, 5)  # the whole splits: the run takes the first N


@pytest.mark.parametrize("subsets,expected", [
    ({"train_subset": 13}, "dataset.train_subset=13 is more than the 12 images of the mnist training split"),
    ({"train_subset": 4, "test_subset": 100000}, "dataset.test_subset=100000 is more than the 5 images of the mnist test split"),
])
def test_a_subset_larger_than_its_split_is_refused_not_cut(tmp_path, subsets, expected):
    """Cut to the split, it would leave config.yaml and summary.json naming a subset the run did not use."""
    make_idx_dataset(tmp_path, "MNIST", n_train=12, n_test=5)
    with pytest.raises(ConfigError) as info:
        load_splits(subset_config(tmp_path, **subsets))
    message = str(info.value)
    assert message.startswith(expected + "; ask for ") and "\n" not in message


@pytest.mark.parametrize("dataset", ["mnist", "mnist-gz", "cifar10"])
def test_check_subsets_refuses_what_load_splits_refuses_from_the_split_sizes_alone(tmp_path, monkeypatch, dataset):
    """A study checks every cell's subsets before any trains: with load_splits' own line, and for an IDX
    dataset without reading its images."""
    import cnnlab.data

    if dataset == "cifar10":
        make_cifar(tmp_path, n=4)  # 5 batches of 4 training images, 4 test images
        sizes = {"train_subset": 20, "test_subset": 4}
    else:
        make_idx_dataset(tmp_path, "MNIST", n_train=12, n_test=5, gz=dataset == "mnist-gz")
        sizes = {"train_subset": 12, "test_subset": 5}
    name = dataset.split("-")[0]
    for key, size in sizes.items():
        fits, too_many = subset_config(tmp_path, name, **{key: size}), subset_config(tmp_path, name, **{key: size + 1})
        with pytest.raises(ConfigError) as loaded:
            load_splits(too_many)
        if name == "mnist":
            monkeypatch.setattr(cnnlab.data, "_read_splits", lambda *args: pytest.fail("read the images"))
        check_subsets(fits)
        with pytest.raises(ConfigError) as checked:
            check_subsets(too_many)
        assert str(checked.value) == str(loaded.value)
        monkeypatch.undo()


def test_a_study_checks_the_files_of_a_dataset_once(tmp_path, monkeypatch):
    """check_here (before a study or sweep trains) checked a dataset's files once per cell, and again in
    check_subsets for a cell with a subset: now once per dataset and folder, refusing the same."""
    import cnnlab.data
    from cnnlab.runner import check_here

    make_idx_dataset(tmp_path, "MNIST", n_train=12, n_test=5)
    checked, check_files = [], cnnlab.data.check_files
    monkeypatch.setattr(cnnlab.data, "check_files", lambda *args: checked.append(args) or check_files(*args))
    cells = [subset_config(tmp_path, train_subset=12), subset_config(tmp_path, test_subset=5), subset_config(tmp_path)]
    check_here(cells)
    assert checked == [("mnist", tmp_path.resolve(), False)]
    with pytest.raises(ConfigError, match="dataset.test_subset=6 is more than the 5 images"):
        check_here([*cells, subset_config(tmp_path, test_subset=6)])
    with pytest.raises(DataError, match="not found"):
        check_here([*cells, subset_config(tmp_path / "elsewhere", train_subset=1)])


# ---------------------------------------------------------------------------- data directory
def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    assert resolve_data_dir() == tmp_path / "data"
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(config_value="cfg") == tmp_path / "cfg"
    assert resolve_data_dir(cli_value=str(tmp_path / "cli"), config_value="cfg") == tmp_path / "cli"


def test_a_data_dir_with_a_nul_byte(monkeypatch):
    """A YAML "\\0" in dataset.data_dir: Path.resolve() would raise ValueError (a traceback)."""
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    with pytest.raises(DataError, match=r"^data directory 'da\\x00ta' contains a NUL byte$"):
        resolve_data_dir(config_value="da\0ta")


def test_a_data_dir_that_cannot_be_reached(tmp_path, monkeypatch):
    """Path.expanduser() raised RuntimeError (a traceback) for ~ of no such user (a symlink loop:
    test_a_data_dir_that_links_to_nothing_is_refused_not_followed)."""
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    with pytest.raises(DataError) as info:
        resolve_data_dir(cli_value="~no-such-user-h58/data")
    assert str(info.value) == "cannot reach the data directory ~no-such-user-h58/data: Could not determine home directory."


def test_registry_matches_config_shapes():
    from cnnlab.config import DATASET_CLASSES, DATASET_SHAPES

    assert set(DATASETS) == set(DATASET_SHAPES) == set(DATASET_CLASSES)
    for info in DATASETS.values():
        assert len(info.mean) == len(info.std) == info.shape[0] and len(info.classes) == DATASET_CLASSES[info.name]


# ---------------------------------------------------------------------------- the real data, when present
def channel_mean(images: torch.Tensor) -> list[float]:
    """Per-channel mean on the 0..1 scale (numpy reduces uint8 far faster than torch on CPU)."""
    return (images.numpy().mean(axis=(0, 2, 3), dtype=np.float64) / 255).tolist()


# the published label counts per class and first labels: a reader that misaligns or wraps labels changes them
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    "name, folder, mean, std, counts, first",
    [("mnist", "MNIST", 0.1307, 0.3081, (MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS), ([5, 0, 4, 1, 9], [7, 2, 1, 0, 4])),
     ("fashion-mnist", "FashionMNIST", 0.2860, 0.3530, ([6000] * 10, [1000] * 10), ([9, 0, 0, 3, 0], [9, 2, 1, 1, 6]))],
)
def test_real_idx_data(name, folder, mean, std, counts, first):
    root = real_data(folder, "raw")
    train, test = load_dataset(name, root, download=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert (np.bincount(train.labels).tolist(), np.bincount(test.labels).tolist()) == counts
    assert (train.labels[:5].tolist(), test.labels[:5].tolist()) == first
    assert channel_mean(train.images) == pytest.approx([mean], abs=1e-3)
    assert (train.images.float() / 255).std().item() == pytest.approx(std, abs=1e-3)


def test_real_cifar10():
    root = real_data("cifar-10-batches-py")
    train, test = load_dataset("cifar10", root, download=False)
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.classes[0] == "airplane" and train.classes[-1] == "truck"
    assert np.bincount(train.labels).tolist() == [5000] * 10 and np.bincount(test.labels).tolist() == [1000] * 10
    assert channel_mean(train.images) == pytest.approx([0.4913, 0.4821, 0.4465], abs=2e-3)
