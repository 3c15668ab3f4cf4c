"""Optional TensorBoard logging of a run's epochs (train.tensorboard: true), through tensorboardX.

The event file goes into the run directory, so `tensorboard --logdir runs` shows every run under its
directory name. metrics.csv stays the record; this is a view of it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cnnlab.errors import ConfigError

# metrics.csv column -> TensorBoard tag (the part before '/' groups the charts)
TAGS = {
    "train_loss": "loss/train", "test_loss": "loss/test",
    "train_acc": "accuracy/train", "test_acc": "accuracy/test",
    "lr": "lr", "epoch_seconds": "time/epoch_seconds", "eval_seconds": "time/eval_seconds",
    "samples_per_sec": "time/samples_per_sec",
}


def require() -> None:
    """Fail in one line, before a run starts, when tensorboardX is missing."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise ConfigError("train.tensorboard needs tensorboardX: pip install 'cnnlab[tensorboard]'") from None


class EpochLog:
    """One scalar per metric per epoch, flushed at once so TensorBoard shows a run while it trains."""

    def __init__(self, run_dir: Path):
        require()
        from tensorboardX import SummaryWriter

        # tensorboardX names the file by the second: a resume within the same second would overwrite
        # the first process's file without a suffix of its own
        self.writer = SummaryWriter(logdir=str(run_dir), filename_suffix=f".{os.getpid()}.{time.time_ns()}")

    def epoch(self, row: dict) -> None:
        for key, tag in TAGS.items():
            if key in row:
                self.writer.add_scalar(tag, row[key], row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
