"""What `cnnlab configs` lists: every config, study and sweep a name reaches (named.py), with what it
trains, what its article reported and its description (else its file's first sentence). No torch here."""

from __future__ import annotations

import re
from pathlib import Path

from cnnlab import named
from cnnlab.errors import ConfigError, counted

COLUMNS = ["kind", "name", "trains", "reported", "about"]
ABOUT_CHARS = 160  # a longer first sentence is cut at a word: the file has it whole


def catalogue(kinds=("config", "study", "sweep")) -> list[dict]:
    """One row per name, in the order of kinds, then by name; a file that does not load says why in
    its `about` instead of stopping the list."""
    rows = []
    for kind in kinds:
        for name, path in named.files(kind).items():
            row = {"kind": kind, "name": name, "trains": "", "reported": "", "about": ""}
            try:
                if not named.is_file(path):
                    named.find(name, kind)  # refuses it, saying why
                row.update(_described(kind, path))
            except ConfigError as e:
                row["about"] = f"does not load: {e}"
            if not row["about"]:
                row["about"] = first_sentence(path)
            rows.append(row)
    return rows


def _described(kind: str, path: Path) -> dict:
    from cnnlab.config import article_text, load_config

    if kind == "config":
        cfg = load_config(path)
        reported = article_text(cfg.reported.model_dump(), False) if cfg.reported is not None else None
        return {
            "trains": f"{cfg.model.name} on {cfg.dataset.name}, {counted(cfg.train.epochs, 'epoch')}",
            "reported": reported or "",
            "about": cfg.description,
        }
    if kind == "study":
        from cnnlab.studies.spec import resolve

        spec, members = resolve([str(path)], [])  # its members' configs loaded: one that does not load is told
        names = ", ".join(Path(m.source).stem for m in members)
        return {"trains": f"{names} x {spec.seeds} seeds" + (", permuted too" if spec.permute else ""), "about": spec.description}
    from cnnlab.sweep import load_sweep

    sweep = load_sweep(path)
    space = ", ".join(sweep.spec.space)
    return {"trains": f"{sweep.models} on {sweep.datasets}: {space} x {len(sweep.spec.seeds)} seeds", "about": sweep.spec.description}


def first_sentence(path: Path) -> str:
    """The first sentence of the comment that opens a file (its lines joined), or ''."""
    lines = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    comment = " ".join(filter(None, lines))
    match = re.match(r"(.+?[.!?])(?=\s+[A-Z(\"]|$)", comment)  # not at i.e. or e.g. mid-sentence
    sentence = match.group(1) if match else comment
    return sentence if len(sentence) <= ABOUT_CHARS else sentence[:ABOUT_CHARS].rsplit(" ", 1)[0] + " …"
