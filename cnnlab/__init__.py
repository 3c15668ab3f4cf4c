"""cnnlab: run the classic CNN studies on MNIST, Fashion-MNIST and CIFAR-10, fast and reproducibly."""

import hashlib as _hashlib
from pathlib import Path as _Path

__version__ = "0.1.0"

_PACKAGE = _Path(__file__).resolve().parent


def source_digest() -> str:
    """A hash of cnnlab's Python source as it is on disk now (about a millisecond)."""
    digest = _hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# the source this process imported: a compiled step kept on disk (aot_step.py) is named by it, and a
# run's git_dirty says when the files have changed since, the code that runs no longer theirs
IMPORTED_SOURCE = source_digest()


def source_changed() -> bool:
    """Whether cnnlab's source on disk differs from what this process imported (an edit, a git pull
    or checkout since; a file touched without a change is no change)."""
    return source_digest() != IMPORTED_SOURCE
