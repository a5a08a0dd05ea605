"""Run a sweep in this process and SIGKILL it right after stacked step N (inside an epoch).

Used by tests/test_sweep.py as ``python sweep_crash_driver.py N OUT [resume]``: the sweep of
:func:`sweep_args` (the test's data and settings), killed at step N (0: never), or resumed.
"""

import os
import signal
import sys

import numpy as np


def sweep_args() -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(230, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 0.8)
    return dict(model={"name": "mlp", "hidden": [16], "dropout": 0.1, "batchnorm": True}, x=x, y=y,
                seeds="0-2", grid={"lr": [1e-3, 3e-3]}, epochs=4, batch_size=16,
                checkpoint_steps=5, quiet=True, threads=1)


def main() -> int:
    n, out = int(sys.argv[1]), sys.argv[2]
    resume = len(sys.argv) > 3
    from nnfit.sweep import engine, sweep

    if n:
        step = engine.GroupTrainer._train_step

        def dying_step(self, *args):
            step(self, *args)
            if self.step == n:
                os.kill(os.getpid(), signal.SIGKILL)

        engine.GroupTrainer._train_step = dying_step
    sweep(out=out, resume=resume, **sweep_args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
