"""The bench's cases (which study configs it times, on what budget) and the checks of their names:
no torch here, so that `cnnlab bench` refuses a wrong --cases before loading it."""

from __future__ import annotations

from dataclasses import dataclass
from cnnlab.errors import ConfigError
from cnnlab.named import own_configs

CONFIGS_DIR = own_configs()
COMPUTE_BOUND = 0.2  # a case reaching this fraction of the compute peak is bound by compute


@dataclass(frozen=True)
class Case:
    name: str
    config: str  # a file in configs/: the study's model, data, batch size and optimizer
    overrides: tuple[str, ...] = ()
    steps: int | None = None  # fixed steps per epoch (None: the whole training split)
    tolerance: float = 0.02  # accuracy difference still within training noise (seed, data order)
    target: float | None = None  # time-to-accuracy: train epochs until test accuracy reaches this
    quick_steps: int = 100  # steps with --quick
    quick_tolerance: float = 0.15  # a fraction of an epoch in: the steep part of the curve, noisier


CASES: dict[str, Case] = {c.name: c for c in (
    Case("fc", "mnist_fc.yaml"),  # study A, FC2Layer, batch 64
    Case("cnn", "mnist_cnn.yaml"),  # study A, CNN, batch 64
    # study C's LeNet, batch 100; after one epoch both sides are still at chance (the article: 9.6%)
    Case("lenet", "lenet.yaml", ("train.epochs=1",)),
    # study D's TrashNet, batch 100, a fixed number of steps; test images normalized like the
    # training ones so that the accuracies say something (the article's bug makes them erratic)
    Case("trashnet", "cifar10_trashnet.yaml", ("train.epochs=1", "transform.normalize_test=true"),
         steps=60, tolerance=0.15, quick_steps=5),  # lr 0.9: the first steps are erratic
    Case("lenet99", "lenet_modern.yaml", target=0.99, tolerance=0.005),  # time to 99% test accuracy
)}
DEFAULT_CASES = ("fc", "cnn", "lenet", "trashnet", "lenet99")
QUICK_CASES = ("fc", "cnn", "lenet", "trashnet")


def check_cases(case_names: list[str], quick: bool) -> None:
    """Unknown cases, and a time-to-accuracy case with --quick, refused (ConfigError)."""
    unknown = [c for c in case_names if c not in CASES]
    if unknown:
        raise ConfigError(f"unknown bench case(s) {', '.join(unknown)}; valid: {', '.join(CASES)}")
    targets = [c for c in case_names if CASES[c].target is not None]
    if quick and targets:  # its steps per epoch capped, it would only ever report "not reached"
        raise ConfigError(
            f"--quick trains {', '.join(targets)} {CASES[targets[0]].quick_steps} steps an epoch, which never reach its "
            f"{CASES[targets[0]].target:.0%} target; run it without --quick, or leave it out of --cases"
        )
