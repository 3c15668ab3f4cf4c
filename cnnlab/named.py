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
COMMANDS = {"config": "train", "study": "compare", "sweep": "sweep"}


def own_configs() -> Path:
    """cnnlab's own configs/: the wheel's copy in the package, else the checkout's beside it."""
    packaged = PACKAGE / "configs"
    return packaged if packaged.is_dir() else PACKAGE.parent / "configs"


def is_name(arg: str) -> bool:
    """Whether arg is a bare name (mnist_cnn) rather than a path (configs/mnist_cnn.yaml, x.yml)."""
    return bool(arg) and "/" not in arg and os.sep not in arg and Path(arg).suffix not in (".yaml", ".yml")


def find(name: str, kind: str) -> Path | None:
    """The file of kind ('config', 'study' or 'sweep') that name names, or None: in the working
    directory's configs/ first, the name as typed first, then with '-' as '_' and '_' as '-'."""
    spellings = dict.fromkeys([name, name.replace("-", "_"), name.replace("_", "-")])
    hidden = None  # a broken link or a folder of that name, found before the file
    for root in roots():
        for stem in spellings:
            path = root / KINDS[kind] / f"{stem}.yaml"
            if is_file(path):
                if hidden is not None:  # not cnnlab's own, unsaid, where the user's of that name is broken
                    raise ConfigError(f"{hidden} is {_not_a_file(hidden)}, not a {kind} file: mend it, or move it aside for {path}")
                return path
            if hidden is None and os.path.lexists(path):
                hidden = path
    if hidden is not None and hidden.is_symlink():  # not "no such file": the link is there
        raise ConfigError(f"{hidden} is {_not_a_file(hidden)}, not a {kind} file")
    return None


def _not_a_file(path: Path) -> str:
    if path.is_symlink() and not _exists(path):
        return f"a broken link (to {os.readlink(path)})"
    return "a folder" if path.is_dir() else "not a file"


def files(kind: str) -> dict[str, Path]:
    """Every name of kind there is -> the file find() finds for it (configs as their files are
    spelt, studies and sweeps with '-' for '_'), sorted by name. Where find() refuses a name (a
    broken link, or a folder hiding a file of that name) its path is the link or folder."""
    found: dict[str, Path] = {}
    hiding: dict[str, Path] = {}  # name -> the first broken link or folder of that name
    for root in roots():  # the working directory's first, as find() takes them
        for path in sorted((root / KINDS[kind]).glob("*.yaml")):
            name = shown(path.stem, kind)
            if is_file(path):
                found.setdefault(name, hiding.get(name, path))
            elif name not in found:
                hiding.setdefault(name, path)
    for name, path in hiding.items():
        if path.is_symlink():  # refused with no file behind it too
            found.setdefault(name, path)
    return dict(sorted(found.items()))


def known(kind: str) -> list[str]:
    """The names of kind there are."""
    return list(files(kind))


def shown(name: str, kind: str) -> str:
    """name as known() spells it."""
    return name if kind == "config" else name.replace("_", "-")


def config_path(arg: str | Path, kind: str = "config") -> Path:
    """The file arg gives: the path itself where it exists (for a bare name, a file: not a folder
    of that name) or is not a bare name, else the file of kind it names (ConfigError for a name
    that names none)."""
    text = str(arg)
    if not text:
        raise ConfigError("an empty name: give a file or the name of one (cnnlab configs lists them)")
    path = Path(arg)
    if _exists(path) and not (is_name(text) and path.is_dir()):
        return path
    if not is_name(text):
        if path.suffix in (".yaml", ".yml") and _under_configs(path, kind):  # the README's configs/x.yaml, run elsewhere
            found = find(path.stem, kind)
            if found is not None:
                name = shown(path.stem, kind)
                raise ConfigError(f"{kind} file not found: {arg}; cnnlab's own ({found}) is given by its name alone: {name}")
        return path  # read_yaml says it is missing
    if find(text, kind) is None and _exists(path):  # a folder of that name, and no file it names
        return path  # read_yaml says it is a directory
    return by_name(text, kind)


def relative_config(config: str, folder: Path) -> Path:
    """The config a study or sweep file names: config relative to folder (the file's), else, for a
    bare name, the config it names (a study file of your own may name cnnlab's configs so)."""
    path = Path(os.path.normpath(folder / config))  # configs/mnist_fc.yaml, not configs/studies/../mnist_fc.yaml
    if is_name(config) and not is_file(path):
        return by_name(config, "config")
    return config_path(path)


def by_name(name: str, kind: str) -> Path:
    """The file of kind that name names; ConfigError (unknown) where there is none."""
    found = find(name, kind)
    if found is None:
        raise unknown(name, kind)
    return found


def unknown(name: str, kind: str, also: str | None = None) -> ConfigError:
    """The error for a name that names no file of kind (nor of kind `also`, when given): a file of
    another kind of that name is told with its command, else the closest name."""
    from cnnlab.config import closest_key

    kinds = [kind] + ([also] if also else [])
    for other in KINDS:
        if other not in kinds and find(name, other) is not None:
            return ConfigError(f"{name!r} is a {other}, not a {' or '.join(kinds)}: run it with cnnlab {COMMANDS[other]} {name}")
    names = [n for k in kinds for n in known(k)]
    close = closest_key(name, names) or closest_key(name.replace("-", "_"), names)
    hint = f"; did you mean {close}?" if close else ""
    listed = "; ".join(f"{k} names: {', '.join(known(k)) or 'none'}" for k in kinds)
    folders = " or ".join(f"configs/{KINDS[k] + '/' if KINDS[k] else ''}{name}.yaml" for k in kinds)
    return ConfigError(f"unknown {' or '.join(kinds)} {name!r}: no such file, nor {folders} here or among cnnlab's own{hint} ({listed})")


def _under_configs(path: Path, kind: str) -> bool:
    """Whether path's folder is configs/ (configs/studies/ for a study, configs/sweeps/ for a sweep)."""
    folder = path.parent
    if KINDS[kind]:
        if folder.name != KINDS[kind]:
            return False
        folder = folder.parent
    return folder.name == "configs"


def is_file(path: str | Path) -> bool:
    """Whether path names an existing file; not when it cannot be a path (description=<300 letters>)."""
    try:
        return Path(path).is_file()
    except OSError:  # a name too long to be a file
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def roots() -> list[Path]:
    """Where names are looked up: the working directory's configs/, then cnnlab's own (once, where they are the same)."""
    here, own = Path("configs"), own_configs()
    return [here] if here.resolve() == own.resolve() else [here, own]
