"""`cnnlab compare`, `cnnlab shift-sweep`, `cnnlab show` and the study listing: end to end on tiny
IDX files, the reading sentences against the numbers, the shift semantics, and the studies'
outcomes on the real data when it is present (slow)."""

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rich.console import Console

from cnnlab import figures, report, runs
from cnnlab.cli import main
from cnnlab.config import ShiftConfig, load_config
from cnnlab.data import load_splits
from cnnlab.engine import NonFiniteLoss, evaluate, loss_function
from cnnlab.errors import ConfigError, RunError
from cnnlab.experiment import run
from cnnlab.studies import compare, shift_sweep
from cnnlab.studies.record import StudyRecord
from cnnlab.studies.spec import common_overrides, resolve
from cnnlab.transforms import Pipeline, make_permutation, normalize, permute_pixels, shift, to_float
from conftest import ROOT, no_room_for, real_data

FAST = ["--device", "cpu", "train.max_steps=3", "train.eval_batch_size=64"]


def cnnlab(capsys, monkeypatch, *args, cwd=ROOT) -> tuple[int, str, str]:
    """Run the real CLI entry point in this process, in cwd: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["cnnlab", *map(str, args)])
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def last_line(text: str) -> Path:
    return Path(text.strip().splitlines()[-1])


def check_reading(text: str, table: pd.DataFrame) -> None:
    """Every 'A beats B by N points' ('A and B tie at N%', 'A leads B by N points (within seed noise:
    ±M)') and 'A loses/gains N points' ('A stays at N%') in text agrees with the table, and a
    difference is said to be within the seeds' noise exactly when it is."""
    cells = {(r.model, bool(r.permuted)): compare.Accuracy(r.test_acc_mean, r.test_acc_std, int(r.seeds)) for r in table.itertuples()}
    acc = {k: c.mean for k, c in cells.items()}
    assert text.startswith(f"Mean of {int(table['seeds'].max())} seed")  # a reading there is, and about this table
    moved = [m for m in set(table.model) if (m, True) in acc and (m, False) in acc]
    assert len(re.findall(r"\S+ (?:beats|leads) \S+ by [\d.]+ points| tie at ", text)) >= (table.model.nunique() > 1) + (len(moved) > 1)
    assert len(re.findall(r"(?:loses|gains) [\d.]+ points|stays at", text)) == len(moved)

    def check_noise(a, b, said: str) -> None:
        margin = compare.noise(cells[a], cells[b])
        within = margin is not None and abs(acc[a] - acc[b]) <= margin
        assert bool(said) == within, (a, b, said, margin)
        if said:
            assert float(said) == pytest.approx(100 * margin, abs=0.051)

    for model, stays in re.findall(r"(\S+) stays at ([\d.]+)%", text):
        assert float(stays) == pytest.approx(100 * acc[model, True], abs=0.051)
        assert acc[model, True] == pytest.approx(acc[model, False], abs=0.0005)
    ordered_part, _, permuted_part = text.partition("with permuted pixels")
    for part, permuted in ((ordered_part, False), (permuted_part.partition("so there")[2], True)):
        for a, verb, b, points, said in re.findall(r"(\S+) (beats|leads) (\S+) by ([\d.]+) points(?: \(within seed noise: ±([\d.]+)\))?", part):
            assert acc[a, permuted] >= acc[b, permuted]
            assert float(points) == pytest.approx(100 * (acc[a, permuted] - acc[b, permuted]), abs=0.051)
            assert (verb == "leads") == bool(said)
            check_noise((a, permuted), (b, permuted), said)
    for model, verb, points, said in re.findall(r"(\S+) (loses|gains) ([\d.]+) points(?: \(within seed noise: ±([\d.]+)\))?", text):
        change = acc[model, True] - acc[model, False]
        assert (verb == "loses") == (change < 0)
        assert float(points) == pytest.approx(100 * abs(change), abs=0.051)
        check_noise((model, False), (model, True), said)


# ---------------------------------------------------------------------------- compare
def test_compare_named_study_end_to_end(tiny_data, tmp_path, capsys, monkeypatch):
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "fc-vs-cnn", "--permute", "--seeds", "2", "--data-dir", tiny_data, "--runs-dir", tmp_path, *FAST)
    assert code == 0, err
    study = last_line(out)
    assert study.parent == tmp_path and "fc-vs-cnn" in study.name and (study / ".kind").read_text() == "study"
    assert {"table.csv", "table.md", "cells.csv", "accuracy.png", "summary.json"} <= {p.name for p in study.iterdir()}
    assert not list(study.glob(".*.tmp"))

    table = pd.read_csv(study / "table.csv")
    assert list(table.columns) == ["model", "params", "permuted", "seeds", "test_acc_mean", "test_acc_std", "train_seconds", "article_test_acc", "article_test_acc_low"]
    assert [(m, p) for m, p in zip(table.model, table.permuted)] == [("FC", False), ("FC", True), ("CNN", False), ("CNN", True)]
    assert list(table.params) == [6442, 6442, 6422, 6422] and set(table.seeds) == {2}
    # study A's numbers beside each row: the permuted rows get the article's permuted ones
    assert list(table.article_test_acc) == [0.88, 0.85, 0.96, 0.80]
    md = (study / "table.md").read_text()
    assert "| model | params | permuted | seeds | test accuracy (± std) | article | train s |" in md
    assert re.search(r"\| CNN \| 6,422 \| yes \| 2 \| [\d.]+% ± [\d.]+ \| 80\.00% \|", md), md
    header = next([c.strip() for c in line.split("┃")[1:-1]] for line in out.splitlines() if line.startswith("┃"))
    printed = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    assert header[5] == "article" and [row[5] for row in printed] == ["88.00%", "85.00%", "96.00%", "80.00%"], out

    cells = pd.read_csv(study / "cells.csv")
    assert len(cells) == 8 and set(cells.status) == {"completed"}
    for r in table.itertuples():  # the table is the mean over its cells
        mine = cells[(cells.model == r.model) & (cells.permuted == r.permuted)]
        assert r.test_acc_mean == pytest.approx(mine.test_acc.mean()) and r.test_acc_std == pytest.approx(mine.test_acc.std())

    summary = json.loads((study / "summary.json").read_text())
    assert summary["kind"] == "study" and summary["status"] == "completed" and summary["seeds"] == 2
    assert len(summary["cells"]) == 8 and all((study / c / "model.pt").is_file() for c in summary["cells"])
    # the permutation varies with the seed: the cells' configs leave permute_seed to the run's seed
    permuted = [load_config(study / c / "config.yaml") for c in summary["cells"] if "-permuted-" in c]
    assert len(permuted) == 4 and all(c.transform.permute and c.transform.permute_seed is None for c in permuted)
    assert sorted(c.seed for c in permuted) == [0, 0, 1, 1]

    check_reading(summary["reading"], table)
    assert summary["reading"] in " ".join(out.split()) and summary["reading"] in (study / "table.md").read_text()
    assert "| FC |" in (study / "table.md").read_text()


def test_compare_config_files_dataset_and_overrides(tiny_data, tmp_path, capsys, monkeypatch):
    code, out, err = cnnlab(
        capsys, monkeypatch, "compare", "configs/mnist_fc.yaml", "configs/mnist_cnn.yaml", "--seeds", "1",
        "--dataset", "fashion-mnist", "model.hidden=[8]", "--data-dir", tiny_data, "--runs-dir", tmp_path, *FAST,
    )
    assert code != 0 and "model.hidden" in err  # the override applies to every member: the CNN has no hidden
    code, out, err = cnnlab(
        capsys, monkeypatch, "compare", "configs/mnist_fc.yaml", "configs/mnist_cnn.yaml", "--seeds", "1", "--epochs", "2",
        "--dataset", "fashion-mnist", "--data-dir", tiny_data, "--runs-dir", tmp_path, *FAST,
    )
    assert code == 0, err
    study = last_line(out)
    table = pd.read_csv(study / "table.csv")
    assert list(table.model) == ["mnist_fc", "mnist_cnn"] and not table.permuted.any() and set(table.seeds) == {1}
    # --dataset clears the article's numbers (they are MNIST's): the column is empty, and not shown
    assert table.article_test_acc.isna().all()
    assert "article" not in (study / "table.md").read_text() and "article" not in out
    cells = pd.read_csv(study / "cells.csv")
    assert set(cells.dataset) == {"fashion-mnist"} and set(cells.epochs) == {2}
    reading = json.loads((study / "summary.json").read_text())["reading"]
    check_reading(reading, table)
    assert "permuted" not in reading


@pytest.mark.parametrize("command", ["compare", "shift-sweep"])
def test_config_files_whose_names_hold_other_characters_name_the_study_as_train_names_the_run(command, tiny_data, tmp_path, capsys, monkeypatch):
    """cnnlab train takes 'my fc+1.yaml' (its run is named my_fc_1); a study of it ended in a
    pydantic traceback, its default name 'my fc+1' not being a valid study name."""
    config = tmp_path / "my fc+1.yaml"
    config.write_text((ROOT / "configs/mnist_fc.yaml").read_text().replace("name: mnist_fc", ""))
    extra = ["--seeds", "1"] if command == "compare" else ["--max-shift", "1", "--image-index", "0"]
    code, out, err = cnnlab(capsys, monkeypatch, command, config, *extra, "--data-dir", tiny_data, "--runs-dir", tmp_path / "runs", *FAST)
    assert code == 0, err
    assert re.fullmatch(r"\d{8}-\d{6}-my_fc_1-[0-9a-f]{6}", last_line(out).name)


def test_reading_sentence_from_numbers():
    rows = [
        {"model": m, "permuted": p, "seed": s, "params": 1, "test_acc": a, "train_seconds": 1.0, "article_test_acc": None, "article_test_acc_low": None}
        for m, p, accs in [("FC", False, [0.88, 0.89]), ("FC", True, [0.885, 0.887]), ("CNN", False, [0.96, 0.95]), ("CNN", True, [0.82, 0.83])]
        for s, a in enumerate(accs)
    ]
    table = compare.summarize(rows)
    assert compare.reading(table) == (
        "Mean of 2 seeds: CNN beats FC by 7.0 points on ordered pixels; with permuted pixels FC gains 0.1 points "
        "(within seed noise: ±5.6), CNN loses 13.0 points, so there FC beats CNN by 6.1 points."
    )
    assert compare.reading(table[~table.permuted]) == "Mean of 2 seeds: CNN beats FC by 7.0 points."


def test_reading_says_which_differences_are_within_the_seeds_noise():
    """A difference within Welch's 95% interval (from the seeds' sample stds) is said to be within
    seed noise rather than read as a win or a loss: 0.2 points between two models whose seeds spread
    over 6 is no evidence either way."""
    rows = [
        {"model": m, "permuted": p, "seed": s, "params": 1, "test_acc": a, "train_seconds": 1.0, "article_test_acc": None, "article_test_acc_low": None}
        for m, p, accs in [("FC", False, [0.90, 0.84, 0.87]), ("FC", True, [0.89, 0.87, 0.87]),
                           ("CNN", False, [0.83, 0.91, 0.876]), ("CNN", True, [0.84, 0.88, 0.88])]
        for s, a in enumerate(accs)
    ]
    table = compare.summarize(rows)
    text = compare.reading(table)
    # FC 87.00 ± 3.00, CNN 87.20 ± 4.01: t(3.7 df) 2.87 * sqrt((3.00² + 4.01²) / 3) = 8.3 points of noise
    assert text.startswith("Mean of 3 seeds: CNN leads FC by 0.2 points (within seed noise: ±8.3) on ordered pixels; ")
    assert "FC gains 0.7 points (within seed noise: ±6.5)" in text
    check_reading(text, table)
    # the same means from seeds that agree closely are a real difference
    steady = [dict(r) for r in rows]
    for r, mean in zip(steady, [0.87] * 3 + [0.8767] * 3 + [0.872] * 3 + [0.8667] * 3):
        r["test_acc"] = mean + (r["seed"] - 1) * 0.0005
    steady_table = compare.summarize(steady)
    text = compare.reading(steady_table)
    assert text.startswith("Mean of 3 seeds: CNN beats FC by 0.2 points on ordered pixels; ") and "within" not in text
    check_reading(text, steady_table)
    # t's 97.5% quantile, fractional degrees of freedom too (exact values: 12.706, 6.017, 3.575, 2.776, 1.984)
    for df, t in ((1, 12.706), (1.5, 6.017), (2.5, 3.575), (4, 2.776), (100, 1.984), (1e9, 1.960)):
        assert compare.t_975(df) == pytest.approx(t, rel=0.005)
    assert compare.t_975(2.25) == pytest.approx(3.875, rel=0.02) and compare.t_975(7) == pytest.approx(2.365, rel=0.01)
    same = compare.Accuracy(0.9, 0.0, 3)
    assert compare.noise(same, compare.Accuracy(0.91, 0.0, 3)) == 0.0 and compare.noise(same, compare.Accuracy(0.9, float("nan"), 1)) is None


def test_reading_says_a_tie_rather_than_a_win_by_0_0_points():
    """Two models at the same accuracy (at chance after a few steps, say) read 'FC beats CNN by 0.0
    points', and a model its permutation did not move 'gains 0.0 points'."""
    def table(accs):
        return compare.summarize([
            {"model": m, "permuted": p, "seed": 0, "params": 1, "test_acc": a, "train_seconds": 1.0, "article_test_acc": None, "article_test_acc_low": None}
            for (m, p), a in accs.items()
        ])

    assert compare.reading(table({("FC", False): 0.14, ("CNN", False): 0.14})) == "Mean of 1 seed: FC and CNN tie at 14.0%."
    assert compare.reading(table({("A", False): 0.9, ("B", False): 0.9, ("C", False): 0.8})) == (
        "Mean of 1 seed: A and B tie at 90.0%, C 10.0 points behind."
    )
    moved = table({("FC", False): 0.88, ("FC", True): 0.88, ("CNN", False): 0.96, ("CNN", True): 0.82})
    assert compare.reading(moved) == (
        "Mean of 1 seed: CNN beats FC by 8.0 points on ordered pixels; with permuted pixels FC stays at 88.0%, "
        "CNN loses 14.0 points, so there FC beats CNN by 6.0 points."
    )
    check_reading(compare.reading(moved), moved)


