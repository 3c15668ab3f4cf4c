"""`cnnlab compare`: every member x condition (ordered, permuted pixels) x seed as one run each,
then a table of mean ± std over the seeds and a sentence that reads it.

The cells are plain configs run by cnnlab.runner.run_cells; this module only builds them and
summarizes their results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnnlab.config import SEEDS_BELOW, article_range, article_text, config_from_dict, config_to_dict, name_within
from cnnlab.errors import ConfigError, counted
from cnnlab.runner import Cell
from cnnlab.studies.spec import Member

# article_test_acc (and the low end of an article's range) last, and always (empty where the article
# gives none): a reader of the older columns reads them as before
TABLE_COLUMNS = ["model", "params", "permuted", "seeds", "test_acc_mean", "test_acc_std", "train_seconds", "article_test_acc", "article_test_acc_low"]
MAX_RUNS = 10_000  # the cells are made in memory before any trains: --seeds 1e11 must be refused, not exhaust it


def make_cells(members: list[Member], seeds: int, permute: bool) -> list[Cell]:
    """One config per member, condition and seed (seeds cfg.seed, cfg.seed + 1, ...).

    The permutation's own seed stays the config's (null: the run's seed), so by default every seed
    draws a different permutation.
    """
    conditions = 2 if permute else 1
    if len(members) * conditions * seeds > MAX_RUNS:
        raise ConfigError(f"{len(members)} model(s) x {conditions} condition(s) x {seeds:,} seeds is more than {MAX_RUNS:,} runs; give fewer seeds")
    cells = []
    for m in members:
        if m.cfg.transform.permute:
            raise ConfigError(
                f"{m.label} sets transform.permute, but compare sets it itself (ordered pixels, and permuted ones with "
                "--permute): drop it from the config or the overrides"
            )
        if permute and m.cfg.train.tta != "none":
            raise ConfigError(
                f"{m.label} uses train.tta={m.cfg.train.tta}, which cannot undo --permute's scrambled pixels: add train.tta=none"
            )
        if m.cfg.seed + seeds - 1 >= SEEDS_BELOW:  # the cells' seeds are seed, seed + 1, ...: the last must be one a run takes
            raise ConfigError(f"--seeds {seeds} from {m.label}'s seed {m.cfg.seed} reaches {m.cfg.seed + seeds - 1}, past the largest seed (2**63 - 1); give a smaller seed or fewer seeds")
        for permuted in (False, True) if permute else (False,):
            for seed in range(m.cfg.seed, m.cfg.seed + seeds):
                name = name_within(m.cfg.name, f"-s{seed}" + ("-permuted" if permuted else ""))
                overrides = [f"name={name}", f"seed={seed}", f"transform.permute={str(permuted).lower()}"]
                cfg = config_from_dict(config_to_dict(m.cfg), overrides, m.source)
                cells.append(Cell(cfg, {"model": m.label, "permuted": permuted, "seed": seed}))
    return cells


def article(cfg) -> tuple[float | None, float | None]:
    """The article's test accuracy for a cell's model and condition, from its (planned) config, and
    the low end of the range it gives over its epochs, if it gives one."""
    low, high = article_range(cfg.reported.model_dump() if cfg.reported else None, cfg.transform.permute)
    return high, low


def cell_row(cell: Cell, result) -> dict:
    s = result.summary
    return {
        **cell.labels, "config": cell.cfg.name, "dataset": s["dataset"], "params": s["params"], "epochs": s["epochs"],
        "test_acc": s["test_acc"], **dict(zip(("article_test_acc", "article_test_acc_low"), article(cell.cfg))), "train_seconds": s["train_seconds"],
        "status": s["status"], "run_dir": str(result.path),
    }


def summarize(cell_rows: list[dict]):
    """One row per model x condition, in the members' order: mean and std (ddof 1) over the seeds
    (NaN for one seed: its spread is unknown, not zero)."""
    import pandas as pd

    df = pd.DataFrame(cell_rows)
    table = (
        df.groupby(["model", "permuted"], sort=False)
        .agg(params=("params", "first"), seeds=("seed", "count"), test_acc_mean=("test_acc", "mean"),
             test_acc_std=("test_acc", "std"), train_seconds=("train_seconds", "mean"),
             article_test_acc=("article_test_acc", "first"), article_test_acc_low=("article_test_acc_low", "first"))
        .reset_index()
    )
    return table[TABLE_COLUMNS]


def _article_shown(high, low) -> str:
    """'96.00%', or '52.00-61.00%' for a range over the article's epochs; '-' for none (NaN)."""
    known = {"test_acc": high, "test_acc_low": low if low == low else None} if high == high else None  # NaN: none
    return article_text(known, False, ".2%") or "-"


def display_rows(table) -> list[dict]:
    """The table as people read it: percentages with their spread, yes/no, thousands separators; the
    article's numbers beside cnnlab's where the article gives any."""
    with_article = table["article_test_acc"].notna().any()
    return [
        {
            "model": r.model, "params": f"{r.params:,}", "permuted": "yes" if r.permuted else "no", "seeds": r.seeds,
            "test accuracy (± std)": f"{r.test_acc_mean:.2%} ± {'-' if r.test_acc_std != r.test_acc_std else f'{100 * r.test_acc_std:.2f}'}",
            **({"article": _article_shown(r.article_test_acc, r.article_test_acc_low)} if with_article else {}),
            "train s": f"{r.train_seconds:.1f}",
        }
        for r in table.itertuples()
    ]


def _points(a: float, b: float) -> str:
    return f"{100 * abs(a - b):.1f} points"


def _level(a: float, b: float) -> bool:
    """Two accuracies the reading cannot tell apart: they differ by 0.0 points as it rounds them."""
    return _points(a, b) == _points(0, 0)


@dataclass(frozen=True)
class Accuracy:
    """One model and condition of the table: its mean accuracy, the seeds' sample std (NaN for one
    seed) and the number of seeds."""

    mean: float
    std: float
    seeds: int


# Student's t, 97.5% quantile, by degrees of freedom (two-sided 95%); near linear in 1/df between them
T_975 = {1: 12.706, 1.25: 8.028, 1.5: 6.017, 1.75: 4.949, 2: 4.303, 2.5: 3.575, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 8: 2.306, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}


def t_975(df: float) -> float:
    """The t distribution's 97.5% quantile at df degrees of freedom (fractional too), from T_975."""
    points = sorted([(1 / d, t) for d, t in T_975.items()] + [(0.0, 1.960)])  # df -> infinity: the normal's
    x = min(1 / max(df, 1.0), 1.0)
    for (x0, t0), (x1, t1) in zip(points, points[1:]):
        if x <= x1:
            return t0 + (t1 - t0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def noise(a: Accuracy, b: Accuracy) -> float | None:
    """How far apart two cells' means may be from their seeds' spread alone: the half-width of Welch's
    95% interval for the difference, t(df) * sqrt(s_a²/n_a + s_b²/n_b), df by Welch-Satterthwaite
    (3 seeds a side: about 3 to 4 standard errors). None where a cell has one seed (no spread to
    judge by)."""
    if a.std != a.std or b.std != b.std or min(a.seeds, b.seeds) < 2:
        return None
    va, vb = a.std**2 / a.seeds, b.std**2 / b.seeds
    if va + vb == 0:  # seeds that all agree: any difference is the models'
        return 0.0
    df = (va + vb) ** 2 / (va**2 / (a.seeds - 1) + vb**2 / (b.seeds - 1))
    return t_975(df) * math.sqrt(va + vb)


def _within(a: Accuracy, b: Accuracy) -> str:
    """' (within seed noise: ±2.9)' where a and b differ by less than their noise, else ''."""
    margin = noise(a, b)
    if margin is None or abs(a.mean - b.mean) > margin:
        return ""
    return f" (within seed noise: ±{100 * margin:.1f})"


def _beats(cells: dict[str, Accuracy]) -> str:
    """'CNN beats FC by 6.9 points (and X by ...)' from {model: cell}; 'FC and CNN tie at 14.0%'
    where the best are level ('..., X 2.0 points behind' the rest); a difference within the seeds'
    noise 'leads X by 0.3 points (within seed noise: ±2.9)'."""
    ranked = sorted(cells, key=lambda m: cells[m].mean, reverse=True)
    best = ranked[0]
    top = cells[best].mean
    if len(ranked) == 1:
        return f"{best} reaches {top:.1%}"
    leaders = [m for m in ranked if _level(top, cells[m].mean)]
    behind = [m for m in ranked if m not in leaders]
    if len(leaders) == 1:
        parts = []
        for m in behind:
            within = _within(cells[best], cells[m])
            parts.append(f"{'leads' if within else 'beats'} {m} by {_points(top, cells[m].mean)}{within}")
        return f"{best} " + " and ".join(parts)
    return f"{' and '.join(leaders)} tie at {top:.1%}" + "".join(
        f", {m} {_points(top, cells[m].mean)} behind{_within(cells[best], cells[m])}" for m in behind
    )


def _moves(before: Accuracy, after: Accuracy, model: str) -> str:
    """'FC loses 4.4 points', 'CNN gains 0.3 points (within seed noise: ±2.9)', or 'FC stays at 88.0%'."""
    if _level(before.mean, after.mean):
        return f"{model} stays at {after.mean:.1%}"
    verb = "loses" if after.mean < before.mean else "gains"
    return f"{model} {verb} {_points(after.mean, before.mean)}{_within(before, after)}"


def reading(table) -> str:
    """The table in one or two plain sentences, computed from its numbers; differences within the
    seeds' noise (see noise) are said to be."""
    acc = {(r.model, bool(r.permuted)): Accuracy(r.test_acc_mean, r.test_acc_std, int(r.seeds)) for r in table.itertuples()}
    models = list(dict.fromkeys(table["model"]))
    seeds = int(table["seeds"].max())
    ordered = {m: acc[m, False] for m in models if (m, False) in acc}
    permuted = {m: acc[m, True] for m in models if (m, True) in acc}
    head = f"Mean of {counted(seeds, 'seed')}: "
    if not permuted:
        return head + _beats(ordered) + "."
    text = head + _beats(ordered) + " on ordered pixels"
    moves = [_moves(ordered[m], permuted[m], m) for m in permuted if m in ordered]
    text += "; with permuted pixels " + ", ".join(moves)
    if len(permuted) > 1:
        text += f", so there {_beats(permuted)}"
    return text + "."
