"""Run the nnfit CLI in this process and kill it with SIGKILL at a chosen point.

Used by tests/test_resilience.py as ``python crash_driver.py MODE N -- nnfit-args...``:

* ``save N``: the N-th file write of the run writes half its bytes, then the process is
  SIGKILLed (a kill in the middle of writing a checkpoint, history or model file);
* ``step N``: SIGKILL right after optimizer step N (inside an epoch);
* ``none 0``: no kill (the run is only observed from outside).
"""

import os
import signal
import sys


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    mode, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[4:]
    import nnfit.files
    import nnfit.trainer
    from nnfit.cli import main as cli

    if mode == "save":
        original, count = nnfit.files._write_file, [0]

        def dying_write(path, data):
            count[0] += 1
            if count[0] == n:
                with open(path, "wb") as f:
                    f.write(data[: len(data) // 2])
                    f.flush()
                _die()
            original(path, data)

        nnfit.files._write_file = dying_write
    elif mode == "step":
        step = nnfit.trainer.Trainer.optimizer_step

        def dying_step(self):
            step(self)
            if self.state.step == n:
                _die()

        nnfit.trainer.Trainer.optimizer_step = dying_step
    return cli(args)


if __name__ == "__main__":
    sys.exit(main())
