"""CLI commands that live beside their feature: importing this package registers every module's
commands on cnnlab.cli.app. Each module imports torch and friends only inside its command bodies."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
