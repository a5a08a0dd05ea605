"""Run the nnfit CLI in a process that torchrun started, and stop it at a chosen step.

Used by tests/test_ddp.py as ``torchrun --standalone --nproc-per-node 2 ddp_driver.py MODE N
RANK -- nnfit-args...``:

* ``kill N R``: after optimizer step N, rank R SIGKILLs the whole process group (torchrun and
  every rank at once: a machine going down);
* ``term N R``: after optimizer step N, rank R alone is sent SIGTERM;
* ``none 0 0``: no stop.
"""

import os
import signal
import sys


def _kill_all() -> None:
    """SIGKILL torchrun and every rank it started (each rank is its own session), this one last."""
    agent = os.getppid()
    ranks = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == agent:
                        ranks.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    for pid in [agent, *[p for p in ranks if p != os.getpid()], os.getpid()]:
        os.kill(pid, signal.SIGKILL)


def main() -> int:
    mode, n, who, args = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[5:]
    import nnfit.trainer
    from nnfit.cli import main as cli

    rank = int(os.environ.get("RANK", "0"))
    if mode in ("kill", "term") and rank == who:
        step = nnfit.trainer.Trainer.optimizer_step

        def stopping_step(self):
            step(self)
            if self.state.step == n:
                if mode == "kill":
                    _kill_all()
                os.kill(os.getpid(), signal.SIGTERM)

        nnfit.trainer.Trainer.optimizer_step = stopping_step
    return cli(args)


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # as the nnfit command exits (nnfit.cli.run): no C++ destructors at exit
