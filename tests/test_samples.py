"""`cnnlab samples`: the grid's size, the images after a config's deterministic transforms, errors."""

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from cnnlab.config import config_from_dict
from cnnlab.samples import grid_png, grid_size, sample_images, title_for
from cnnlab.transforms import make_permutation
from conftest import ROOT
from fakedata import make_idx_dataset
from test_forward_check import cli


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    written = make_idx_dataset(root, "MNIST", n_train=20, n_test=40)
    return root, written["test"]


def cfg_for(dataset="mnist", **transform):
    return config_from_dict({"name": "t", "dataset": {"name": dataset}, "model": {"name": "fc"}, "transform": transform})


def test_grid_size_follows_the_image_count():
    assert grid_size(32) == (8 * 130, 4 * 150 + 60)
    assert grid_size(9) == (8 * 130, 2 * 150 + 60)
    assert grid_size(2) == (4 * 130, 150 + 60)  # never narrower than 4 cells, so the title fits


def test_drawing_a_grid_leaves_the_callers_matplotlib_backend_alone():
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a notebook's or a script's own choice
    try:
        png = grid_png(torch.rand(3, 1, 6, 6), torch.tensor([0, 1, 0]), ["a", "b"], "t")
        assert png.startswith(b"\x89PNG") and matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)


@pytest.mark.parametrize("n", [32, 9, 2])
def test_cli_writes_a_png_of_that_size(tiny_mnist, tmp_path, monkeypatch, capsys, n):
    root, _ = tiny_mnist
    out_path = tmp_path / "grid.png"
    code, out, err = cli(monkeypatch, capsys, "samples", "mnist", "--n", n, "--out", out_path, "--data-dir", root)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(out_path)
    height, width, _ = matplotlib.image.imread(out_path).shape
    assert (width, height) == grid_size(n)


def test_default_path_is_in_the_runs_directory(tiny_mnist, runs_dir, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "samples", "mnist", "--n", 4, "--config", "configs/mnist_cnn.yaml",
                         "transform.permute=true", "--data-dir", tiny_mnist[0])
    assert code == 0, err
    name = "samples-mnist-test-mnist_cnn-permute_seed0-n4.png"  # not the plain grid's file
    assert out.strip() == str(runs_dir / name) and (runs_dir / name).is_file()


def test_the_default_file_is_named_after_what_is_drawn(tiny_mnist, runs_dir, monkeypatch, capsys):
    """Two configs called alike that draw other images get two files (the second one replaced the
    first); the same images asked for in other words (a config's transform, an override) one file."""
    root = tiny_mnist[0]
    text = (ROOT / "configs" / "mnist_cnn.yaml").read_text()
    assert "permute: false" in text
    permuted = runs_dir.parent / "permuted.yaml"
    permuted.write_text(text.replace("permute: false", "permute: true", 1))  # still called mnist_cnn

    def drawn(*args):
        code, out, err = cli(monkeypatch, capsys, "samples", "mnist", *args, "--data-dir", root)
        assert code == 0, err
        return out.strip().splitlines()[-1]

    plain = drawn("--config", "mnist_cnn")
    by_file = drawn("--config", permuted)
    by_override = drawn("--config", "mnist_cnn", "transform.permute=true")
    assert plain != by_file == by_override == str(runs_dir / "samples-mnist-test-mnist_cnn-permute_seed0.png")
    assert drawn("--config", "mnist_cnn", "transform.permute=true", "seed=3").endswith("-mnist_cnn-permute_seed3.png")
    shifted = drawn("transform.shift={dx: 2, dy: -1, mode: zero}", "--n", 8)
    assert shifted == str(runs_dir / "samples-mnist-test-shift_dx2_dy-1_zero-n8.png")
    assert drawn("transform.shift.dx=2", "transform.shift.dy=-1", "transform.shift.mode=zero", "--n", 8) == shifted


def test_each_split_gets_its_own_default_file(tiny_mnist, runs_dir, monkeypatch, capsys):
    paths = {}
    for split in ("test", "train"):
        code, out, err = cli(monkeypatch, capsys, "samples", "mnist", "--n", 2, "--split", split, "--data-dir", tiny_mnist[0])
        assert code == 0, err
        paths[split] = out.strip()
    assert paths["test"] != paths["train"] and all(Path(p).is_file() for p in paths.values())