def test_one_seed_has_no_spread_rather_than_zero_spread(tmp_path):
    rows = [{"model": "FC", "permuted": False, "seed": 0, "params": 1, "test_acc": 0.88, "train_seconds": 1.0, "article_test_acc": None, "article_test_acc_low": None}]
    table = compare.summarize(rows)
    assert np.isnan(table.test_acc_std.iloc[0])
    assert compare.display_rows(table)[0]["test accuracy (± std)"] == "88.00% ± -"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NaN error bar or label position warns
        fig = figures.comparison_bars(table, "one seed")
        figures.save(fig, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 0
    # no error bar, not one of zero length with its caps, and a title that promises no std
    (ax,) = fig.axes
    assert all(bars.errorbar is None for bars in ax.containers)
    assert ax.get_title().endswith("\n1 seed, no spread")


def test_shift_reading_names_the_model_that_loses_least_not_the_most_accurate():
    accs = {"FC": (0.653, 0.628), "CNN": (0.80, 0.784), "CNN+aug": (0.437, 0.443)}  # centred, shifted by 1 px
    rows = [
        {"model": m, "dx": dx, "dy": 0, "test_acc": centred if dx == 0 else shifted}
        for m, (centred, shifted) in accs.items() for dx in (-1, 0, 1)
    ]
    assert shift_sweep.reading(rows, "x", "zero") == (
        "Shifted by 1 px along x (mean of both directions, zero), FC from 65.3% to 62.8% (-2.5 points), "
        "CNN from 80.0% to 78.4% (-1.6 points), CNN+aug from 43.7% to 44.3% (+0.6 points); CNN+aug gains the most at 1 px."
    )
    # 'loses the least' only when the best of them did lose (it said so of CNN+aug's +0.6 points)
    rows = [r for r in rows if r["model"] != "CNN+aug"]
    assert shift_sweep.reading(rows, "x", "zero").endswith("(-1.6 points); CNN loses the least at 1 px.")
    rows = [{**r, "test_acc": 0.8} for r in rows if r["model"] == "CNN"] + [r for r in rows if r["model"] == "FC"]
    assert shift_sweep.reading(rows, "x", "zero").endswith("; CNN keeps its accuracy best at 1 px.")


def test_shift_reading_says_when_a_lead_is_within_the_test_sets_sampling_noise():
    """One run per model: 0.1 points between two models' losses at 4 px, measured on 10,000 test
    images, is within what the test set's sampling alone moves them by (about ±1.7 points here), so
    they fare alike rather than one 'losing the least'; 2.2 points apart they do not."""
    accs = {"FC": (0.800, 0.269), "CNN": (0.850, 0.320)}  # centred, shifted by 4 px: -53.1 and -53.0 points
    rows = [{"model": m, "dx": dx, "dy": 0, "test_acc": centred if dx == 0 else shifted}
            for m, (centred, shifted) in accs.items() for dx in (-4, 0, 4)]
    margin = shift_sweep.sampling_noise((0.85, 0.32, 10_000), (0.80, 0.269, 10_000))
    assert 0.0165 < margin < 0.017  # 2 * sqrt((.85*.15 + .32*.68 + .8*.2 + .269*.731) / 10,000)
    assert shift_sweep.reading(rows, "x", "roll", {"FC": 10_000, "CNN": 10_000}).endswith(
        f"(-53.0 points); FC and CNN fare alike at 4 px (within the test set's sampling noise: ±{100 * margin:.1f})."
    )
    apart = [{**r, "test_acc": 0.341} if r["model"] == "CNN" and r["dx"] else r for r in rows]  # -50.9: 2.2 points ahead
    assert shift_sweep.reading(apart, "x", "roll", {"FC": 10_000, "CNN": 10_000}).endswith("(-50.9 points); CNN loses the least at 4 px.")
    assert shift_sweep.reading(rows, "x", "roll").endswith("(-53.0 points); CNN loses the least at 4 px.")  # no counts: the means as they are
    # a third model far behind: the two leaders lose the least together
    rows += [{"model": "MLP", "dx": dx, "dy": 0, "test_acc": 0.9 if dx == 0 else 0.1} for dx in (-4, 0, 4)]
    assert shift_sweep.reading(rows, "x", "roll", {"FC": 10_000, "CNN": 10_000, "MLP": 10_000}).endswith(
        f"FC and CNN lose the least at 4 px (within the test set's sampling noise: ±{100 * margin:.1f})."
    )
    # leaders of which one gained and one lost neither 'gain the most' nor 'lose the least' together
    mixed = [{**r, "test_acc": {"FC": 0.805, "CNN": 0.846}[r["model"]]} if r["dx"] and r["model"] != "MLP" else r for r in rows]
    assert shift_sweep.reading(mixed, "x", "roll", {"FC": 10_000, "CNN": 10_000, "MLP": 10_000}).endswith(
        "(-80.0 points); FC and CNN keep their accuracy best at 4 px (within the test set's sampling noise: ±1.5)."
    )


def test_image_reading_says_where_the_model_is_right():
    """The sentence per model that shift-sweep prints and keeps in summary.json's image_reading."""
    steps = [-2, -1, 0, 1, 2]
    probs = np.array([[0.1, 0.8, 0.1, 0.0], [0.2, 0.7, 0.1, 0.0], [0.1, 0.3, 0.6, 0.0], [0.5, 0.2, 0.3, 0.0], [0.0, 0.9, 0.1, 0.0]])
    said = [shift_sweep.image_reading("CNN", probs, steps, label, ["a", "b", "c", "d"]) for label in (1, 2, 3)]
    assert said == [
        "CNN: b has probability 0.30 at 0 px (the model says c, 0.60); predicted b at -2..-1, 2 px (3 of 5 shifts).",
        "CNN: c has probability 0.60 at 0 px; predicted c at 0 px (1 of 5 shifts).",
        "CNN: d has probability 0.00 at 0 px (the model says c, 0.60); predicted d at none of the shifts (0 of 5 shifts).",
    ]


def test_each_compare_row_gets_the_articles_number_for_its_model_and_condition():
    """Study A's CNN gives an ordered and a permuted number, LeNet an ordered one only, mnist_fast none;
    --dataset clears them all, and a table without any shows no article column."""
    configs = [str(ROOT / "configs" / f"{name}.yaml") for name in ("mnist_cnn", "lenet", "mnist_fast")]
    result = dataclasses.make_dataclass("Result", ["path", "summary"])(
        Path("run"), {"dataset": "mnist", "params": 1, "epochs": 1, "test_acc": 0.9, "train_seconds": 1.0, "status": "completed"}
    )

    def table(overrides):
        _, members = resolve(configs, overrides)
        return compare.summarize([compare.cell_row(c, result) for c in compare.make_cells(members, 1, permute=True)])

    shown = compare.display_rows(table(common_overrides(None, None, "cpu")))
    assert [(r["model"], r["permuted"], r["article"]) for r in shown] == [
        ("mnist_cnn", "no", "96.00%"), ("mnist_cnn", "yes", "80.00%"), ("lenet", "no", "98.50%"), ("lenet", "yes", "-"),
        ("mnist_fast", "no", "-"), ("mnist_fast", "yes", "-"),
    ]
    assert list(shown[0]) == ["model", "params", "permuted", "seeds", "test accuracy (± std)", "article", "train s"]
    elsewhere = table(common_overrides(None, "fashion-mnist", "cpu"))  # --dataset fashion-mnist
    assert list(elsewhere.columns) == compare.TABLE_COLUMNS and elsewhere.article_test_acc.isna().all()
    assert "article" not in compare.display_rows(elsewhere)[0]


def test_named_study_lookup_user_study_and_errors(tmp_path, monkeypatch):
    studies = tmp_path / "configs" / "studies"
    studies.mkdir(parents=True)
    (studies / "my_study.yaml").write_text(
        f"name: my-study\nmembers:\n  - {ROOT / 'configs/mnist_fc.yaml'}\n  - {{config: {ROOT / 'configs/lenet.yaml'}, label: LeNet}}\n"
        "seeds: 5\noverrides: [train.epochs=7]\n"
    )
    monkeypatch.chdir(tmp_path)
    spec, members = resolve(["my-study"], ["train.batch_size=10"])
    assert spec.seeds == 5 and [m.label for m in members] == ["mnist_fc", "LeNet"]
    assert all(m.cfg.train.epochs == 7 and m.cfg.train.batch_size == 10 for m in members)
    with pytest.raises(ConfigError, match="unknown study or config 'nope'.*my-study"):
        resolve(["nope"], [])
    with pytest.raises(ConfigError, match="share a label"):
        resolve([str(ROOT / "configs/mnist_fc.yaml")] * 2, [])
    (studies / "bad.yaml").write_text("name: bad\nmembers: []\n")
    with pytest.raises(ConfigError, match="members"):
        resolve(["bad"], [])


def test_a_study_names_its_members_by_their_plain_paths(capsys, monkeypatch, tmp_path):
    """A member was shown as configs/studies/../mnist_fc.yaml, as the study file gives it."""
    code, _, err = cnnlab(capsys, monkeypatch, "compare", "fc-vs-cnn", "train.epoch=1", "--runs-dir", tmp_path)
    assert code == 2 and err == "error: configs/mnist_fc.yaml, override train.epoch=1: unknown key 'train.epoch'; did you mean 'train.epochs'?\n"
    _, members = resolve(["fc-vs-cnn"], [])
    assert [m.source for m in members] == ["configs/mnist_fc.yaml", "configs/mnist_cnn.yaml"]  # summary.json's members


def test_a_typo_in_a_study_files_overrides_is_named_as_the_study_files_not_the_command_lines(capsys, monkeypatch, tmp_path):
    """It read 'configs/mnist_fc.yaml, override optimzer.lr=0.1: unknown key ...', as if typed on the command line."""
    study = tmp_path / "typo.yaml"
    study.write_text(f"name: typo\nmembers:\n  - {ROOT / 'configs/mnist_fc.yaml'}\noverrides: [optimzer.lr=0.1]\n")
    code, _, err = cnnlab(capsys, monkeypatch, "compare", study, "train.epochs=1", "--runs-dir", tmp_path / "runs")
    assert code == 2 and err == (f"error: {study}: override optimzer.lr=0.1 (the study file's overrides, for member "
                                 f"{ROOT / 'configs/mnist_fc.yaml'}): unknown key 'optimzer'; did you mean 'optimizer'?\n")
    code, _, err = cnnlab(capsys, monkeypatch, "compare", study, "train.epoch=1", "--runs-dir", tmp_path / "runs")
    assert code == 2 and "override train.epoch=1: unknown key 'train.epoch'" in err  # the command line's typo stays its own
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override,problem", [
    ("optimzer", " must look like KEY=VALUE, e.g. train.epochs=3"),
    ("seed.x=1", ": seed is not a section"),
])
def test_a_malformed_override_in_a_study_file_is_named_as_the_study_files(capsys, monkeypatch, tmp_path, override, problem):
    """It read "override 'optimzer' must look like KEY=VALUE ...", naming no study file at all."""
    study = tmp_path / "malformed.yaml"
    study.write_text(f"name: malformed\nmembers:\n  - {ROOT / 'configs/mnist_fc.yaml'}\noverrides: [{override}]\n")
    code, _, err = cnnlab(capsys, monkeypatch, "compare", study, "--runs-dir", tmp_path / "runs")
    assert code == 2 and err == (f"error: {study}: override {override} (the study file's overrides, for member "
                                 f"{ROOT / 'configs/mnist_fc.yaml'}){problem}\n")
    assert not (tmp_path / "runs").exists()


def test_an_override_given_again_after_one_that_replaces_its_section_still_applies(tmp_path):
    """The study file's train.epochs=3 typed again after train={batch_size: 8} applies last, as listed:
    the overrides are one list, the study file's first, not each text at its first place."""
    study = tmp_path / "again.yaml"
    study.write_text(f"name: again\nmembers:\n  - {ROOT / 'configs/mnist_fc.yaml'}\noverrides: [train.epochs=3]\n")
    _, members = resolve([str(study)], ["train={batch_size: 8}", "train.epochs=3"])
    assert (members[0].cfg.train.epochs, members[0].cfg.train.batch_size) == (3, 8)


def test_compare_user_errors_are_one_line(capsys, monkeypatch, tmp_path):
    for args, needle in [
        (["compare", "no-such-study"], "unknown study"),
        (["compare", "fc-vs-cnn", "--dataset", "svhn"], "unknown --dataset 'svhn'; valid: mnist"),  # the option, not dataset.name
        (["compare", "fc-vs-cnn", "transform.permute=true"], "compare sets it itself"),  # not silently dropped
        (["compare", "fc-vs-cnn", "--dataset", "toy"], "cannot take inputs of shape (1, 4, 4)"),  # before FC trains
    ]:
        code, out, err = cnnlab(capsys, monkeypatch, *args, "--runs-dir", tmp_path)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not tmp_path.exists() or not list(tmp_path.iterdir())  # nothing was created


@pytest.mark.parametrize("address", [[], ["--address", "local"]], ids=["here", "local-ray"])
def test_missing_data_is_refused_before_the_study_starts(tmp_path, capsys, monkeypatch, address):
    if address:  # a local Ray trains on this machine's data: checked before Ray starts
        ray = pytest.importorskip("ray")
        monkeypatch.setattr(ray, "init", lambda *args, **kwargs: pytest.fail("Ray started before the data was checked"))
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "fc-vs-cnn", "dataset.download=false", *address,
                            "--data-dir", tmp_path / "empty", "--runs-dir", tmp_path / "runs")
    assert code == 1 and "MNIST not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing to clean up


def oversized(path: Path, config: str = "configs/mnist_cnn.yaml", key: str = "train_subset", n: int = 301) -> Path:
    """A copy of config whose subset asks for more images than tiny_data's split (300 train, 100 test)."""
    path.write_text((ROOT / config).read_text().replace("  name: mnist\n", f"  name: mnist\n  {key}: {n}\n", 1))
    return path


