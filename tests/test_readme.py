"""The README against the program: what it documents exists as it says, and what `--help` lists is
documented, so that a user reading one is not misled by the other."""

import re

import typer

from cnnlab.cli import app
from conftest import ROOT

README = (ROOT / "README.md").read_text()


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


def test_every_option_the_readme_gives_a_command_exists():
    options = {name: {o for p in c.params for o in p.opts + p.secondary_opts} for name, c in commands().items()}
    for match in re.finditer(r"cnnlab ([a-z-]+)([^|`\n]*)", README):
        name, rest = match.groups()
        for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest) if name in options else []:
            assert option in options[name], f"the README gives `cnnlab {name} ... {option}`, which cnnlab {name} does not take"
