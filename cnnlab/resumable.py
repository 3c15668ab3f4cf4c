"""What a resume may change in a run's config, checked without torch (a refused override answers at once)."""

from __future__ import annotations

from pathlib import Path

from cnnlab.config import Config, config_to_dict, flatten
from cnnlab.errors import RunError


# what a resume may change: how the run trains and where its data is, not what it trains on or how it learns
RESUMABLE_CHANGES = (
    "train.epochs", "train.eval_batch_size", "train.amp", "train.compile", "train.cuda_graphs", "train.deterministic", "train.threads", "train.channels_last",
    "train.checkpoint", "train.tensorboard", "device", "dataset.data_dir", "dataset.download", "reported", "description",
)


def check_resume_changes(path: Path, trained: Config, cfg: Config) -> None:
    """Refuse a resume whose overrides change what the run trains on or how it learns (data, seed,
    transforms, model, optimizer, schedule, loss, batch size, ...): its epochs so far and the new
    ones would make one curve of two experiments, under a config.yaml that describes only the second."""
    old, new = flatten(config_to_dict(trained)), flatten(config_to_dict(cfg))
    changed = [
        k for k in dict.fromkeys([*old, *new])
        if old.get(k) != new.get(k) and not any(k == a or k.startswith(a + ".") for a in RESUMABLE_CHANGES)
    ]
    if changed:
        values = ", ".join(f"{k} ({_shown(old.get(k))}, now {_shown(new.get(k))})" for k in changed)
        raise RunError(
            f"cannot resume {path} with another {values}: its epochs so far trained with the first; "
            "train a new run (a resume may change train.epochs, where the data is, and how steps run: device, amp, threads, ...)"
        )


def _shown(value) -> str:
    """A config value as an override writes it: null, true, [8, 8], 0.01."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
