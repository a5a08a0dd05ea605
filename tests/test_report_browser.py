"""The HTML report in a real browser: headless Chromium renders a wine-style run's report.

Chromium is Debian's package (/usr/bin/chromium), installed by scripts/setup.sh where the
machine allows it; elsewhere this test skips and says why. The page is opened from the file
itself (no server): a screenshot must not be blank, and the rendered DOM must hold the run's
test accuracy and best epoch.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnfit.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# What the browser needs on a machine with a closed network and no display (see setup.sh).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh "
                                "installs Debian's package where it runs as root with apt-get)")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"  # a fresh one each time
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("browser")
    status = main(["train", "--dataset", "wine", "--epochs", "30", "--patience", "3", "--quiet",
                   "--report", "--out", str(d / "RUN")])
    assert status == 0
    return d / "RUN" / "report.html"


def test_chromium_renders_the_report_with_its_numbers(report, tmp_path) -> None:
    run = report.parent
    url = report.resolve().as_uri()
    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", url)
    assert shot.is_file(), done.stderr.decode(errors="replace")[-2000:]
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"))
    assert pixels.shape == (1600, 1200)
    assert pixels.std() > 5 and (pixels < 128).mean() > 0.005  # text and rules, not a blank page

    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    page = dom.stdout.decode()
    test = json.loads((run / "test_metrics.json").read_text())
    cell = re.search(r'data-split="test" data-metric="accuracy">([^<]*)<', page)
    assert cell is not None and float(cell.group(1)) == pytest.approx(test["accuracy"], abs=5e-5)
    state = max(run.glob("checkpoints/*/state.json"))
    best = json.loads(state.read_text())["best_epoch"]
    assert re.search(r'id="best-epoch">(\d+)<', page).group(1) == str(best)
    assert "<h2>Plots</h2>" in unescape(page) and "Environment" in page