TOO_MANY = "error: dataset.{key}={n} is more than the {size} images of the mnist {split} split; ask for {size} or fewer, or leave it out to use them all"


@pytest.mark.parametrize("command", [["compare", "--seeds", "1"], ["shift-sweep", "--image-index", "0"]], ids=["compare", "shift-sweep"])
@pytest.mark.parametrize("key, n, split, size", [("train_subset", 301, "training", 300), ("test_subset", 101, "test", 100)])
def test_a_subset_larger_than_its_split_in_any_member_is_refused_before_the_study_starts(tiny_data, tmp_path, capsys, monkeypatch, command, key, n, split, size):
    """Not when its cell comes to train, after the study directory is made and the earlier cells trained."""
    from cnnlab import experiment

    monkeypatch.setattr(experiment, "run", lambda *a, **k: pytest.fail("a cell trained"))
    big = oversized(tmp_path / "big.yaml", key=key, n=n)
    code, out, err = cnnlab(capsys, monkeypatch, command[0], "configs/mnist_fc.yaml", big, *command[1:],
                            "--data-dir", tiny_data, "--runs-dir", tmp_path / "runs", *FAST)
    # the member named, as it is one of several
    assert code == 2 and err.splitlines() == [TOO_MANY.format(key=key, n=n, split=split, size=size).replace("error: ", "error: mnist_cnn: ")], err
    assert not (tmp_path / "runs").exists()  # no study offering a resume


def test_a_resumed_study_checks_the_subsets_of_the_cells_that_start_a_run_only(tiny_data, tmp_path, capsys, monkeypatch):
    """A cell with no run yet is refused an oversized subset before anything changes; a finished or a
    continued cell trained as an earlier cnnlab accepted its config (see load_splits)."""
    from cnnlab import experiment

    real = _failing_run(monkeypatch, 2, "interrupt")
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "fc-vs-cnn", "--seeds", "1", "train.epochs=2", "--data-dir", tiny_data, *FAST, "--runs-dir", tmp_path / "runs")
    assert code == 130
    monkeypatch.setattr(experiment, "run", real)
    (study,) = (tmp_path / "runs").iterdir()
    # the finished FC cell's run, then the interrupted CNN cell's, as plan.json orders the cells (by name:
    # directories made in the same second sort mnist_cnn first)
    runs = [next((study / "cells").glob(f"*-{name}-s0-*")) for name in ("mnist_fc", "mnist_cnn")]
    plan = json.loads((study / "plan.json").read_text())

    def as_earlier_cnnlab(cells: list[int]) -> None:  # the cells' planned configs ask for 5000 training images
        for i in cells:
            plan["cells"][i]["config"]["dataset"]["train_subset"] = 5000
        (study / "plan.json").write_text(json.dumps(plan))

    unstarted = tmp_path / "unstarted"
    shutil.move(runs[1], unstarted)  # the CNN cell as if it never started
    as_earlier_cnnlab([1])
    before = {p: p.stat().st_mtime_ns for p in study.rglob("*")}
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "--resume", study)
    assert code == 2 and err.splitlines() == [TOO_MANY.format(key="train_subset", n=5000, split="training", size=300)], err
    assert {p: p.stat().st_mtime_ns for p in study.rglob("*")} == before  # nothing written, still "interrupted"

    shutil.move(unstarted, runs[1])
    as_earlier_cnnlab([0, 1])
    for run_dir in runs:
        stored = (run_dir / "config.yaml").read_text()
        (run_dir / "config.yaml").write_text(stored.replace("train_subset: null", "train_subset: 5000"))
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "--resume", study)
    assert code == 0, err
    assert sorted((study / "cells").iterdir()) == sorted(runs)  # the FC cell taken, the CNN cell continued in place


def _failing_run(monkeypatch, at: int, how: str):
    """Make the study's `at`-th cell stop: interrupted after its first epoch (of two or more: after its
    last, the cell is complete), or failing before it trains."""
    import signal as signals

    from cnnlab import experiment
    from cnnlab.interrupts import Interrupted

    real, calls = experiment.run, []

    def run(cfg, **kwargs):
        calls.append(cfg.name)
        if len(calls) != at:
            return real(cfg, **kwargs)
        if how == "fail":
            raise RunError("the disk is full")
        if how == "nan":
            raise NonFiniteLoss("the loss became nan at epoch 1, step 2")

        def stop(row, path):
            raise Interrupted(signals.SIGINT)

        return real(cfg, **kwargs, on_epoch=stop)

    monkeypatch.setattr(experiment, "run", run)
    return real


def test_an_interrupted_or_failed_study_resumes_to_the_uninterrupted_result(tiny_data, tmp_path, capsys, monkeypatch):
    args = ["compare", "fc-vs-cnn", "--seeds", "2", "train.epochs=2", "--data-dir", tiny_data, *FAST]
    code, out, err = cnnlab(capsys, monkeypatch, *args, "--runs-dir", tmp_path / "whole")
    assert code == 0, err
    whole = pd.read_csv(last_line(out) / "table.csv").drop(columns="train_seconds")

    # the stopped cell goes on in its own directory; one trained without checkpoints starts again in a new one
    for how, at, exit_code, extra, dirs in (("interrupt", 3, 130, [], 4), ("fail", 2, 1, [], 4),
                                             ("interrupt", 3, 130, ["train.checkpoint=false"], 5)):
        from cnnlab import experiment

        real = _failing_run(monkeypatch, at, how)
        runs_dir = tmp_path / f"{how}{len(extra)}"
        code, out, err = cnnlab(capsys, monkeypatch, *args, *extra, "--runs-dir", runs_dir)
        (study,) = runs_dir.iterdir()
        assert code == exit_code and f"continue with: cnnlab compare --resume {study}" in err and len(err.strip().splitlines()) == 1
        assert last_line(out) == study  # what `cnnlab compare ... | tail -1` gives, as for a finished study
        summary = json.loads((study / "summary.json").read_text())
        assert summary["status"] == ("interrupted" if how == "interrupt" else "failed")
        assert len(summary["cells"]) == at - 1  # the finished cells, kept
        monkeypatch.setattr(experiment, "run", real)

        code, out, err = cnnlab(capsys, monkeypatch, "compare", "--resume", study)
        assert code == 0, err
        assert last_line(out) == study and json.loads((study / "summary.json").read_text())["status"] == "completed"
        assert len(list((study / "cells").iterdir())) == dirs
        pd.testing.assert_frame_equal(pd.read_csv(study / "table.csv").drop(columns="train_seconds"), whole)

    code, out, err = cnnlab(capsys, monkeypatch, "compare", "--resume", study)
    assert code == 1 and "already complete" in err and out == ""  # refused: no directory to take
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "--resume", study, "--seeds", "3")
    assert code == 2 and "give no --seeds" in err and out == ""
    code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "--resume", study)
    assert code == 1 and "not a shift-sweep study" in err
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "--resume", study, "--no-permute")
    assert code == 2 and "give no --permute/--no-permute" in err


def test_a_resume_clears_what_a_study_killed_outright_left(tiny_data, tmp_path, capsys, monkeypatch):
    """A study killed by SIGKILL as a cell's directory was made left that directory with its .kind's
    temp file alone, and the study its summary.json's temp file: `compare --resume` kept both for
    good (a third directory in cells/ for two cells), where a stopped study removes them (helper h105)."""
    from cnnlab import experiment

    real = _failing_run(monkeypatch, 2, "interrupt")
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "configs/mnist_fc.yaml", "--seeds", "2", "train.epochs=1",
                            "--data-dir", tiny_data, "--runs-dir", tmp_path, *FAST)
    assert code == 130, err
    monkeypatch.setattr(experiment, "run", real)
    study = last_line(out)
    cells = sorted((study / "cells").iterdir())
    killed = study / "cells" / "20261128-120000-mnist_fc-s1-0a1b2c"
    killed.mkdir()
    (killed / "..kind.zh7gem4o.tmp").write_text("run")
    (study / ".summary.json.au1qumb0.tmp").write_text("{")
    (study / "cells" / "mine").mkdir()  # not named as cnnlab names a run: left alone
    dead = study / "cells" / "20261128-120001-mnist_fc-s9-3d4e5f"  # a run whose process was killed: 'running' for good
    dead.mkdir()
    (dead / "summary.json").write_text(json.dumps({"name": "mnist_fc-s9", "kind": "run", "status": "running", "epochs": 0, "epochs_planned": 1}))

    code, out, err = cnnlab(capsys, monkeypatch, "compare", "--resume", study)
    assert code == 0, err
    assert not killed.exists() and not list(study.glob(".*.tmp")) and (study / "cells" / "mine").is_dir()
    settled = json.loads((dead / "summary.json").read_text())
    assert settled["status"] == "interrupted" and settled["error"].startswith("the study's process was gone before this run finished")
    assert len(json.loads((study / "summary.json").read_text())["cells"]) == 2
    assert set(cells) <= set((study / "cells").iterdir())


def test_a_study_of_one_run_says_1_run_not_1_runs(tiny_data, tmp_path, capsys, monkeypatch):
    _failing_run(monkeypatch, 1, "interrupt")
    args = ["compare", "configs/mnist_fc.yaml", "--seeds", "1", "train.epochs=2", "--data-dir", tiny_data, "--runs-dir", tmp_path, *FAST]
    code, out, err = cnnlab(capsys, monkeypatch, *args)
    assert code == 130 and "mnist_fc: 1 model(s) x 1 condition(s) x 1 seed(s) = 1 run in " in out, out
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "--resume", last_line(out))
    assert code == 0 and "mnist_fc: 1 run, resumed in " in out, err


def test_a_resume_without_the_data_or_device_is_refused_before_anything_changes(tiny_data, tmp_path, capsys, monkeypatch):
    from cnnlab import experiment

    real = _failing_run(monkeypatch, 2, "interrupt")
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "fc-vs-cnn", "--seeds", "1", "train.epochs=2", "--data-dir", tiny_data, *FAST, "--runs-dir", tmp_path / "runs")
    assert code == 130
    monkeypatch.setattr(experiment, "run", real)
    (study,) = (tmp_path / "runs").iterdir()
    before = {p: p.stat().st_mtime_ns for p in study.rglob("*")}
    (tmp_path / "empty").mkdir()
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "--resume", study, "--data-dir", tmp_path / "empty")
    assert code == 1 and "not found in" in err and len(err.strip().splitlines()) == 1 and out == ""
    plan = json.loads((study / "plan.json").read_text())
    plan["cells"][1]["config"]["device"] = "cuda"  # the unfinished cell, as if planned on a machine with a GPU
    (study / "plan.json").write_text(json.dumps(plan))
    before[study / "plan.json"] = (study / "plan.json").stat().st_mtime_ns
    if not torch.cuda.is_available():
        code, out, err = cnnlab(capsys, monkeypatch, "compare", "--resume", study)
        assert code == 2 and "no CUDA device" in err and len(err.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in study.rglob("*")} == before  # nothing written, still "interrupted"
    assert json.loads((study / "summary.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize("command,kind", [("compare", "a compare study"), ("shift-sweep", "a shift-sweep study"), ("sweep", "a sweep")])
def test_resuming_nothing_or_a_file_says_which(tmp_path, capsys, monkeypatch, command, kind):
    """A mistyped directory was 'not a compare study directory that can be resumed: PATH', and for a
    sweep 'PATH has no sweep.yaml and base.yaml', as if it existed; the sweep file itself was said to
    lack sweep.yaml too. Now both say what is there, as train --resume does."""
    for path, why in [(tmp_path / "no_such_dir", "does not exist"), (ROOT / "configs/sweeps/lenet_lr.yaml", "is a file")]:
        code, out, err = cnnlab(capsys, monkeypatch, command, "--resume", path)
        assert (code, out, err) == (1, "", f"error: not {kind} directory: {path} {why}\n")


def test_readings_are_one_line_in_a_pipe_however_long(tiny_data, fashion_run, tmp_path, capsys, monkeypatch):
    """Off a terminal the console is 120 columns wide, and a reading longer than that was broken
    mid-sentence ('... CNN loses 3.9 \\npoints, ...'), in compare's and shift-sweep's output and in
    show's, which broke a Markdown table's long rows too, and a long path was cut ('.../test_readings_...').
    Now each is one line, as train's summary is."""
    monkeypatch.setattr(report.console, "width", 60)
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "fc-vs-cnn", "--permute", "--seeds", "1", "--data-dir", tiny_data, *FAST, "--runs-dir", tmp_path)
    assert code == 0, err
    summary = json.loads((last_line(out) / "summary.json").read_text())
    assert summary["reading"] in out.splitlines() and out.splitlines()[0].endswith(f" in {last_line(out)}")
    code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "--from-run", fashion_run.path, "--image-index", "0", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    assert code == 0, err
    study = last_line(out)
    summary = json.loads((study / "summary.json").read_text())
    assert {summary["reading"], *summary["image_reading"]} <= set(out.splitlines())
    code, out, err = cnnlab(capsys, monkeypatch, "show", study)
    assert code == 0 and set((study / "table.md").read_text().splitlines()) <= set(out.splitlines())
    code, out, err = cnnlab(capsys, monkeypatch, "forward-check", "--run", fashion_run.path, "--data-dir", tiny_data)
    assert code == 0 and out.splitlines()[0].endswith(f"with the trained weights of {fashion_run.path}"), out


def test_a_study_that_cannot_get_further_says_so_and_a_broken_plan_is_one_line(tiny_data, tmp_path, capsys, monkeypatch):
    _failing_run(monkeypatch, 2, "nan")
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "fc-vs-cnn", "--seeds", "1", "--data-dir", tiny_data, *FAST, "--runs-dir", tmp_path)
    assert code == 1 and "start a new study" in err and "--resume" not in err and len(err.strip().splitlines()) == 1
    (study,) = tmp_path.iterdir()
    assert last_line(out) == study
    plan = json.loads((study / "plan.json").read_text())
    broken = [{"name": 1, "cells": 5}, {**plan, "cells": []}, {**plan, "cells": [{**plan["cells"][0], "labels": {}}]}]
    for text in broken:
        (study / "plan.json").write_text(json.dumps(text))
        code, out, err = cnnlab(capsys, monkeypatch, "compare", "--resume", study)
        assert code == 2 and "plan.json" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1 and out == ""
    assert json.loads((study / "summary.json").read_text())["status"] == "failed"  # as it was: nothing ran


