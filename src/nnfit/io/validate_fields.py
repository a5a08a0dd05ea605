"""The bounded field types the JSON schemas share (:mod:`nnfit.io.validate` and its parts)."""

from __future__ import annotations

from .checkpoints import NAME
from .schema import AnyOf, Bool, Float, Int, Str

COUNT = Int(0, 2**53)  # epochs, steps, batches, samples
MAX_WINDOW = 10**6  # forecasting: rows in a window, rows ahead, rows in a season
SIZE = Int(1, 2**40)  # a layer width; the parameter count bounds it far lower
SHA256 = Str(pattern=r"[0-9a-f]{64}")
CHECKPOINT_NAME = Str(pattern=NAME.pattern)  # as nnfit.io.checkpoints names them
LABEL = AnyOf((Str(max_len=10_000), Int(-(2**63)), Float(), Bool()), "a label (string, number or boolean)")
# A regression target's scale is applied to float32 outputs: it must be a float32 number
# (a mean of 1e300 made every prediction and metric infinite), a std a normal positive one.
FLOAT32_MAX, FLOAT32_TINY = 3.4028234663852886e38, 1.1754943508222875e-38
TEXT_NAME = Str(min_len=1, max_len=10_000)  # a column or class name
