"""``python -m nnfit``: the same as the ``nnfit`` command."""

from .cli import run

run()
