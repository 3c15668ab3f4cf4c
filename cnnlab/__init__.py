"""cnnlab: run the classic CNN studies on MNIST, Fashion-MNIST and CIFAR-10, fast and reproducibly."""

import time as _time
from pathlib import Path as _Path

__version__ = "0.1.0"


def source_stamps() -> dict[str, tuple[int, int]]:
    """Each of cnnlab's source files, with its size and modification time."""
    stamps = {}
    for path in _Path(__file__).resolve().parent.rglob("*.py"):
        stat = path.stat()
        stamps[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return stamps


# the source as this process imported it, and when: a compiled step kept on disk (aot_step.py) is
# named by the source hash, which must be of the code the process runs, not of files edited since
IMPORTED_SOURCE = source_stamps()
IMPORTED_AT = _time.time()
