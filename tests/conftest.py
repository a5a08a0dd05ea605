"""Suite-wide guards: small, deterministic and leaving no trace."""

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_and_no_leaks():
    """Run each test on one intra-op thread and fail it if it leaks environment variables,
    changes the working directory or leaves torch's thread count changed.

    The tensors in the suite are tiny: a second thread only spins, and on a busy 2-core
    machine the spinning made files several times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    env, cwd = dict(os.environ), os.getcwd()
    yield
    torch.set_num_threads(threads)
    leaked = ({k for k in set(env) ^ set(os.environ)}
              | {k for k in env if k in os.environ and env[k] != os.environ[k]})
    leaked.discard("PYTEST_CURRENT_TEST")  # pytest's own bookkeeping
    # torch sets its own variables on first use (its compiler stack at the first optimizer or
    # compile, CUDA module loading at the first CUDA call), and scikit-learn sets KMP_* at its
    # first import: not the test's doing.
    leaked = {k for k in leaked if "TORCH" not in k and not k.startswith(("CUDA", "KMP_"))}
    assert not leaked, f"test leaked environment variables: {sorted(leaked)}"
    assert os.getcwd() == cwd, "test changed the working directory"
