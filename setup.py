"""Packaging beside pyproject.toml: a built wheel carries configs/ inside the package (cnnlab/configs),
so that an installed cnnlab finds its own configs, studies and sweeps by name (cnnlab/named.py). An
editable install reads the checkout's configs/ instead."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


HERE = Path(__file__).resolve().parent


class BuildWithConfigs(build_py):
    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):  # (setuptools before 64 has no editable mode)
            target = Path(self.build_lib) / "cnnlab" / "configs"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(HERE / "configs", target, ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))


setup(cmdclass={"build_py": BuildWithConfigs})
