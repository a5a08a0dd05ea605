"""Every examples/ex*.py script runs to completion and prints what it promises.

Each script runs in a subprocess from an empty temporary directory, so a script that wrote into
its working directory would leave files there (checked) rather than in the repository.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("ex*.py"))

# Text each known script must print; a new script is still run and must exit 0.
EXPECTED = {
    "ex1_binary_classifier.py": ["nnfit.MLP(30, [32, 16], 1)", "TumourNet", "test accuracy"],
    "ex2_training_loop.py": ["train_loss  val_loss", "callback losses equal run 1's history: True",
                             "trainer.evaluate"],
    "ex3_multiclass.py": ["test accuracy", "top-2 probabilities", "class_0"],
    "ex4_checkpointing.py": ["-epoch-00004/state.safetensors",
                             "weights equal to an uninterrupted 8-epoch run: True",
                             "load_weights into a new nnfit.MLP: weights equal True",
                             "predictions equal True"],
    "ex5_evaluation.py": ["precision", "recall", "every route agrees with scikit-learn"],
}


def test_examples_exist():
    assert len(SCRIPTS) >= 5
    assert set(EXPECTED) <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_example_runs(script, tmp_path):
    # One intra-op thread: these models are tiny, and the test may share the CPUs with others.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout}\n{proc.stderr}"
    for text in EXPECTED.get(script.name, []):
        assert text in proc.stdout, f"{script.name}: {text!r} not in output:\n{proc.stdout}"
    assert proc.stderr == "", f"{script.name} wrote to stderr:\n{proc.stderr}"
    assert list(tmp_path.iterdir()) == [], f"{script.name} left files in its working directory"
