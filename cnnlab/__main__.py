"""`python -m cnnlab`."""

from cnnlab.cli import entry

entry()
