"""Configs, studies and sweeps by name: `cnnlab train mnist_cnn`, `cnnlab compare fc-vs-cnn`,
`cnnlab sweep lenet-lr`.

A name (no folder, no .yaml) is looked up in configs/ of the working directory, then in cnnlab's own
configs: the checkout's configs/ beside the package (a clone, an editable install), or the copy an
installed wheel carries inside the package (setup.py puts it there), so that a cnnlab installed with
pip runs its studies from any folder. `-` and `_` are the same in a name.
"""

from __future__ import annotations

import os
from pathlib import Path

from cnnlab.errors import ConfigError

PACKAGE = Path(__file__).resolve().parent
KINDS = {"config": "", "study": "studies", "sweep": "sweeps"}  # what a name names -> its folder under configs/


def own_configs() -> Path:
    """cnnlab's own configs/: the wheel's copy in the package, else the checkout's beside it."""
    packaged = PACKAGE / "configs"
    return packaged if packaged.is_dir() else PACKAGE.parent / "configs"


def is_name(arg: str) -> bool:
    """Whether arg is a bare name (mnist_cnn) rather than a path (configs/mnist_cnn.yaml, x.yml)."""
    return bool(arg) and "/" not in arg and os.sep not in arg and Path(arg).suffix not in (".yaml", ".yml")


def find(name: str, kind: str) -> Path | None:
    """The file of kind ('config', 'study' or 'sweep') that name names, or None."""
    stem = name.replace("-", "_")
    for root in _roots():
        path = root / KINDS[kind] / f"{stem}.yaml"
        if path.is_file():
            return path
    return None


def known(kind: str) -> list[str]:
    """The names of kind found (studies and sweeps spelt with '-', configs as their files)."""
    stems = {p.stem for root in _roots() for p in (root / KINDS[kind]).glob("*.yaml")}
    return sorted(stem if kind == "config" else stem.replace("_", "-") for stem in stems)


def config_path(arg: str | Path, kind: str = "config") -> Path:
    """The file arg gives: the path itself where it exists or is not a bare name, else the file of
    kind it names (ConfigError for a name that names none)."""
    path = Path(arg)
    if path.exists():
        return path
    if not is_name(str(arg)):
        if path.suffix in (".yaml", ".yml") and find(path.stem, kind) is not None:  # the README's configs/x.yaml, run elsewhere
            raise ConfigError(f"{kind} file not found: {arg}; cnnlab's own {path.stem} is given by its name alone: {path.stem}")
        return path  # read_yaml says it is missing
    found = find(str(arg), kind)
    if found is None:
        raise unknown(str(arg), kind)
    return found


def unknown(name: str, kind: str, also: str | None = None) -> ConfigError:
    """The error for a name that names no file of kind (nor of kind `also`, when given)."""
    from cnnlab.config import closest_key

    kinds = [kind] + ([also] if also else [])
    names = [n for k in kinds for n in known(k)]
    close = closest_key(name, names) or closest_key(name.replace("-", "_"), names)
    hint = f"; did you mean {close}?" if close else ""
    listed = "; ".join(f"{k} names: {', '.join(known(k)) or 'none'}" for k in kinds)
    folders = " or ".join(f"configs/{KINDS[k] + '/' if KINDS[k] else ''}{name.replace('-', '_')}.yaml" for k in kinds)
    return ConfigError(f"unknown {' or '.join(kinds)} {name!r}: no such file, nor {folders} here or among cnnlab's own{hint} ({listed})")


def _roots() -> list[Path]:
    here, own = Path("configs"), own_configs()
    return [here] if here.resolve() == own.resolve() else [here, own]
