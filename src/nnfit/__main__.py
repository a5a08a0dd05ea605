"""``python -m nnfit``: the same as the ``nnfit`` command."""

import sys

from .cli import main

sys.exit(main())
