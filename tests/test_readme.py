"""The README against the program: what it documents exists as it says, and what `--help` lists is
documented, so that a user reading one is not misled by the other."""

import fnmatch
import json
import re

import pytest
import typer

from cnnlab.cli import app
from conftest import ROOT
from fakedata import make_idx_dataset

README = (ROOT / "README.md").read_text()
DOCS = {path: path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
TINY = """name: tiny
device: cpu
dataset: {name: mnist, download: false}
model: {name: fc, hidden: [8]}
train: {epochs: 2, batch_size: 20, threads: 1, tensorboard: true}
"""


def commands() -> dict:
    return typer.main.get_command(app).commands


def test_every_option_has_help_and_is_named_in_the_readme():
    for name, command in commands().items():
        for param in command.params:
            if param.param_type_name != "option" or param.name == "help":
                continue
            assert param.help, f"cnnlab {name} {param.opts[0]} has no help text"
            assert any(re.search(rf"{re.escape(o)}(?![\w-])", README) for o in param.opts + param.secondary_opts), \
                f"cnnlab {name} {param.opts[0]} is not in the README"


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_option_the_docs_give_a_command_exists(doc):
    options = {name: {o for p in c.params for o in p.opts + p.secondary_opts} for name, c in commands().items()}
    # a table cell ends at a '|', not at the escaped '\|' of `[--split test\|train]` (a typo after it went unseen)
    for match in re.finditer(r"cnnlab ([a-z-]+)([^|`\n]*)", DOCS[doc].replace("\\|", "/")):
        name, rest = match.groups()
        given = re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest)
        assert name in options or not given, f"{doc.name} gives `cnnlab {name} ... {given[0]}`, but cnnlab has no command {name}"
        for option in given:
            assert option in options[name], f"{doc.name} gives `cnnlab {name} ... {option}`, which cnnlab {name} does not take"


def anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_link_between_the_docs_lands_on_a_file_and_heading(doc):
    for target in re.findall(r"\]\(([^)\s]+)\)", DOCS[doc]):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, fragment = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        assert linked.exists(), f"{doc.name} links to {target}, which is not there"
        if fragment:
            prose = re.sub(r"^```.*?^```", "", linked.read_text(), flags=re.M | re.S)  # a YAML block's "# comment" is no heading
            headings = {anchor(h) for h in re.findall(r"^#+ (.+)$", prose, re.M)}
            assert fragment in headings, f"{doc.name} links to {target}, but {linked.name} has no such heading"


def run_files_table() -> dict[str, str]:
    """The README's table of a run directory's files: {file name or glob: what it says of it}."""
    section = README.split("## Run directories", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (`[^|]+`) \| (.+) \|$", section, re.M)
    return {name: text for names, text in rows for name in re.findall(r"`([^`]+)`", names)}


def test_the_readme_names_every_file_of_a_run_and_every_key_of_its_summary(tmp_path):
    pytest.importorskip("tensorboardX")
    from cnnlab.commands.studies import show
    from cnnlab.config import load_config
    from cnnlab.experiment import run

    make_idx_dataset(tmp_path / "data", n_train=100, n_test=20)
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = run(load_config(tmp_path / "tiny.yaml"), runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    show(result.path, False)
    documented = run_files_table()
    for file in result.path.iterdir():
        assert any(fnmatch.fnmatch(file.name, name) for name in documented), f"a run holds {file.name}, which the README's table leaves out"
    summary_text = documented["summary.json"]
    for key in json.loads((result.path / "summary.json").read_text()):
        assert f"`{key}`" in summary_text, f"summary.json's {key!r} is not in the README's table"
    columns = (result.path / "metrics.csv").read_text().splitlines()[0].split(",")
    metrics_text = documented["metrics.csv"]
    assert [name for name in re.findall(r"`([\w.]+)`", metrics_text) if name in columns] == columns
    # what a test loss is: with label smoothing or test-time augmentation it is not the plain
    # cross-entropy of one forward pass, and runs that differ in them are not comparable by it
    assert re.search(r"`test_acc` \([^|]*`label_smoothing` included[^|]*`train.tta`", metrics_text)
    assert "`lr` (the rate of the epoch's first step" in metrics_text


def articles_configs() -> list[str]:
    """The configs of the README's table of the articles' experiments."""
    section = README.split("### The articles' experiments", 1)[1].split("\n\n", 3)[2]  # the table itself
    return sorted(set(re.findall(r"^\| [^|]+ \| `([\w.]+\.yaml)` \|", section, re.M)))


@pytest.mark.parametrize("name", articles_configs())
def test_every_articles_experiment_says_what_the_article_reported(name):
    """The README says each one's number is in its config's `reported`: its source (and its number, if any)
    lands in every run's summary.json, where the configs of cnnlab's own setups have none."""
    from cnnlab.config import load_config

    cfg = load_config(ROOT / "configs" / name)
    assert cfg.reported is not None and cfg.reported.source, name


def test_the_articles_table_is_read():
    assert {"mnist_cnn.yaml", "fashion_fc.yaml", "lenet.yaml", "toy_4x4.yaml"} <= set(articles_configs())


def test_the_readme_gives_compares_table_columns():
    """The columns of compare's table.csv as the README lists them, and its example table's header as
    compare prints a table with the article's numbers."""
    import pandas as pd

    from cnnlab.studies.compare import TABLE_COLUMNS, display_rows

    listed = re.search(r"It writes `table\.csv` \(`([^`]+)`\), `cells\.csv`", README).group(1)
    assert re.split(r",\s+", listed) == TABLE_COLUMNS
    example = README.split("`cnnlab compare fc-vs-cnn --permute` on the real MNIST", 1)[1]
    header = re.search(r"^\| (.+) \|$", example, re.M).group(1).split(" | ")
    row = {"model": "FC", "params": 6442, "permuted": False, "seeds": 3, "test_acc_mean": 0.9, "test_acc_std": 0.01,
           "train_seconds": 1.0, "article_test_acc": 0.88, "article_test_acc_low": None}
    assert header == list(display_rows(pd.DataFrame([row]))[0])


def test_help_gives_each_paragraph_of_a_commands_description_as_one_line():
    """`cnnlab --help` and `cnnlab compare --help` (train, shift-sweep, sweep too) broke sentences
    where the docstring's source lines end ('the last line is the run directory (also when' / 'the
    run is interrupted ...'), however wide the terminal."""
    from test_train import cnnlab

    def lines(*args) -> list[str]:
        out = cnnlab(*args, "--help", env={"COLUMNS": "500"})
        assert out.returncode == 0, out.stderr
        return [" ".join(line.strip(" │").split()) for line in out.stdout.splitlines()]

    listing = lines()
    for name, command in commands().items():
        paragraphs = [" ".join(p.split()) for p in command.help.split("\n\n")]
        assert any(line.startswith(name) and line.endswith(paragraphs[0]) for line in listing), name
        own = lines(name)
        for paragraph in paragraphs:
            assert paragraph in own, f"cnnlab {name} --help: {paragraph!r}"


def test_the_readme_names_every_setting_a_resume_may_change():
    """The Run directories section listed what a resume may change without dataset.download, which
    resume.py lets a resume change (where the data comes from, like dataset.data_dir)."""
    from cnnlab.resumable import RESUMABLE_CHANGES

    listed = re.search(r"A resume may change (.+?) is refused in one line", README, re.S).group(1)
    named = set(re.findall(r"`([\w.]+)`", listed))
    missing = [key for key in RESUMABLE_CHANGES if key not in named and key.split(".")[-1] not in named]
    assert not missing, f"the README's list of what a resume may change leaves out {missing}"