@pytest.mark.parametrize("command", [["compare", "fc-vs-cnn", "--seeds", "1"], ["shift-sweep"]])
def test_a_study_on_a_cluster_that_cannot_be_reached_leaves_no_directory(tmp_path, capsys, monkeypatch, command):
    pytest.importorskip("ray")
    code, out, err = cnnlab(capsys, monkeypatch, *command, "--address", "127.0.0.1:1", "--runs-dir", tmp_path / "runs")
    assert code == 1 and err == "error: cannot reach a Ray cluster at 127.0.0.1:1: Connection refused\n"
    assert not (tmp_path / "runs").exists()  # no failed study offering a resume


@pytest.mark.parametrize("address", ["garbage", "localhost:abc", ":6379", "host:70000", "::1:6379"])
@pytest.mark.parametrize("command", [["compare", "fc-vs-cnn", "--seeds", "1"], ["shift-sweep"]])
def test_an_address_that_is_no_address_leaves_no_directory(tmp_path, capsys, monkeypatch, command, address):
    """--address garbage passed the check (no :PORT to try) and left a failed study offering a resume."""
    pytest.importorskip("ray")
    code, out, err = cnnlab(capsys, monkeypatch, *command, "--address", address, "--runs-dir", tmp_path / "runs")
    assert code == 1 and err == f"error: {address!r} is not a Ray cluster address: give HOST:PORT (the head's, 6379 by default; [IPv6]:PORT), ray://HOST:PORT, auto or local\n"
    assert out == "" and not (tmp_path / "runs").exists()


def test_an_ipv6_address_in_brackets_is_tried_as_ray_takes_it():
    """[::1]:PORT was tried as the host name '[::1]' ('Name or service not known')."""
    import socket

    from cnnlab.errors import RunError
    from cnnlab.ray_backend import check_reachable

    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with server:
        check_reachable(f"[::1]:{server.getsockname()[1]}")  # reached: no error
    with pytest.raises(RunError, match=r"cannot reach a Ray cluster at \[::1\]:1: Connection refused"):
        check_reachable("[::1]:1")
    check_reachable("anyscale://my-cluster")  # a provider's client address: Ray's own check