def test_images_are_shown_after_the_permutation_and_the_shift(tiny_mnist):
    root, (raw, labels) = tiny_mnist
    plain = torch.from_numpy(raw[:5]).float().div(255).view(5, 1, 28, 28)
    images, got_labels, classes = sample_images(cfg_for(), 5, data_dir=root)
    assert torch.equal(images, plain) and got_labels.tolist() == labels[:5].tolist() and classes[3] == "3"

    permuted, _, _ = sample_images(cfg_for(permute=True, permute_seed=7), 5, data_dir=root)
    perm = make_permutation(784, 7)
    assert torch.equal(permuted.flatten(1), plain.flatten(1)[:, perm])

    shifted, _, _ = sample_images(cfg_for(shift={"dx": 3, "dy": -2}), 5, data_dir=root)
    assert np.array_equal(shifted.numpy(), np.roll(plain.numpy(), (-2, 3), axis=(2, 3)))


def test_each_split_draws_its_own_images(tmp_path):
    """--split train shows the training images (the CLI test above checks only the file names)."""
    written = make_idx_dataset(tmp_path, "MNIST", n_train=6, n_test=4)
    for split in ("train", "test"):
        raw, labels = written[split]
        images, got_labels, _ = sample_images(cfg_for(), 3, split=split, data_dir=tmp_path)
        assert torch.equal(images, torch.from_numpy(raw[:3]).float().div(255).view(3, 1, 28, 28))
        assert got_labels.tolist() == labels[:3].tolist()


def test_normalization_is_left_out_and_the_title_says_what_was_done(tiny_mnist):
    cfg = cfg_for(normalize="dataset", permute=True, shift={"dx": 1})
    images, _, _ = sample_images(cfg, 5, data_dir=tiny_mnist[0])
    assert images.min() >= 0 and images.max() <= 1
    title = title_for(cfg, 5, "test")
    assert title.startswith("MNIST: the first 5 test images") and "shift dx=1 dy=0 (roll)" in title
    assert "pixel permutation (seed 0)" in title
    assert "no transform" in title_for(cfg_for(), 5, "test")


def test_the_toy_needs_no_files(tmp_path, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "samples", "toy", "--out", tmp_path / "toy.png", "--data-dir", tmp_path / "none")
    assert code == 0, err
    height, width, _ = matplotlib.image.imread(tmp_path / "toy.png").shape
    assert (width, height) == grid_size(2)


def test_a_config_file_whose_name_holds_other_characters_is_named_as_train_names_its_run(tiny_mnist, runs_dir, monkeypatch, capsys):
    """'my fc+1.yaml' without a name of its own was refused ("name may hold only letters, ..."), though
    cnnlab train takes it and names its run my_fc_1."""
    root, _ = tiny_mnist
    config = runs_dir.parent / "my fc+1.yaml"
    config.write_text((ROOT / "configs" / "mnist_fc.yaml").read_text().replace("name: mnist_fc\n", "", 1))
    code, out, err = cli(monkeypatch, capsys, "samples", "mnist", "--n", 4, "--config", config, "--data-dir", root)
    assert code == 0, err
    assert Path(out.strip().splitlines()[-1]).name == "samples-mnist-test-my_fc_1-n4.png"


def test_a_config_whose_subset_is_larger_than_the_split_is_drawn(tiny_mnist, tmp_path, monkeypatch, capsys):
    """samples draws the first N images of the whole split, whatever the config trains on: a config
    written for the full dataset (cifar10_5k.yaml's 5,000) is not refused on a smaller copy."""
    root, _ = tiny_mnist  # 20 training images, 40 test images
    config = tmp_path / "big.yaml"
    config.write_text((ROOT / "configs" / "mnist_cnn.yaml").read_text().replace("  name: mnist\n", "  name: mnist\n  train_subset: 5000\n  test_subset: 2000\n", 1))
    for split in ("train", "test"):
        code, out, err = cli(monkeypatch, capsys, "samples", "mnist", "--n", 4, "--split", split, "--config", config,
                             "--out", tmp_path / f"{split}.png", "--data-dir", root)
        assert code == 0 and err == "", err
        assert (tmp_path / f"{split}.png").is_file()


