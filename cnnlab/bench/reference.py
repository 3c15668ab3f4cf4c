"""The tutorials' training loop, as they write it: the baseline `cnnlab bench` measures against.

A torchvision dataset object over the same files, per-sample PIL -> ToTensor -> Normalize
transforms, a shuffled DataLoader with the study's batch size (num_workers 0, the default), the
study's model (study A's with its LogSoftmax), optimizer and loss, and `.to(device)` per batch. For CIFAR-10 the dataset is a small
Dataset over cnnlab's uint8 split (torchvision's CIFAR10 class refuses re-encoded copies whose md5s
differ) that does exactly what torchvision.datasets.CIFAR10.__getitem__ does: Image.fromarray on the
HWC array, then the transform.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from cnnlab.config import Config, MeanStd
from cnnlab.data import DATASETS, check_files, load_splits, resolve_data_dir
from cnnlab.errors import DataError


class CifarFromSplit(Dataset):
    """torchvision's CIFAR10 item path over a cnnlab split: HWC uint8 -> PIL image -> transform."""

    def __init__(self, images_uint8: torch.Tensor, labels: torch.Tensor, transform):
        self.data = images_uint8.permute(0, 2, 3, 1).contiguous().numpy()  # (N, 32, 32, 3), like CIFAR10.data
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def as_written(model_opts):
    """The model options as the tutorial writes its model: study A's CNN applies ReLU before pooling
    (cnnlab pools first: the same function and the same weights, cheaper)."""
    if model_opts.name == "cnn":
        return model_opts.model_copy(update={"relu_first": True})
    return model_opts


def with_written_loss(model: torch.nn.Module, cfg: Config, loss_fn):
    """(model, loss) as the tutorial writes them: study A's FC2Layer and CNN end in LogSoftmax and
    train with the NLL loss, where cnnlab's return logits to cross-entropy (the same function:
    cross-entropy is log-softmax then NLL)."""
    if cfg.model.name in ("fc", "cnn") and cfg.loss.name == "cross_entropy" and not cfg.loss.label_smoothing:
        return torch.nn.Sequential(model, torch.nn.LogSoftmax(dim=1)), torch.nn.functional.nll_loss
    return model, loss_fn


def transforms_for(cfg: Config):
    """(train, test) torchvision transforms that do per sample what cfg's transform section says."""
    from torchvision import transforms as T

    tc = cfg.transform
    used = {"permute": tc.permute, "shift": tc.shift.dx or tc.shift.dy, "translate": tc.augment.translate, "mixup": tc.augment.mixup}
    unsupported = [name for name, value in used.items() if value]
    if unsupported:
        raise ValueError(f"the reference loop does not implement transform options {unsupported}")
    if tc.normalize == "none":
        norm = []
    else:
        info = DATASETS[cfg.dataset.name]
        mean, std = (tc.normalize.mean, tc.normalize.std) if isinstance(tc.normalize, MeanStd) else (info.mean, info.std)
        norm = [T.Normalize(mean, std)]
    aug = tc.augment
    size = DATASETS[cfg.dataset.name].shape[1]
    augment = (
        ([T.RandomCrop(size, padding=aug.crop_padding, padding_mode=aug.crop_padding_mode)] if aug.crop_padding else [])
        + ([T.RandomHorizontalFlip()] if aug.hflip else [])
        + ([T.RandomGrayscale(aug.grayscale)] if aug.grayscale else [])
    )
    train = T.Compose([*augment, T.ToTensor(), *norm])
    test = T.Compose([T.ToTensor(), *(norm if tc.normalize_test else [])])
    return train, test


def _torchvision_class(name: str):
    """The torchvision dataset class the tutorials read an IDX dataset with."""
    from torchvision import datasets

    return datasets.MNIST if name == "mnist" else datasets.FashionMNIST


def _check_uncompressed(name: str, root: Path) -> None:
    """cnnlab reads .gz IDX files too; torchvision's MNIST classes only the uncompressed ones."""
    cls = _torchvision_class(name)
    raw = root / cls.__name__ / "raw"
    if not all((raw / Path(url).name.removesuffix(".gz")).is_file() for url, _ in cls.resources):
        raise DataError(
            f"the tutorials' loop reads {cls.__name__} through torchvision, which needs the uncompressed IDX files "
            f"in {raw}; only .gz copies are there: gunzip them (keep the .gz if you like)"
        )


def check_data(cfg: Config) -> None:
    """Both sides' files for cfg are there (cnnlab's, downloading when allowed, and the uncompressed
    IDX files torchvision's MNIST classes read), without loading them: the bench checks every case
    before its first measurement. DataError when they are not."""
    root = resolve_data_dir(config_value=cfg.dataset.data_dir)
    check_files(cfg.dataset.name, root, cfg.dataset.download)
    if cfg.dataset.name in ("mnist", "fashion-mnist"):
        _check_uncompressed(cfg.dataset.name, root)


def datasets_for(cfg: Config) -> tuple[Dataset, Dataset]:
    """The tutorial's (train, test) dataset objects over the real files cnnlab reads too."""
    root = resolve_data_dir(config_value=cfg.dataset.data_dir)
    train_tf, test_tf = transforms_for(cfg)
    name = cfg.dataset.name
    # cnnlab's checks: a missing or damaged file, or a subset larger than its split, in one line
    train_split, test_split = load_splits(cfg, root)
    if name in ("mnist", "fashion-mnist"):
        _check_uncompressed(name, root)
        cls = _torchvision_class(name)
        train = cls(str(root), train=True, transform=train_tf, download=False)
        test = cls(str(root), train=False, transform=test_tf, download=False)
    else:
        train = CifarFromSplit(train_split.images, train_split.labels, train_tf)
        test = CifarFromSplit(test_split.images, test_split.labels, test_tf)
    if cfg.dataset.train_subset:
        train = Subset(train, range(cfg.dataset.train_subset))
    if cfg.dataset.test_subset:
        test = Subset(test, range(cfg.dataset.test_subset))
    return train, test


def train_epoch(model, optimizer, scheduler, loader, loss_fn, device, max_steps: int | None = None) -> float:
    """The tutorial's `train(epoch)`, plus the per-batch scheduler step a schedule needs. Returns seconds."""
    model.train()
    t0 = time.perf_counter()
    # islice stops before fetching a batch past max_steps (a `break` inside the loop would load
    # and transform one more batch on the clock)
    for batch_idx, (data, target) in enumerate(itertools.islice(loader, max_steps)):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = loss_fn(output, target)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if batch_idx % 100 == 0:  # where the tutorial prints the loss: a host sync
            loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


@torch.no_grad()
def test(model, loader, device) -> float:
    """The tutorial's `test()`: accuracy over the test loader."""
    model.eval()
    correct = total = 0
    for data, target in loader:
        data, target = data.to(device), target.to(device)
        correct += (model(data).argmax(1) == target).sum().item()
        total += len(target)
    return correct / max(total, 1)


def loaders(train: Dataset, test_set: Dataset, cfg: Config) -> tuple[DataLoader, DataLoader]:
    return (
        DataLoader(train, batch_size=cfg.train.batch_size, shuffle=True),
        DataLoader(test_set, batch_size=cfg.train.eval_batch_size, shuffle=False),
    )