@pytest.mark.parametrize("command", [["compare", "fc-vs-cnn", "--seeds", "1"], ["shift-sweep"]])
def test_address_auto_without_a_cluster_here_leaves_no_directory(tmp_path, capsys, monkeypatch, command):
    """--address auto where no cluster runs left a failed study offering a resume, and said so in Ray's
    words ('... setting the `--address` flag ...') with a hint on token authentication, as if a cluster had refused us."""
    pytest.importorskip("ray")
    from ray._private import services

    def no_cluster(address):  # as on a machine where `ray start` never ran
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by setting the `--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.setattr(services, "canonicalize_bootstrap_address_or_die", no_cluster)
    code, out, err = cnnlab(capsys, monkeypatch, *command, "--address", "auto", "--runs-dir", tmp_path / "runs")
    assert code == 1 and err == "error: cannot reach a Ray cluster at auto: Could not find any running Ray instance; name one with --address HOST:PORT (ray start --head starts one here)\n"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", [["compare", "fc-vs-cnn", "--seeds", "1"], ["shift-sweep", "--image-index", "0"]])
def test_a_study_on_a_local_ray_without_ray_installed_leaves_no_directory(tmp_path, capsys, monkeypatch, tiny_data, command):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, out, err = cnnlab(capsys, monkeypatch, *command, "--address", "local", "--runs-dir", tmp_path / "runs", "--data-dir", tiny_data)
    assert code == 1 and err.startswith("error: --address needs Ray, which is missing here") and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()  # no failed study offering a resume that cannot work either


def _ray_cut_off(monkeypatch, stop: BaseException):
    """Ray's part of a study, faked as a real one ends when the study stops with cells on its
    workers: the first cell completes; the killed workers left the second's summary 'running' after
    its first epoch of two and the fourth's after its last, and the third's run directory without a
    summary.json (killed as it was made, an atomic write's temp file left); then `stop` (a signal, a
    lost node) ends the study."""
    from cnnlab import ray_backend, runs

    def killed(cfg, runs_dir, data_dir, after: int) -> None:
        def stop(row, path):
            if row["epoch"] == after:
                raise KeyboardInterrupt

        with contextlib.suppress(KeyboardInterrupt):
            run(cfg, runs_dir=runs_dir, data_dir=data_dir, on_epoch=stop)
        (path,) = Path(runs_dir).glob(f"*-{cfg.name}-*")  # its summary as that epoch's files were written
        runs.write_json(path / "summary.json", {**json.loads((path / "summary.json").read_text()), "status": "running", "error": None, "finished_at": None})

    def run_cells_on_ray(cells, *, runs_dir, data_dir=None, address=None, on_done=None, resume=None):
        on_done(cells[0], run(cells[0].cfg, runs_dir=runs_dir, data_dir=data_dir))
        killed(cells[1].cfg, runs_dir, data_dir, after=1)
        killed(cells[3].cfg, runs_dir, data_dir, after=2)
        unwritten = runs.new_run_dir(Path(runs_dir), cells[2].cfg.name)
        (unwritten / ".lock").touch()
        (unwritten / ".config.yaml.x1y2z3.tmp").write_text("seed: ")
        raise stop

    monkeypatch.setattr(ray_backend, "run_cells_on_ray", run_cells_on_ray)


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "lost node"])
def test_cells_that_ray_cut_off_are_settled_when_the_study_stops(tiny_data, tmp_path, capsys, monkeypatch, how):
    """A study on Ray stopped by a signal (or failing: a lost node) left the cell whose worker was killed
    'running' in its summary.json for good, and a cell directory without one. Now, as a sweep's
    trials, the cell is interrupted, saying why and how to go on, and the empty directory is gone."""
    pytest.importorskip("ray")
    from cnnlab.interrupts import Interrupted

    stop = RunError("cell 4 of 4 was lost on the cluster") if how == "lost node" else Interrupted(getattr(signal, how))
    _ray_cut_off(monkeypatch, stop)
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "configs/mnist_fc.yaml", "--seeds", "4", "--address", "local",
                            "train.epochs=2", "--data-dir", tiny_data, *FAST, "--runs-dir", tmp_path)
    study = last_line(out)
    assert code == {"SIGINT": 130, "SIGTERM": 143, "lost node": 1}[how], err
    (first,), (cut_dir,), (last,) = ((study / "cells").glob(f"*-s{seed}-*") for seed in (0, 1, 3))
    cut = json.loads((cut_dir / "summary.json").read_text())
    assert cut["status"] == "interrupted" and cut["epochs"] == 1 and cut["finished_at"], cut
    assert cut["error"] == (f"the study failed before this run finished: {stop}" if how == "lost node"
                            else f"the study was interrupted; continue with: cnnlab compare --resume {study}")
    done = json.loads((last / "summary.json").read_text())  # every epoch written: complete, as run() itself says of one a signal reaches then
    assert (done["status"], done["epochs"], done["error"]) == ("completed", 2, None) and done["finished_at"], done
    assert json.loads((first / "summary.json").read_text())["status"] == "completed"
    assert sorted((study / "cells").iterdir()) == [first, cut_dir, last]  # the directory of the cell killed before its summary is gone
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "--resume", study)  # here: the cut-off cell goes on in its directory
    assert code == 0, err
    assert len(list((study / "cells").iterdir())) == 4 and json.loads((cut_dir / "summary.json").read_text())["status"] == "completed"


def test_a_stopped_study_removes_its_own_unwritten_cells_not_a_folder_of_the_users(tmp_path):
    """A study that stopped removed an empty folder the user had made in its cells/, as if it were a
    cell's directory killed before its run was written. Now it removes only its cells' (plan.json)."""
    from cnnlab import runs

    cell = {"labels": {"model": "FC", "permuted": False, "seed": 0}, "config": {"name": "mnist_fc-s0"}}
    record = StudyRecord(tmp_path, "s", {"name": "s", "cells": [cell]}, study="compare")
    unwritten = runs.new_run_dir(record.cells, "mnist_fc-s0")
    (record.cells / "notes").mkdir()
    with pytest.raises(RunError, match="lost on the cluster"):
        with record.running():
            raise RunError("cell 1 of 1 was lost on the cluster")
    assert not unwritten.exists() and [p.name for p in record.cells.iterdir()] == ["notes"]


def test_a_signal_between_cells_marks_the_study_interrupted(tmp_path):
    """SIGTERM outside any run's training (between cells, while evaluating or writing tables)."""
    from cnnlab.interrupts import Interrupted

    record = StudyRecord(tmp_path, "s", study="compare")
    with pytest.raises(Interrupted, match=f"stopped by SIGTERM.*continue with: cnnlab compare --resume {record.path}"):
        with record.running():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises first
    summary = json.loads((record.path / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["error"] == f"study stopped by SIGTERM; finished cells are kept; continue with: cnnlab compare --resume {record.path}"


def test_a_study_planned_before_the_permuted_article_numbers_resumes_with_its_plans_numbers(tiny_data, tmp_path, capsys, monkeypatch):
    """A cnnlab before `test_acc_permuted` planned (and ran) the cells with the ordered number only: the
    resumed table gives the ordered row the article's number and the permuted row none, as planned."""
    import yaml

    from cnnlab import experiment

    real = _failing_run(monkeypatch, 2, "interrupt")
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "configs/mnist_cnn.yaml", "--permute", "--seeds", "1", "train.epochs=2",
                            "--data-dir", tiny_data, *FAST, "--runs-dir", tmp_path)
    assert code == 130, err
    monkeypatch.setattr(experiment, "run", real)
    (study,) = tmp_path.iterdir()
    plan = json.loads((study / "plan.json").read_text())
    for cell in plan["cells"]:
        del cell["config"]["reported"]["test_acc_permuted"]
    (study / "plan.json").write_text(json.dumps(plan))
    for config in (study / "cells").glob("*/config.yaml"):
        stored = yaml.safe_load(config.read_text())
        del stored["reported"]["test_acc_permuted"]
        config.write_text(yaml.safe_dump(stored))
    runs = sorted((study / "cells").iterdir())

    code, out, err = cnnlab(capsys, monkeypatch, "compare", "--resume", study)
    assert code == 0, err
    assert sorted((study / "cells").iterdir()) == runs  # the finished cell taken, the stopped one continued
    table = pd.read_csv(study / "table.csv")
    assert list(table.permuted) == [False, True] and table.article_test_acc[0] == 0.96 and np.isnan(table.article_test_acc[1])
    md = (study / "table.md").read_text()
    assert re.search(r"\| no \| 1 \| [\d.]+% ± - \| 96\.00% \|", md) and re.search(r"\| yes \| 1 \| [\d.]+% ± - \| - \|", md), md


def test_a_run_written_before_a_config_key_existed_still_counts_for_its_cell(tmp_path):
    """A study resumed after an upgrade keeps its finished cells: their config.yaml lacks the keys
    added since (at their defaults), and a run whose config no longer validates is skipped."""
    import yaml

    from cnnlab.config import config_to_dict
    from cnnlab.runner import Cell, previous_runs
    from cnnlab.runs import CONFIG, SUMMARY

    cfg = load_config(ROOT / "configs" / "mnist_fc.yaml", ["device=cpu"])
    old = config_to_dict(cfg)
    del old["transform"]["augment"]["crop_padding_mode"]  # added in a later cnnlab, default "constant"
    invalid = config_to_dict(cfg) | {"no_such_key": 1}
    for name, data in (("20261101-000000-mnist_fc-aaaaaa", old), ("20261102-000000-mnist_fc-bbbbbb", invalid)):
        (tmp_path / name).mkdir()
        (tmp_path / name / CONFIG).write_text(yaml.safe_dump(data))
        (tmp_path / name / SUMMARY).write_text(json.dumps({"status": "completed"}))
    other = load_config(ROOT / "configs" / "mnist_fc.yaml", ["device=cpu", "transform.augment.crop_padding_mode=reflect"])
    assert previous_runs([Cell(other, {}), Cell(cfg, {})], tmp_path) == [None, tmp_path / "20261101-000000-mnist_fc-aaaaaa"]


def test_an_interrupted_shift_sweep_resumes(fashion_run, tiny_data, tmp_path, capsys, monkeypatch):
    args = ["shift-sweep", "configs/fashion_fc.yaml", "configs/fashion_cnn.yaml", "--from-run", fashion_run.path,
            "--max-shift", "1", "--image-index", "0", "--data-dir", tiny_data, "train.epochs=2", *FAST]
    code, out, err = cnnlab(capsys, monkeypatch, *args, "--runs-dir", tmp_path / "whole")
    assert code == 0, err
    whole = pd.read_csv(last_line(out) / "table.csv")
    from cnnlab import experiment

    real = _failing_run(monkeypatch, 2, "interrupt")
    code, out, err = cnnlab(capsys, monkeypatch, *args, "--runs-dir", tmp_path / "stopped")
    assert code == 130 and "cnnlab shift-sweep --resume" in err
    monkeypatch.setattr(experiment, "run", real)
    (study,) = (tmp_path / "stopped").iterdir()
    assert last_line(out) == study
    # listed with its dataset and models as a compare study is (runs --dataset found no interrupted shift-sweep)
    summary = json.loads((study / "summary.json").read_text())
    assert (summary["status"], summary["dataset"], summary["model"], summary["epochs"]) == ("interrupted", "fashion-mnist", "fc,cnn", 2)
    # the cell that finished is in the record, as a compare study's are (it listed none, and no training time)
    assert [Path(p).parent.name for p in summary["cells"]] == ["cells"] and summary["train_seconds"] is not None
    code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "--resume", study)
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(study / "table.csv"), whole)


@pytest.mark.parametrize("command", ["compare", "shift-sweep"])
def test_a_signal_as_a_finished_study_is_told_still_ends_stdout_with_its_directory(command, tiny_data, tmp_path, capsys, monkeypatch):
    from cnnlab import report
    from cnnlab.interrupts import Interrupted

    def stopped(*args, **kwargs):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(report, "table", stopped)
    code, out, err = cnnlab(capsys, monkeypatch, *TWO_CELLS[command], *FAST, "--data-dir", tiny_data, "--runs-dir", tmp_path)
    (study,) = tmp_path.iterdir()
    assert code == 143 and last_line(out) == study, err
    assert err.strip().splitlines()[-1] == f"interrupted: stopped by SIGTERM while its results were shown; the study is complete: {study}"
    assert json.loads((study / "summary.json").read_text())["status"] == "completed"


TWO_CELLS = {"compare": ["compare", ROOT / "configs/mnist_fc.yaml", "--seeds", "2"],
             "shift-sweep": ["shift-sweep", ROOT / "configs/mnist_fc.yaml", ROOT / "configs/mnist_cnn.yaml", "--max-shift", "1", "--image-index", "0"]}


def _failed_study(capsys, monkeypatch, command: str, runs_dir: Path, *extra) -> Path:
    """A study of two cells (compare or shift-sweep) started in the working directory, its second cell
    failed before it trained."""
    from cnnlab import experiment
    from test_resume import cnnlab_here

    real = _failing_run(monkeypatch, 2, "fail")
    done = cnnlab_here(capsys, *TWO_CELLS[command], *FAST, *extra, "--runs-dir", runs_dir)
    monkeypatch.setattr(experiment, "run", real)
    assert done.returncode == 1 and "the disk is full" in done.stderr, done.stderr
    return last_line(done.stdout)


@pytest.mark.parametrize("command", TWO_CELLS)
def test_a_resumed_study_reads_the_data_its_cells_read_not_the_working_directorys(command, tiny_data, tmp_path, capsys, monkeypatch):
    """A study started without --data-dir, whose cells found their data as ./data (or through
    $CNNLAB_DATA_DIR), resumed from another directory: its cells still to run read that directory's
    ./data (here empty: refused, 'MNIST not found'; with other files there, other data than the cells
    that ran). Now it reads where its cells read while that is there, as sweep --resume; a --data-dir
    given wins."""
    from test_resume import cnnlab_here

    (tmp_path / "w1").mkdir()
    (tmp_path / "w1" / "data").symlink_to(tiny_data)
    (tmp_path / "w2" / "data").mkdir(parents=True)  # the same name, no files
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path / "w1")
    study = _failed_study(capsys, monkeypatch, command, tmp_path / "runs")
    monkeypatch.chdir(tmp_path / "w2")
    done = cnnlab_here(capsys, command, "--resume", study, "--data-dir", "data")
    assert done.returncode == 1 and f"MNIST not found in {tmp_path / 'w2' / 'data'}" in done.stderr, done.stderr
    done = cnnlab_here(capsys, command, "--resume", study)
    assert done.returncode == 0, done.stderr
    assert {json.loads(p.read_text())["data_dir"] for p in (study / "cells").glob("*/summary.json")} == {str(tiny_data.resolve())}


@pytest.mark.parametrize("command", TWO_CELLS)
def test_a_resumed_study_whose_data_dir_moved_reads_the_data_in_the_usual_order(command, tiny_data, tmp_path, capsys, monkeypatch):
    """A study started with --data-dir DIR, resumed once DIR has moved: it still looked in DIR and was
    refused ('MNIST not found in DIR'), where train --resume and sweep --resume go on in the usual order.
    Now a study does too: here $CNNLAB_DATA_DIR."""
    from test_resume import cnnlab_here

    shutil.copytree(tiny_data, tmp_path / "given")
    monkeypatch.chdir(tmp_path)
    study = _failed_study(capsys, monkeypatch, command, tmp_path / "runs", "--data-dir", tmp_path / "given")
    (tmp_path / "given").rename(tmp_path / "moved")
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tmp_path / "moved"))
    done = cnnlab_here(capsys, command, "--resume", study)
    assert done.returncode == 0, done.stderr
    assert json.loads((study / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("command", ["compare", "shift-sweep"])
def test_a_resumed_study_keeps_a_members_own_data_dir(command, tiny_data, tmp_path, capsys, monkeypatch):
    """A study started without --data-dir, its first member finding its data through $CNNLAB_DATA_DIR
    and its second in its own dataset.data_dir, resumed once only the first member's cells had run:
    the folder those cells read became the resume's --data-dir, and the second member read it instead
    of its own. Now each member reads the folder it read when the study started."""
    from cnnlab import experiment
    from test_resume import cnnlab_here

    shutil.copytree(tiny_data / "MNIST", tmp_path / "own" / "MNIST")
    own = tmp_path / "own_fc.yaml"
    own.write_text((ROOT / "configs/mnist_fc.yaml").read_text().replace("name: mnist_fc", "name: own_fc")
                   .replace("  name: mnist\n", f"  name: mnist\n  data_dir: {tmp_path / 'own'}\n"))
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tiny_data))
    monkeypatch.chdir(tmp_path)
    real = _failing_run(monkeypatch, 2, "fail")  # the second member's cell
    options = {"compare": ["--seeds", "1"], "shift-sweep": ["--max-shift", "1", "--image-index", "0"]}[command]
    done = cnnlab_here(capsys, command, ROOT / "configs/mnist_cnn.yaml", own, *options, *FAST, "--runs-dir", tmp_path / "runs")
    monkeypatch.setattr(experiment, "run", real)
    assert done.returncode == 1 and "the disk is full" in done.stderr, done.stderr
    study = last_line(done.stdout)
    done = cnnlab_here(capsys, command, "--resume", study)
    assert done.returncode == 0, done.stderr
    read = {s["name"].split("-")[0]: s["data_dir"] for s in map(json.loads, map(Path.read_text, (study / "cells").glob("*/summary.json")))}
    assert read == {"mnist_cnn": str(tiny_data.resolve()), "own_fc": str((tmp_path / "own").resolve())}


@pytest.mark.parametrize("command", [["compare", "configs/mnist_fc.yaml", "--seeds", "1"], ["shift-sweep", "configs/fashion_fc.yaml", "--max-shift", "1", "--image-index", "0"]])
def test_a_study_whose_plan_cannot_be_written_is_not_left_running(command, tiny_data, tmp_path, capsys, monkeypatch):
    """A full disk as the study starts: no summary.json saying 'running' (shown as dead) for a study
    that never ran, and has no plan.json to resume from."""
    from cnnlab import runs

    no_room_for(monkeypatch, lambda path: path.name == "plan.json")
    code, out, err = cnnlab(capsys, monkeypatch, *command, "--data-dir", tiny_data, "--runs-dir", tmp_path, *FAST)
    (study,) = tmp_path.iterdir()
    assert code == 1 and err == f"error: cannot write {study / 'plan.json'}: No space left on device\n", err
    assert out == ""  # a study that never ran: no directory to take
    assert runs.list_runs(tmp_path) == [] and not (study / "cells").exists()


def test_every_file_of_a_study_is_renamed_into_place(tmp_path, monkeypatch):
    replaced, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: replaced.append((Path(src), Path(dst))) or real(src, dst))
    record = StudyRecord(tmp_path, "atomic", study="compare")
    record.write_table("table", [{"model": "FC", "test_acc": 0.9}], "| model | test_acc |\n")
    record.write_figure("accuracy.png", figures.learning_curves(pd.DataFrame({"epoch": [1], "train_loss": [1.0], "test_loss": [0.9], "train_acc": [0.5], "test_acc": [0.6]}), "x"))
    record.update(status="completed")
    assert {dst.name for _, dst in replaced} == set(os.listdir(record.path)) >= {"table.csv", "table.md", "accuracy.png", "summary.json"}
    for src, dst in replaced:
        assert src.parent == dst.parent == record.path and src.name.startswith(f".{dst.name}.") and src.name.endswith(".tmp")


# ---------------------------------------------------------------------------- shift sweep
@pytest.fixture(scope="module")
def fashion_run(tiny_data, tmp_path_factory):
    """A small trained run whose config normalizes and permutes, to check the order of operations."""
    cfg = load_config(ROOT / "configs/fashion_cnn.yaml", ["device=cpu", "train.epochs=1", "train.max_steps=3", "transform.normalize=dataset", "transform.permute=true"])
    return run(cfg, runs_dir=tmp_path_factory.mktemp("runs"), data_dir=tiny_data)


def test_offsets_follow_the_axis():
    """--axis y moves the images up and down only (the sweeps tested here run along x or the grid)."""
    assert shift_sweep.offsets(2, "x") == [(-2, 0), (-1, 0), (0, 0), (1, 0), (2, 0)]
    assert shift_sweep.offsets(2, "y") == [(0, -2), (0, -1), (0, 0), (0, 1), (0, 2)]
    assert shift_sweep.offsets(1, "both") == [(-1, -1), (0, -1), (1, -1), (-1, 0), (0, 0), (1, 0), (-1, 1), (0, 1), (1, 1)]


def test_sweep_at_zero_is_the_plain_evaluation(fashion_run, tiny_data):
    t = shift_sweep.load_trained(fashion_run.path)
    rows = shift_sweep.sweep(t, load_splits(t.cfg, tiny_data), shift_sweep.offsets(2, "x"), "roll")
    assert [(r["dx"], r["dy"]) for r in rows] == [(-2, 0), (-1, 0), (0, 0), (1, 0), (2, 0)]
    centre = rows[2]
    assert centre["test_acc"] == fashion_run.summary["test_acc"]
    assert centre["test_loss"] == pytest.approx(fashion_run.summary["test_loss"], rel=1e-6)
    assert len({r["test_loss"] for r in rows}) == 5  # the shifts change what the model sees


def test_every_sweep_row_is_the_evaluation_of_the_test_split_shifted_so(fashion_run, tiny_data):
    """The numbers at every offset, and one image's probabilities, against pipelines with that shift
    built here: a guard on which split, images and shift the sweep reads."""
    t = shift_sweep.load_trained(fashion_run.path)
    train, test = load_splits(t.cfg, tiny_data)
    n, loss_fn = t.cfg.dataset.test_subset, loss_function(t.cfg.loss.name, t.cfg.loss.label_smoothing)

    def shifted(images, dx, dy):
        transform = t.cfg.transform.model_copy(update={"shift": ShiftConfig(dx=dx, dy=dy, mode="zero")})
        return Pipeline.for_split(transform, train, t.cfg.seed).prepare(images, train=False)

    rows = shift_sweep.sweep(t, (train, test), [(-2, 1), (0, 0), (3, 0)], "zero")
    assert len({r["test_loss"] for r in rows}) == 3
    for r in rows:
        x = shifted(test.images[:n], r["dx"], r["dy"])
        loss, acc = evaluate(t.model, x, test.labels[:n], t.cfg.train.eval_batch_size, loss_fn, t.cfg.train.amp, t.cfg.train.tta)
        assert (r["test_acc"], r["test_loss"]) == (acc, pytest.approx(loss, rel=1e-6))
    image, label, classes = shift_sweep.pick_image((train, test), 7, "test")
    assert torch.equal(image, test.images[7:8]) and label == int(test.labels[7]) and classes == list(train.classes)
    probs = shift_sweep.image_probabilities(t, train, image, [(2, 0), (0, -1)], "zero")
    with torch.no_grad():
        want = torch.softmax(t.model(torch.cat([shifted(image, 2, 0), shifted(image, 0, -1)])), 1)
    np.testing.assert_allclose(probs, want.numpy(), rtol=1e-5, atol=1e-7)


def test_sweep_at_zero_uses_the_runs_test_time_augmentation(tiny_data, tmp_path):
    cfg = load_config(ROOT / "configs" / "cifar10_fast.yaml", ["model.widths=[8,8,8]", "train.tta=flip", "device=cpu",
                                                               "train.batch_size=64", "train.max_steps=2", "train.epochs=1"])
    trained = run(cfg, runs_dir=tmp_path, data_dir=tiny_data)
    t = shift_sweep.load_trained(trained.path)
    (centre,) = shift_sweep.sweep(t, load_splits(t.cfg, tiny_data), [(0, 0)], "roll")
    assert centre["test_loss"] == pytest.approx(trained.summary["test_loss"], rel=1e-5)



def test_single_image_probabilities_use_the_runs_test_time_augmentation(tiny_data, tmp_path):
    """The image view shows what the run predicts, as its evaluation (and the sweep's table) does."""
    cfg = load_config(ROOT / "configs" / "cifar10_fast.yaml", ["model.widths=[8,8,8]", "train.tta=flip", "device=cpu",
                                                               "train.batch_size=64", "train.max_steps=2", "train.epochs=1"])
    t = shift_sweep.load_trained(run(cfg, runs_dir=tmp_path, data_dir=tiny_data).path)
    splits = load_splits(t.cfg, tiny_data)
    image, _, _ = shift_sweep.pick_image(splits, 0, "test")
    probs = shift_sweep.image_probabilities(t, splits[0], image, [(0, 0)], "roll")
    with torch.no_grad():
        x = shift_sweep.prepare_shifted(t, splits[0], image, 0, 0, "roll")
        flipped = torch.softmax(0.5 * (t.model(x) + t.model(x.flip(3))), 1).numpy()
        plain = torch.softmax(t.model(x), 1).numpy()
    assert not np.allclose(flipped, plain, atol=1e-6)  # the flip matters for this model
    np.testing.assert_allclose(probs, flipped, rtol=1e-5, atol=1e-7)

def test_sweep_rows_use_the_runs_autocast(fashion_run, tiny_data):
    """A run with train.amp=bf16 evaluates under autocast: so does every row of its sweep."""
    t = shift_sweep.load_trained(fashion_run.path)
    t = dataclasses.replace(t, cfg=t.cfg.model_copy(update={"train": t.cfg.train.model_copy(update={"amp": "bf16"})}))
    train, test = load_splits(t.cfg, tiny_data)
    (row,) = shift_sweep.sweep(t, (train, test), [(1, 0)], "roll")
    n, loss_fn = t.cfg.dataset.test_subset, loss_function(t.cfg.loss.name, t.cfg.loss.label_smoothing)
    x = shift_sweep.prepare_shifted(t, train, test.images[:n], 1, 0, "roll")
    bf16, plain = (evaluate(t.model, x, test.labels[:n], t.cfg.train.eval_batch_size, loss_fn, amp) for amp in ("bf16", "none"))
    assert bf16[0] != pytest.approx(plain[0], rel=1e-6)  # bf16 changes the numbers
    assert (row["test_acc"], row["test_loss"]) == (bf16[1], pytest.approx(bf16[0], rel=1e-6))


def test_single_image_probabilities_use_the_runs_autocast(fashion_run, tiny_data):
    """A run with train.amp=bf16 evaluates under autocast: the image view shows those outputs too."""
    t = shift_sweep.load_trained(fashion_run.path)
    t = dataclasses.replace(t, cfg=t.cfg.model_copy(update={"train": t.cfg.train.model_copy(update={"amp": "bf16"})}))
    train, test = load_splits(t.cfg, tiny_data)
    probs = shift_sweep.image_probabilities(t, train, test.images[:1], [(1, 0)], "roll")
    x = shift_sweep.prepare_shifted(t, train, test.images[:1], 1, 0, "roll")
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = t.model(x)
        plain = torch.softmax(t.model(x), 1).numpy()
    want = torch.softmax(out.float(), 1).numpy()
    assert not np.allclose(want, plain, rtol=1e-5, atol=1e-7)  # bf16 changes the numbers
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-7)


def test_shift_happens_before_normalization(fashion_run, tiny_data):
    t = shift_sweep.load_trained(fashion_run.path)
    train, test = load_splits(t.cfg, tiny_data)
    images = test.images[:10]
    for mode in ("roll", "zero"):
        got = shift_sweep.prepare_shifted(t, train, images, 3, -2, mode)
        want = normalize(shift(to_float(images), 3, -2, mode, fill=0.0), train.mean, train.std)
        want = permute_pixels(want, make_permutation(28 * 28, t.cfg.seed))
        torch.testing.assert_close(got, want)
    t.cfg = t.cfg.model_copy(update={"transform": t.cfg.transform.model_copy(update={"permute": False})})
    zero = shift_sweep.prepare_shifted(t, train, images, 3, 0, "zero")
    black = -train.mean[0] / train.std[0]  # zero fill is black in the model's input space
    torch.testing.assert_close(zero[..., :3], torch.full_like(zero[..., :3], black))


def test_sweep_offsets_add_to_the_runs_own_shift(fashion_run, tiny_data):
    t = shift_sweep.load_trained(fashion_run.path)
    own = t.cfg.transform.model_copy(update={"shift": ShiftConfig(dx=2, dy=-1, mode="zero")})
    t.cfg = t.cfg.model_copy(update={"transform": own})
    train, test = load_splits(t.cfg, tiny_data)
    images = test.images[:10]

    def prepared(transform):
        return Pipeline(transform, train.mean, train.std, (1, 28, 28), t.cfg.seed, 10).prepare(images, train=False)

    # 0 px: exactly the test images the run was evaluated on; +1: one pixel further than its own shift
    torch.testing.assert_close(shift_sweep.prepare_shifted(t, train, images, 0, 0, "zero"), prepared(own))
    further = own.model_copy(update={"shift": ShiftConfig(dx=3, dy=-1, mode="zero")})
    torch.testing.assert_close(shift_sweep.prepare_shifted(t, train, images, 1, 0, "zero"), prepared(further))


def test_single_image_probabilities(fashion_run, tiny_data):
    t = shift_sweep.load_trained(fashion_run.path)
    splits = load_splits(t.cfg, tiny_data)
    train, _ = splits
    image, label, classes = shift_sweep.pick_image(splits, 5, "train")
    shifts = shift_sweep.offsets(3, "x")
    probs = shift_sweep.image_probabilities(t, train, image, shifts, "roll")
    assert probs.shape == (7, 10) and classes[2] == "Pullover"
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    # each row is the model's softmax on that shifted image, as evaluated one by one
    with torch.no_grad():
        one = torch.softmax(t.model(shift_sweep.prepare_shifted(t, train, image, -3, 0, "roll")), 1)[0].numpy()
    np.testing.assert_allclose(probs[0], one, rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="out of range"):
        shift_sweep.pick_image(splits, 24150, "train")


def test_shift_sweep_command_end_to_end(tiny_data, tmp_path, capsys, monkeypatch):
    code, out, err = cnnlab(
        capsys, monkeypatch, "shift-sweep", "configs/fashion_fc.yaml", "configs/fashion_cnn_aug.yaml", "--epochs", "1",
        "--max-shift", "2", "--mode", "zero", "--image-index", "3", "--data-dir", tiny_data, "--runs-dir", tmp_path, *FAST,
    )
    assert code == 0, err
    study = last_line(out)
    files = {p.name for p in study.iterdir()}
    assert {"table.csv", "table.md", "accuracy.png", "image_fashion_fc.png", "image_fashion_cnn_aug.png", "image_probs.csv", "cells"} <= files
    table = pd.read_csv(study / "table.csv")
    assert {"model", "dx", "dy", "test_acc"} <= set(table.columns) and len(table) == 2 * 5
    assert set(table["mode"]) == {"zero"} and set(table.dy) == {0}
    summary = json.loads((study / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["kind"] == "study" and summary["max_shift"] == 2
    assert len(summary["cells"]) == 2
    for cell in summary["cells"]:  # 0 px is each run's own final evaluation
        run_summary = json.loads((study / cell / "summary.json").read_text())
        centre = table[(table.model == run_summary["name"]) & (table.dx == 0)]
        assert centre.test_acc.item() == pytest.approx(run_summary["test_acc"])
    probs = pd.read_csv(study / "image_probs.csv")
    np.testing.assert_allclose(probs.drop(columns=["model", "dx", "dy"]).sum(axis=1), 1.0, rtol=1e-5)
    assert len(probs) == 2 * 5
    # the reading quotes the 2-px numbers (the largest shift swept)
    acc = {(r.model, r.dx): r.test_acc for r in table.itertuples()}
    fc_2px = (acc["fashion_fc", 2] + acc["fashion_fc", -2]) / 2
    assert f"fashion_fc from {acc['fashion_fc', 0]:.1%} to {fc_2px:.1%}" in summary["reading"]
    assert summary["reading"].startswith("Shifted by 2 px along x (mean of both directions, zero)")


def test_shift_sweep_from_run_grid(fashion_run, tiny_data, tmp_path, capsys, monkeypatch):
    code, out, err = cnnlab(
        capsys, monkeypatch, "shift-sweep", "--from-run", fashion_run.path, "--axis", "both", "--max-shift", "1",
        "--image-index", "0", "--image-split", "test", "--data-dir", tiny_data, "--runs-dir", tmp_path,
    )
    assert code == 0, err
    study = last_line(out)
    table = pd.read_csv(study / "table.csv")
    assert sorted(zip(table.dx, table.dy)) == [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    assert not (study / "cells").exists()  # nothing trained
    assert table[(table.dx == 0) & (table.dy == 0)].test_acc.item() == fashion_run.summary["test_acc"]
    assert "dy \\ dx" in (study / "table.md").read_text()
    for args, needle in [(["--axis", "diagonal"], "axis"), (["--epochs", "3"], "--from-run"), (["--image-index", "99999"], "out of range")]:
        code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "--from-run", fashion_run.path, *args, "--data-dir", tiny_data, "--runs-dir", tmp_path)
        assert code in (1, 2) and needle in err and len(err.strip().splitlines()) == 1, err


def test_a_shift_sweep_of_runs_tested_on_different_test_sets_says_so(fashion_run, tiny_data, tmp_path, capsys, monkeypatch):
    """Each model is evaluated on its run's own test images: two --from-run runs with other
    dataset.test_subset sat side by side in one table and reading without a word."""
    other = run(load_config(fashion_run.path / "config.yaml", ["dataset.test_subset=10"], stored=True), runs_dir=tmp_path / "own", data_dir=tiny_data)
    code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "--from-run", fashion_run.path, "--from-run", other.path, "--max-shift", "1",
                            "--image-index", "0", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    assert code == 0, err
    assert err == ("note: the models are tested on different test sets (dataset.test_subset: fashion_cnn all, fashion_cnn 10); "
                   "their accuracies compare less well\n")
    code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "--from-run", fashion_run.path, "--max-shift", "1", "--image-index", "0",
                            "--data-dir", tiny_data, "--runs-dir", tmp_path)
    assert code == 0 and err == ""  # one test set: nothing to say


def test_a_study_with_nothing_to_train_needs_no_ray(fashion_run, tiny_data, tmp_path, capsys, monkeypatch):
    """--address only says where cells train: a study with none left (here --from-run only; also a
    resumed study whose cells all trained) finishes without Ray or the cluster, which may be gone."""
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "--from-run", fashion_run.path, "--max-shift", "1", "--image-index", "0",
                            "--address", "127.0.0.1:1", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    assert code == 0 and (last_line(out) / "table.csv").is_file(), err


def test_shift_sweep_refuses_before_training(fashion_run, tiny_data, tmp_path, capsys, monkeypatch):
    """A bad image index, a missing run or a second dataset stop the sweep before any model trains."""
    mnist_run = run(load_config(ROOT / "configs/mnist_fc.yaml", ["device=cpu", "train.max_steps=2"]), runs_dir=tmp_path / "own", data_dir=tiny_data)
    cases = [
        (["--image-index", "99999"], "out of range"),
        (["--from-run", tmp_path / "typo"], "not a run directory"),
        (["--from-run", mnist_run.path], "different datasets"),
    ]
    for args, needle in cases:
        runs_dir = tmp_path / f"runs{len(needle)}"
        code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "configs/fashion_fc.yaml", *args, "--data-dir", tiny_data, "--runs-dir", runs_dir, *FAST)
        assert code in (1, 2) and needle in err and len(err.strip().splitlines()) == 1, err
        assert not runs_dir.exists()  # no study directory, no cell trained



def test_shift_sweep_refuses_a_run_given_twice(fashion_run, tiny_data, tmp_path, capsys, monkeypatch):
    """The same --from-run run twice, however spelled (as given, relative, with a trailing slash, through a
    symlink), would be swept twice: two identical lines and columns. Refused in one line before anything trains."""
    link = tmp_path / "link"
    link.symlink_to(fashion_run.path)
    spellings = [fashion_run.path, os.path.relpath(fashion_run.path, ROOT), f"{fashion_run.path}/", link]
    for i, other in enumerate(spellings):
        runs_dir = tmp_path / f"runs{i}"
        code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "configs/fashion_fc.yaml", "--from-run", fashion_run.path, "--from-run", other,
                                "--image-index", "0", "--data-dir", tiny_data, "--runs-dir", runs_dir, *FAST)
        assert code == 2 and f"--from-run {fashion_run.path} is given twice" in err and len(err.strip().splitlines()) == 1, err
        assert not runs_dir.exists()  # no study directory, no cell trained


def test_shift_sweep_refuses_a_run_that_did_not_complete(fashion_run, tiny_data, tmp_path, capsys, monkeypatch):
    """An interrupted or failed --from-run run holds the weights of an earlier epoch than its config
    says: swept as if trained, its table and summary would misstate what was measured."""
    stopped = tmp_path / fashion_run.path.name
    shutil.copytree(fashion_run.path, stopped)
    summary = json.loads((stopped / "summary.json").read_text())
    (stopped / "summary.json").write_text(json.dumps({**summary, "status": "interrupted", "epochs": 0}))
    code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "--from-run", stopped, "--image-index", "0",
                            "--data-dir", tiny_data, "--runs-dir", tmp_path / "runs")
    assert code == 1 and f"{stopped} is interrupted" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()



def test_shift_sweep_takes_a_run_an_earlier_cnnlab_trained_with_a_subset_larger_than_the_split(fashion_run, tiny_data, tmp_path, capsys, monkeypatch):
    """An earlier cnnlab cut such a subset to the split: the run's stored config is not refused (as
    train --resume and forward-check --run take it), and it is swept on the whole test split."""
    older = tmp_path / fashion_run.path.name
    shutil.copytree(fashion_run.path, older)
    stored = (older / "config.yaml").read_text()
    (older / "config.yaml").write_text(stored.replace("train_subset: null", "train_subset: 5000").replace("test_subset: null", "test_subset: 2000"))
    code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "--from-run", older, "--max-shift", "1", "--image-index", "0",
                            "--data-dir", tiny_data, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    table = pd.read_csv(last_line(out) / "table.csv")
    assert table[table.dx == 0].test_acc.item() == fashion_run.summary["test_acc"]



def test_shift_sweep_resume_continues_a_cell_an_earlier_cnnlab_planned_with_a_subset_larger_than_the_split(fashion_run, tiny_data, tmp_path, capsys, monkeypatch):
    """Only a cell that starts a run is refused such a subset: an interrupted one goes on as an earlier
    cnnlab accepted it (as compare --resume does), not refused with a study left to resume."""
    from cnnlab import experiment

    real = _failing_run(monkeypatch, 2, "interrupt")
    code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "configs/fashion_fc.yaml", "configs/fashion_cnn.yaml", "--from-run", fashion_run.path,
                            "--max-shift", "1", "--image-index", "0", "--data-dir", tiny_data, "train.epochs=2", *FAST, "--runs-dir", tmp_path)
    assert code == 130, err
    monkeypatch.setattr(experiment, "run", real)
    (study,) = tmp_path.iterdir()
    (interrupted,) = (study / "cells").glob("*-fashion_cnn-*")
    plan = json.loads((study / "plan.json").read_text())
    plan["cells"][1]["config"]["dataset"]["train_subset"] = 5000
    (study / "plan.json").write_text(json.dumps(plan))
    stored = (interrupted / "config.yaml").read_text()
    (interrupted / "config.yaml").write_text(stored.replace("train_subset: null", "train_subset: 5000"))
    code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "--resume", study)
    assert code == 0, err
    assert list((study / "cells").glob("*-fashion_cnn-*")) == [interrupted] and json.loads((interrupted / "summary.json").read_text())["status"] == "completed"


def test_show_names_a_run_an_earlier_cnnlab_wrote_with_a_leading_zero_name(fashion_run, tmp_path, capsys, monkeypatch):
    """A config 0089.yaml: a cnnlab before 0089 was the number 89 wrote its name bare in config.yaml."""
    older = tmp_path / fashion_run.path.name
    shutil.copytree(fashion_run.path, older)
    stored = (older / "config.yaml").read_text()
    (older / "config.yaml").write_text(stored.replace("name: fashion_cnn\n", "name: 0089\n", 1))
    code, out, err = cnnlab(capsys, monkeypatch, "show", older)
    assert code == 0 and re.search(r"│ name\s*│ 0089 ", out), out


@pytest.mark.parametrize("status, refused", [
    ("stopped", None),  # a sweep's scheduler stopped it for good: its weights are what it trained
    ("failed", "is failed after 1 epoch(s): sweep a finished run (continue it with: cnnlab train --resume "),
    ("dead", "is dead after 1 epoch(s): sweep a finished run (continue it with: cnnlab train --resume "),
    ("running", "is running after 1 epoch(s): sweep a finished run (wait until it is done)"),
], ids=["stopped", "failed", "dead", "running"])
def test_load_trained_takes_a_finished_run_only(fashion_run, tmp_path, status, refused):
    from cnnlab import runs
    from cnnlab.errors import RunError

    copy = tmp_path / fashion_run.path.name
    shutil.copytree(fashion_run.path, copy)
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**summary, "status": "running" if status == "dead" else status}))
    with runs.training_lock(copy) if status == "running" else contextlib.nullcontext():  # dead: marked running, no one training it
        if refused is None:
            assert shift_sweep.load_trained(copy).cfg == shift_sweep.load_trained(fashion_run.path).cfg
        else:
            with pytest.raises(RunError, match=re.escape(f"{copy} {refused}")):
                shift_sweep.load_trained(copy)


# ---------------------------------------------------------------------------- show and runs
def test_show_and_runs_listing(fashion_run, tiny_data, tmp_path, capsys, monkeypatch):
    code, out, err = cnnlab(capsys, monkeypatch, "show", fashion_run.path)
    assert code == 0, err
    png = last_line(out)
    assert png == fashion_run.path / "learning_curves.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fashion_cnn" in out and "n_feature=6" in out and "permute=True" in out and "train_loss" in out
    # what changes the numbers is on screen: how many images, the step cap, the loss
    assert re.search(r"images\s*│\s*300 train, 100 test", out) and "max_steps=3" in out and "name=cross_entropy" in out, out

    code, out, _ = cnnlab(capsys, monkeypatch, "shift-sweep", "--from-run", fashion_run.path, "--max-shift", "1", "--image-index", "0", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    study = last_line(out)
    code, out, err = cnnlab(capsys, monkeypatch, "show", study)
    assert code == 0 and "| dx (px) |" in out and "Shifted by 1 px" in out

    code, out, err = cnnlab(capsys, monkeypatch, "runs", "--runs-dir", tmp_path, "--model", "cnn", "--csv")
    listing = pd.read_csv(io.StringIO(out))
    assert code == 0 and list(listing.kind) == ["study"] and list(listing.name) == ["shift-sweep"]
    code, out, err = cnnlab(capsys, monkeypatch, "show", tmp_path / "nope")
    assert code == 1 and "not a run directory" in err
    code, out, err = cnnlab(capsys, monkeypatch, "runs", "--runs-dir", tmp_path, "--status", "dead")
    assert code == 0 and f"no runs with status dead in {tmp_path}" in " ".join(out.split())


def test_show_names_the_label_smoothing_on_the_loss_axis(tiny_data, tmp_path, capsys, monkeypatch):
    """The learning curves of a run trained with label smoothing said its losses were plain cross-entropy."""
    cfg = load_config(ROOT / "configs/fashion_cnn.yaml", ["device=cpu", "train.epochs=1", "train.max_steps=2", "loss.label_smoothing=0.2"])
    result = run(cfg, runs_dir=tmp_path, data_dir=tiny_data)
    drawn = []
    monkeypatch.setattr("cnnlab.figures.save", lambda fig, path: drawn.append(fig.axes[0].get_ylabel()))
    code, out, err = cnnlab(capsys, monkeypatch, "show", result.path)
    assert code == 0, err
    assert drawn == ["loss (cross-entropy, label smoothing 0.2)"]


def test_show_says_what_a_summary_lacks_and_never_shows_none(fashion_run, tmp_path, capsys, monkeypatch):
    """A summary.json emptied to {} was shown as 'status None', 'params 0', 'epochs None of 1',
    'train seconds 0.0 on None', and the learning curves titled 'None: None on None'."""
    from cnnlab import figures

    copy = tmp_path / fashion_run.path.name
    shutil.copytree(fashion_run.path, copy)
    summary = json.loads((copy / "summary.json").read_text())
    titles = []
    drawn = figures.learning_curves
    monkeypatch.setattr("cnnlab.figures.learning_curves", lambda metrics, title, **kw: titles.append(title) or drawn(metrics, title, **kw))

    (copy / "summary.json").write_text("{}")
    code, out, err = cnnlab(capsys, monkeypatch, "show", copy)
    assert code == 0 and err == "", err
    assert "None" not in out and not re.search(r"params\s*│ 0 ", out), out
    for key, value in [("status", "unknown"), ("params", "unknown"), ("epochs", "1 planned, batch 64, max_steps=3"), ("test accuracy", "unknown"),
                       ("train seconds", "unknown"), ("missing", "summary.json has no status, params, epochs, test_acc, train_seconds, device")]:
        assert re.search(rf"│ {key}\s*│ {re.escape(value)}\s*│", out), (key, out)
    assert titles == ["fashion_cnn: cnn on fashion-mnist"]

    (copy / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k not in ("test_acc", "device")}))
    code, out, err = cnnlab(capsys, monkeypatch, "show", copy)
    assert code == 0 and "None" not in out, err
    assert re.search(r"│ status\s*│ completed\s*│", out) and re.search(r"│ epochs\s*│ 1 of 1, batch 64", out), out
    assert re.search(r"│ test accuracy\s*│ unknown\s*│", out) and re.search(r"│ train seconds\s*│ \d+\.\d\s*│", out), out
    assert re.search(r"│ missing\s*│ summary.json has no test_acc, device\s*│", out), out
    assert "missing" not in cnnlab(capsys, monkeypatch, "show", fashion_run.path)[1]  # a whole summary: no such row

    for text, error in [
        (json.dumps({**summary, "train_seconds": "abc"}), "'train_seconds' should be a number, not 'abc' (edited by hand?)"),
        (json.dumps({**summary, "epochs": True}), "'epochs' should be a whole number, not True (edited by hand?)"),  # was "True of 1"
        ("", "the file is empty"),
        (json.dumps(summary)[:40], "Unterminated string"),  # cut short
        ("not json", "Expecting value: line 1 column 1"),
    ]:
        (copy / "summary.json").write_text(text)
        code, out, err = cnnlab(capsys, monkeypatch, "show", copy)
        assert (code, out, err.count("\n")) == (1, "", 1) and err.startswith(f"error: cannot read {copy}/summary.json: ") and error in err, (text, err)


def test_show_reads_a_metrics_table_with_a_header_alone_as_no_epoch_yet(fashion_run, tmp_path, capsys, monkeypatch):
    """A header without rows has untyped columns: it was refused as "column 'epoch' holds something
    other than numbers (edited by hand?)" instead of read as a run with no finished epoch."""
    copy = tmp_path / fashion_run.path.name
    shutil.copytree(fashion_run.path, copy)
    metrics = copy / "metrics.csv"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
    assert runs.read_metrics(copy).empty
    code, out, err = cnnlab(capsys, monkeypatch, "show", copy)
    assert code == 1 and err == f"error: {copy} has no finished epoch yet: no epoch table or learning curves to show\n", err
    header, row = (fashion_run.path / "metrics.csv").read_text().splitlines()[:2]
    metrics.write_text(header + "\n" + ",".join(["True"] + row.split(",")[1:]) + "\n")  # True read as epoch 1
    with pytest.raises(RunError, match="column 'epoch' holds something other than numbers"):
        runs.read_metrics(copy)


def test_show_of_a_study_summary_edited_by_hand_never_shows_none(tmp_path, capsys, monkeypatch):
    """{"kind": "study"} alone was shown as 'study (study), None, started None', and a listed file
    that is gone was listed still."""
    study = tmp_path / "my_study"
    study.mkdir()
    (study / "summary.json").write_text(json.dumps({"kind": "study"}))
    code, out, err = cnnlab(capsys, monkeypatch, "show", study)
    assert code == 0 and out.splitlines()[:2] == ["my_study (study), status unknown", "files: summary.json"], out
    (study / "table.md").write_text("| model |\n")
    (study / "summary.json").write_text(json.dumps({"kind": "study", "status": "completed", "started_at": "2026-11-28T01:00:00Z",
                                                    "files": ["table.md", "accuracy.png"]}))
    code, out, err = cnnlab(capsys, monkeypatch, "show", study)
    assert code == 0 and "None" not in out, out
    assert out.splitlines()[0] == "my_study (study), completed, started 2026-11-28T01:00:00Z"
    assert out.splitlines()[-1] == "files: table.md"  # accuracy.png is not there


def test_show_open_says_when_no_viewer_opened_the_png(fashion_run, capsys, monkeypatch):
    """On a machine without a system viewer (headless: no xdg-open) --open did nothing and said nothing."""
    opened = []
    monkeypatch.setattr("typer.launch", lambda url: opened.append(url) or 1)  # click's exit code when xdg-open is missing
    code, out, err = cnnlab(capsys, monkeypatch, "show", fashion_run.path, "--open")
    png = fashion_run.path / "learning_curves.png"
    assert code == 0 and opened == [str(png)] and last_line(out) == png
    assert err.strip() == f"note: --open found no system viewer here (xdg-open); the PNG is {png}"
    monkeypatch.setattr("typer.launch", lambda url: 0)  # a viewer opened it: nothing to say
    code, out, err = cnnlab(capsys, monkeypatch, "show", fashion_run.path, "--open")
    assert code == 0 and err == ""


def test_show_open_opens_a_study_figure(fashion_run, tiny_data, tmp_path, capsys, monkeypatch):
    """Given a study directory, show --open did nothing and said nothing: it opens the study's figure."""
    code, out, _ = cnnlab(capsys, monkeypatch, "shift-sweep", "--from-run", fashion_run.path, "--max-shift", "1", "--image-index", "0", "--data-dir", tiny_data, "--runs-dir", tmp_path)
    study = last_line(out)
    opened = []
    monkeypatch.setattr("typer.launch", lambda url: opened.append(url) or 0)
    code, out, err = cnnlab(capsys, monkeypatch, "show", study, "--open")
    assert code == 0 and opened == [str(study / "accuracy.png")] and err == ""
    for png in study.glob("*.png"):
        png.unlink()
    code, out, err = cnnlab(capsys, monkeypatch, "show", study, "--open")
    assert code == 0 and err.strip() == f"note: --open found no figure in {study} to open"


def test_runs_lists_newest_first_and_filters_by_dataset(tiny_data, tmp_path, capsys, monkeypatch):
    # fashion_fc first: two runs started within the same second are ordered by name, which agrees
    fast = ["device=cpu", "train.epochs=1", "train.max_steps=2"]
    older = run(load_config(ROOT / "configs/fashion_fc.yaml", fast), runs_dir=tmp_path, data_dir=tiny_data)
    newer = run(load_config(ROOT / "configs/mnist_fc.yaml", fast), runs_dir=tmp_path, data_dir=tiny_data)
    code, out, err = cnnlab(capsys, monkeypatch, "runs", "--runs-dir", tmp_path, "--csv")
    listing = pd.read_csv(io.StringIO(out))
    assert code == 0, err
    assert list(listing.id) == [newer.path.name, older.path.name] and list(listing.dataset) == ["mnist", "fashion-mnist"]
    code, out, err = cnnlab(capsys, monkeypatch, "runs", "--runs-dir", tmp_path, "--dataset", "fashion-mnist", "--csv")
    assert code == 0 and list(pd.read_csv(io.StringIO(out)).id) == [older.path.name]
    code, out, err = cnnlab(capsys, monkeypatch, "runs", "--runs-dir", tmp_path, "--status", "finished")
    assert code == 2 and "valid: running, completed" in err and len(err.strip().splitlines()) == 1
    # the table never cuts a run's id (what `show` and `--resume` take), even on a narrow terminal
    narrow = Console(width=60, file=io.StringIO())
    narrow.print(report.table(listing.to_dict("records"), list(listing.columns), whole=("id",)))
    assert newer.path.name in narrow.file.getvalue() and older.path.name in narrow.file.getvalue()


def test_show_and_runs_agree_on_a_killed_run(fashion_run, tmp_path, capsys, monkeypatch):
    """A run marked running whose process is gone (kill -9) is 'dead' in both listings."""
    killed = tmp_path / fashion_run.path.name
    shutil.copytree(fashion_run.path, killed)
    summary = json.loads((killed / "summary.json").read_text())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    (killed / "summary.json").write_text(json.dumps({**summary, "status": "running", "pid": int(gone)}))
    code, out, err = cnnlab(capsys, monkeypatch, "runs", "--runs-dir", tmp_path, "--csv")
    assert code == 0 and list(pd.read_csv(io.StringIO(out)).status) == ["dead"]
    code, out, err = cnnlab(capsys, monkeypatch, "show", killed)
    assert code == 0 and re.search(r"status\s*│\s*dead", out), out


def test_show_says_why_a_run_or_study_did_not_complete(fashion_run, tmp_path, capsys, monkeypatch):
    stopped = tmp_path / fashion_run.path.name
    shutil.copytree(fashion_run.path, stopped)
    summary = json.loads((stopped / "summary.json").read_text())
    (stopped / "summary.json").write_text(json.dumps({**summary, "status": "stopped", "error": "stopped early by ASHA after epoch 1"}))
    code, out, err = cnnlab(capsys, monkeypatch, "show", stopped)
    assert code == 0 and re.search(r"why\s*│\s*stopped early by ASHA after epoch 1", out), out
    record = StudyRecord(tmp_path, "s", study="compare", status="failed", error="the disk is full [really]")
    code, out, err = cnnlab(capsys, monkeypatch, "show", record.path)
    assert code == 0 and "why: the disk is full [really]" in out, out
    code, out, err = cnnlab(capsys, monkeypatch, "show", fashion_run.path)
    assert code == 0 and "why" not in out  # a completed run has nothing to explain


def test_show_and_runs_print_square_brackets_as_they_are(fashion_run, tmp_path, capsys, monkeypatch):
    """Text in brackets (a description, a path) is not rich markup: '[/x]' neither fails nor vanishes."""
    described = tmp_path / fashion_run.path.name
    shutil.copytree(fashion_run.path, described)
    config = described / "config.yaml"
    config.write_text(config.read_text().replace("description: ''", "description: see [/x] and [bold]y"))
    code, out, err = cnnlab(capsys, monkeypatch, "show", described)
    assert code == 0 and "see [/x] and [bold]y" in out, err
    (tmp_path / "[/x]").mkdir(parents=True)
    code, out, err = cnnlab(capsys, monkeypatch, "runs", "--runs-dir", tmp_path / "[/x]")
    assert code == 0 and f"no runs in {tmp_path / '[/x]'}" in " ".join(out.split()), err


# ---------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_fc_vs_cnn_permutation_on_real_mnist(tmp_path, capsys, monkeypatch):
    data = real_data("MNIST", "raw")
    code, out, err = cnnlab(capsys, monkeypatch, "compare", "fc-vs-cnn", "--permute", "--device", "cpu", "train.threads=1", "--data-dir", data, "--runs-dir", tmp_path)
    assert code == 0, err
    table = pd.read_csv(last_line(out) / "table.csv").set_index(["model", "permuted"]).test_acc_mean
    assert table["CNN", False] - table["FC", False] >= 0.05
    assert table["CNN", False] - table["CNN", True] >= 0.08
    assert abs(table["FC", False] - table["FC", True]) <= 0.02


@pytest.mark.slow
def test_shift_sweep_on_real_fashion_mnist(tmp_path, capsys, monkeypatch):
    data = real_data("FashionMNIST", "raw")
    code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", "--max-shift", "4", "--device", "cpu", "train.threads=1", "--data-dir", data, "--runs-dir", tmp_path)
    assert code == 0, err
    acc = {(r.model, r.dx): r.test_acc for r in pd.read_csv(last_line(out) / "table.csv").itertuples()}
    at_4 = {m: (acc[m, 4] + acc[m, -4]) / 2 for m in ("FC", "CNN", "CNN+aug")}
    assert acc["FC", 0] - at_4["FC"] >= 0.25  # well below its centred accuracy
    assert at_4["CNN+aug"] - at_4["FC"] >= 0.20 and at_4["CNN+aug"] - at_4["CNN"] >= 0.15
    assert acc["CNN+aug", 0] - at_4["CNN+aug"] <= 0.10


def test_show_names_a_cuda_run_that_gave_up_determinism():
    """train.deterministic=false lets cuDNN add up in any order on CUDA, so such a run's numbers are
    not the seed's alone: show says so beside the epochs; on the CPU the setting changes nothing."""
    from cnnlab.commands.studies import _config_rows

    cfg = {"name": "r", "dataset": {"name": "mnist"}, "model": {"name": "cnn"}, "train": {"epochs": 1, "batch_size": 64, "deterministic": False}}

    def epochs(device):
        rows = _config_rows(cfg, {"status": "completed", "epochs": 1, "device": device}, Path("."))
        return next(r["value"] for r in rows if r["key"] == "epochs")

    assert epochs("cuda:0") == "1 of 1, batch 64, deterministic=False"
    assert epochs("cpu") == "1 of 1, batch 64"


@pytest.mark.parametrize("body, message", [
    ("membrs:\n  - {ROOT}/configs/mnist_fc.yaml\n", "unknown key 'membrs'; did you mean 'members' (a study file's list of configs)?"),
    ("modes: {{name: fc}}\n", "unknown key 'modes'; did you mean 'model'?"),  # a config's typo, not a study's
    ("seeds: 2\nmembrs:\n  - {ROOT}/configs/mnist_fc.yaml\n", "unknown key 'membrs'; did you mean 'members'"),  # not 'seeds'
    ("base: {ROOT}/configs/mnist_fc.yaml\nseeds: [0]\nspace: {{optimizer.lr: [0.1]}}\n", "is a sweep file, not a config: run it with cnnlab sweep"),
    ("members:\n  - {{config: {ROOT}/configs/mnist_fc.yaml, label: \"fc\\nnet\"}}\n", "members.0.label: a label is one line of visible text"),
    ("members:\n  - {{config: {ROOT}/configs/mnist_fc.yaml, label: \"  \"}}\n", "members.0.label: a label is one line of visible text"),
    # the keys of a list's sections were not looked up: "unknown key 'members.0.lable'; valid keys here: " and nothing
    ("members:\n  - {{config: {ROOT}/configs/mnist_fc.yaml, lable: FC}}\n", "unknown key 'members.0.lable'; did you mean 'members.0.label'?"),
    ("name: {long}\nmembers: [mnist_fc]\n", "name: String should have at most 100 characters"),
    # a lone surrogate trained every cell, then failed writing the tables (UnicodeEncodeError, a traceback)
    ("members:\n  - {{config: {ROOT}/configs/mnist_fc.yaml, label: \"\\ud800\"}}\n", "members.0.label: a label is one line of visible text"),
])
def test_a_study_file_with_a_misspelt_members_key_or_a_blank_label_is_one_line(tmp_path, body, message):
    """membrs used to be read as a config ('valid keys here: name, seed, ...'); a label with a line
    break or none at all broke the table's rows. A study's (or a sweep file's) seeds is no misspelt members."""
    study = tmp_path / "study.yaml"
    study.write_text(("" if body.startswith("name:") else "name: s\n") + body.format(ROOT=ROOT, long="s" * 101))
    out = subprocess.run([sys.executable, "-m", "cnnlab", "compare", str(study), "--epochs", "1", "--runs-dir", str(tmp_path / "runs")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and message in out.stderr, out.stderr
    assert not (tmp_path / "runs").exists()


def test_shift_sweep_evaluates_a_run_as_its_train_eval_mode_says(tiny_data, tmp_path, capsys, monkeypatch):
    """A run trained with train.eval_mode=false (BatchNorm on each test batch's own statistics) is
    swept the same way: at 0 px the sweep repeats the run's own final evaluation."""
    config = tmp_path / "bn.yaml"
    config.write_text("name: bn\ndataset: {name: fashion-mnist}\nmodel: {name: trashnet}\ntrain: {eval_mode: false, batch_size: 16}\n")
    code, out, err = cnnlab(
        capsys, monkeypatch, "shift-sweep", config, "--epochs", "1", "--max-shift", "1", "--image-index", "3",
        "--data-dir", tiny_data, "--runs-dir", tmp_path / "runs", *FAST, "train.eval_batch_size=7",
    )
    assert code == 0, err
    study = last_line(out)
    (cell,) = json.loads((study / "summary.json").read_text())["cells"]
    run = json.loads((study / cell / "summary.json").read_text())
    centre = pd.read_csv(study / "table.csv").query("dx == 0")
    assert centre.test_loss.item() == pytest.approx(run["test_loss"], rel=1e-5)
    assert centre.test_acc.item() == pytest.approx(run["test_acc"])


@pytest.mark.parametrize("second, image", [("CNN aug", "image_CNN_aug-2.png"), ("cnn aug", "image_cnn_aug-2.png")])
def test_labels_that_make_the_same_file_name_get_one_image_figure_each(second, image, tiny_data, tmp_path, capsys, monkeypatch):
    """CNN+aug and 'CNN aug' both make image_CNN_aug.png: the second figure overwrote the first and
    summary.json listed the name twice. Now the second is image_CNN_aug-2.png. 'cnn aug' made
    image_cnn_aug.png, the same file as image_CNN_aug.png on macOS and Windows: now image_cnn_aug-2.png."""
    study_file = tmp_path / "twins.yaml"
    study_file.write_text(f"name: twins\nmembers:\n  - {{config: {ROOT}/configs/fashion_fc.yaml, label: CNN+aug}}\n"
                          f"  - {{config: {ROOT}/configs/fashion_fc.yaml, label: {second}}}\n")
    code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", study_file, "--epochs", "1", "--max-shift", "1", "--image-index", "3",
                            "--data-dir", tiny_data, "--runs-dir", tmp_path / "runs", *FAST)
    assert code == 0, err
    study = last_line(out)
    images = [f for f in json.loads((study / "summary.json").read_text())["files"] if f.startswith("image_") and f.endswith(".png")]
    assert images == ["image_CNN_aug.png", image]
    assert all((study / f).is_file() for f in images)


@pytest.mark.parametrize("member, reused, image", [("FASHION_CNN", "fashion_cnn", "image_fashion_cnn-2.png"),
                                                   ("fashion_cnn", "fashion_cnn-<id>", "image_fashion_cnn-<id>.png")])
def test_a_from_run_label_is_renamed_only_when_it_is_a_members_label_exactly(member, reused, image, fashion_run, tiny_data, tmp_path, capsys, monkeypatch):
    """Labels are compared as written, as a study file's members' are (CNN and cnn are two labels):
    a --from-run run named fashion_cnn beside a member FASHION_CNN keeps its name, its own column;
    beside a member fashion_cnn it becomes fashion_cnn-<its run id> (one label would average the two
    models into one column). Only the image files, named apart ignoring case, differ in more."""
    study_file = tmp_path / "case.yaml"
    study_file.write_text(f"name: case\nmembers:\n  - {{config: {ROOT}/configs/fashion_fc.yaml, label: {member}}}\n")
    code, out, err = cnnlab(capsys, monkeypatch, "shift-sweep", study_file, "--from-run", fashion_run.path, "--epochs", "1", "--max-shift", "1",
                            "--image-index", "0", "--data-dir", tiny_data, "--runs-dir", tmp_path / "runs", *FAST)
    assert code == 0, err
    study = last_line(out)
    run_id = fashion_run.path.name.rsplit("-", 1)[-1]
    reused, image = reused.replace("<id>", run_id), image.replace("<id>", run_id)
    table = pd.read_csv(study / "table.csv")
    assert list(table.groupby("model", sort=False).size().items()) == [(member, 3), (reused, 3)]
    summary = json.loads((study / "summary.json").read_text())
    assert summary["members"][reused] == str(fashion_run.path)
    assert [f for f in summary["files"] if f.startswith("image_") and f.endswith(".png")] == [f"image_{member}.png", image]


def test_shift_reading_says_a_tie_rather_than_naming_the_first_model():
    """Two models that lose the same 2.1 points: the reading named the first as the one that 'loses
    the least'. Now it says they fare alike, and names every leader where the rest fare worse."""
    accs = {"CNN+aug": (0.305, 0.284), "CNN aug": (0.305, 0.2842), "FC": (0.60, 0.40)}
    rows = [{"model": m, "dx": dx, "dy": 0, "test_acc": centred if dx == 0 else shifted}
            for m, (centred, shifted) in accs.items() for dx in (-1, 0, 1)]
    assert shift_sweep.reading(rows, "x", "roll").endswith("(-20.0 points); CNN+aug and CNN aug lose the least at 1 px.")
    rows = [r for r in rows if r["model"] != "FC"]
    assert shift_sweep.reading(rows, "x", "roll").endswith("(-2.1 points); CNN+aug and CNN aug fare alike at 1 px.")


def test_a_labels_image_file_name_fits_the_file_system_however_long_the_label():
    """A member labelled with 300 letters trained, wrote the table and the figure, then failed on
    image_<label>.png (File name too long), and its --resume failed the same way."""
    from cnnlab.commands.studies import _image_names

    names = _image_names(["L" * 300, "L" * 299 + "M", "CNN+aug"])
    assert names == [f"image_{'L' * 100}.png", f"image_{'L' * 100}-2.png", "image_CNN_aug.png"]
    assert all(len(name.encode()) <= 255 for name in names)


def test_a_study_file_without_a_name_is_named_after_its_file(tmp_path):
    """Configs and sweep files take their file's name; a study file said 'name: Field required'."""
    from cnnlab.studies.spec import load_study

    study = tmp_path / "my study.yaml"
    study.write_text("members: [mnist_fc, mnist_cnn]\n")
    assert load_study(study).name == "my_study"


def test_a_members_cells_are_named_within_the_name_limit_however_long_its_name(tmp_path):
    """A config named 97 to 100 characters trained alone, but compare named its cells NAME-s0 and
    NAME-s0-permuted, past the limit: 'override name=...-s0: name: at most 100 characters', blaming an
    override nobody typed."""
    from cnnlab.config import NAME_MAX
    from cnnlab.studies.compare import make_cells
    from cnnlab.studies.spec import Member

    cfg = load_config(ROOT / "configs/mnist_fc.yaml", [f"name={'m' * NAME_MAX}"])
    names = [cell.cfg.name for cell in make_cells([Member("FC", cfg, "mnist_fc.yaml")], 2, permute=True)]
    assert names == [f"{'m' * (NAME_MAX - 3)}-s0", f"{'m' * (NAME_MAX - 3)}-s1",
                     f"{'m' * (NAME_MAX - 12)}-s0-permuted", f"{'m' * (NAME_MAX - 12)}-s1-permuted"]