def test_user_errors(tiny_mnist, monkeypatch, capsys, tmp_path):
    root = tiny_mnist[0]
    runs_dir_file = tmp_path / "runs_file"
    runs_dir_file.write_text("")
    code, _, err = cli(monkeypatch, capsys, "samples", "mnist", "--config", "configs/cifar10_trashnet.yaml", "--data-dir", root)
    assert code == 2 and "cifar10, not mnist" in err
    code, _, err = cli(monkeypatch, capsys, "samples", "imagenet", "--data-dir", root)
    assert code == 2 and "dataset.name" in err
    code, _, err = cli(monkeypatch, capsys, "samples", "mnist", "transform.shift.dx=40", "--data-dir", root)
    assert code == 2 and "shift" in err
    code, _, err = cli(monkeypatch, capsys, "samples", "mnist", "--split", "val", "--data-dir", root)
    assert code == 2 and "--split" in err
    code, _, err = cli(monkeypatch, capsys, "samples", "mnist", "transform.augment.translate=4", "--data-dir", root)
    assert code == 2 and "transform.augment.translate does not change what samples draws" in err
    code, _, err = cli(monkeypatch, capsys, "samples", "mnist", "dataset.train_subset=10", "--split", "train", "--data-dir", root)
    assert code == 2 and "dataset.train_subset does not change what samples draws" in err
    code, out, err = cli(monkeypatch, capsys, "samples", "mnist", "dataset.test_subset=5", "--n", 10, "--data-dir", root)
    assert code == 2 and "dataset.test_subset does not change what samples draws" in err  # it drew 10 images, named for 5
    code, out, err = cli(monkeypatch, capsys, "samples", "mnist", "dataset={test_subset: 5}", "--data-dir", root)
    assert code == 2 and "dataset.test_subset does not change what samples draws" in err  # the section given whole
    code, out, err = cli(monkeypatch, capsys, "samples", "mnist", "transform={augment: {hflip: true}}", "--data-dir", root)
    assert code == 2 and "transform.augment.hflip does not change what samples draws" in err
    code, _, err = cli(monkeypatch, capsys, "samples", "mnist", "--config", "configs/sweeps/lenet_lr.yaml", "--data-dir", root)
    assert code == 2 and "lenet_lr.yaml is a sweep file, not a config: run it with cnnlab sweep" in err  # not "did you mean 'dataset'?"
    code, _, err = cli(monkeypatch, capsys, "samples", "mnist", "--config", "", "--data-dir", root)
    assert code == 2 and err == "error: --config is empty: give a value, or leave --config out\n"  # not ". is a directory"
    code, _, err = cli(monkeypatch, capsys, "samples", "mnist", "dataset.name=fashion-mnist", "--data-dir", root)
    assert code == 2 and "dataset.name=fashion-mnist contradicts DATASET mnist" in err  # drew Fashion-MNIST, named mnist
    code, _, err = cli(monkeypatch, capsys, "samples", "mnist", "--out", runs_dir_file.parent / "s.png", "--runs-dir", runs_dir_file, "--data-dir", root)
    assert code == 1 and err == f"error: {runs_dir_file} is a file, not a runs directory\n"  # with --out too, as every command
    assert not (runs_dir_file.parent / "s.png").exists()
    code, _, err = cli(monkeypatch, capsys, "samples", "mnist", "--out", "grid.jpg", "--data-dir", root)
    assert code == 2 and "--out must name a .png file" in err  # not PNG bytes in a .jpg


def test_a_whole_transform_section_is_taken_and_where_the_data_is_stays_out_of_the_name(tiny_mnist, runs_dir, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "samples", "mnist", "--n", 4, "transform={permute: true}",
                         f"dataset.data_dir={tiny_mnist[0]}")
    assert code == 0, err
    assert out.strip() == str(runs_dir / "samples-mnist-test-permute_seed0-n4.png")
    code, out, err = cli(monkeypatch, capsys, "samples", "mnist", "--n", 4, f"dataset={{data_dir: {tiny_mnist[0]}, download: false}}")
    assert code == 0, err
    assert out.strip() == str(runs_dir / "samples-mnist-test-n4.png")  # the section given whole: still where, not what
    fashion = runs_dir.parent / "fashion"
    make_idx_dataset(fashion, "FashionMNIST", n_train=4, n_test=4)
    code, out, err = cli(monkeypatch, capsys, "samples", "fashion-mnist", "--n", 4, f"dataset={{data_dir: {fashion}}}")
    assert code == 0, err  # the section's default name (mnist) was said to contradict DATASET
    assert out.strip() == str(runs_dir / "samples-fashion-mnist-test-n4.png")


def test_a_class_name_with_a_dollar_sign_is_drawn_as_it_is():
    """A CIFAR-10 copy's batches.meta names its classes: 'a$^$b' is text, not mathtext that does
    not parse and fails the grid."""
    classes = ["a$^$b", "$\\frac$"]
    png = grid_png(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]), classes, "t $x$")
    assert png.startswith(b"\x89PNG")
