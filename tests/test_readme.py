"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    # Quiet and short, so the test is fast; everything else runs exactly as printed.
    block = block.replace("epochs=50,", "epochs=5, quiet=True,")
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert (tmp_path / "bc_model" / "model.safetensors").is_file()
    assert namespace["labels"].shape == (119,)
    assert namespace["proba"].shape == (119, 2)
