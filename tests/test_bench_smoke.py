"""The benchmark suite runs end to end at tiny sizes and writes well-formed results.

Only that each contender runs and the JSON has its fields: no timing is asserted here. The
peer frameworks are optional (``make bench`` installs them): those installed run, the others
are listed as skipped. The quick tests below check the pieces the CNN, LSTM and image-folder
rows are built from.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def _load(name: str):
    """A module of benchmarks/ by path (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"nnfit_bench_{name}", BENCH.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_smoke(tmp_path):
    p = subprocess.run([sys.executable, str(BENCH), "--smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    results = json.loads((tmp_path / "smoke-cpu.json").read_text())
    med = results["training"]["smoke"]["median"]
    peers = {"lightning", "skorch", "keras"}
    missing = {p for p in peers | {"torchvision"} if importlib.util.find_spec(p) is None}
    assert set(med) == {"nnfit", "step_ceiling", "minimal_loop", "dataloader_loop"} | (peers - missing)
    assert results["skipped"] == {p: "not installed" for p in missing}
    for name in missing:
        assert f"{name} (not installed)" in p.stdout
    for name, row in med.items():
        assert "error" not in row, (name, row)
        assert row["samples_per_s"] > 0 and 0.0 <= row["val_acc"] <= 1.0 and row["peak_rss_mb"] > 0
    cli = results["cli"]["median"]
    assert cli["cli_s"] > 0 and cli["api_fit_s"] > 0 and cli["import_torch_s"] > 0
    ingest = results["ingest"]["median"]
    assert ingest["nnfit_ingest"]["tensor_mb"] == pytest.approx(ingest["pandas_ingest"]["tensor_mb"])
    md = (tmp_path / "smoke-cpu.md").read_text()
    assert "| nnfit |" in md and results["load_1min"]["max"] >= 0
    assert med["step_ceiling"]["threads"] == 1 and "x the step-only ceiling" in md
    _check_model_rows(results, md)


def _check_model_rows(results: dict, md: str) -> None:
    """The CNN and LSTM rows (nnfit against the minimal loop) and the image-folder suite."""
    for wname in ("smoke-cnn", "smoke-lstm"):
        med = results["training"][wname]["median"]
        assert set(med) == {"nnfit", "minimal_loop"}, wname
        for name, row in med.items():
            assert "error" not in row, (wname, name, row)
            assert row["samples_per_s"] > 0 and 0.0 <= row["val_acc"] <= 1.0
    lstm, spec = results["training"]["smoke-lstm"]["median"], results["training"]["smoke-lstm"]["spec"]
    # lengths uniform in 3..12: padding every batch to 12 wastes about 3/8 of the steps; nnfit's
    # length buckets far less
    xtr = _load("contenders").make_sequences(spec["rows"], spec["steps"], spec["features"],
                                             spec["classes"], spec["min_len"])[0]
    assert lstm["minimal_loop"]["padding_share"] == pytest.approx(1 - xtr.lengths.mean() / spec["steps"])
    assert lstm["nnfit"]["padding_share"] < 0.15
    peer = importlib.util.find_spec("torchvision") is not None
    assert list(results["images"]) == ["smoke-digits", "smoke-rgb"]  # greyscale digits first
    for wname, res in results["images"].items():
        images = res["median"]
        assert set(images) == {"nnfit"} | ({"torchvision_w0", "torchvision_w2"} if peer else set())
        for name, row in images.items():
            assert "error" not in row, (wname, name, row)
            assert row["first_epoch_s"] > 0 and row["steady_epoch_s"] > 0 and 0.0 <= row["test_acc"] <= 1.0
            assert row["loader_only_s"] > 0 and 0 < row["loader_share"] <= 1
            assert 0 < row["best_epoch_s"] <= row["steady_epoch_s"]
            assert len(res["runs"][name][0]["epoch_s"]) == res["spec"]["epochs"]
        assert images["nnfit"]["decode_and_setup_s"] > 0
    assert results["images"]["smoke-digits"]["spec"]["in_channels"] == 1
    assert results["images"]["smoke-rgb"]["spec"]["in_channels"] == 3
    assert "padding share |" in md and "## Image folders:" in md and "### smoke-digits:" in md


def test_padding_share_counts_the_steps_a_model_runs():
    from nnfit.models import LSTM

    contenders = _load("contenders")
    model = LSTM(2, 3, hidden=[4])
    share = contenders.padding_share(model)
    model(torch.zeros(4, 10, 2), torch.tensor([10, 5, 5, 10]))  # 40 steps run, 30 of them real
    model(x=torch.zeros(2, 6, 2))  # no lengths: every step is real
    model.eval()
    model(torch.zeros(3, 10, 2), lengths=torch.tensor([1, 1, 1]))  # evaluation is not counted
    assert share() == pytest.approx(10 / 52)


def test_sequences_reach_nnfit_unpadded_and_the_loop_padded():
    contenders = _load("contenders")
    xtr, ytr, xva, yva = contenders.make_sequences(200, 8, 3, 4, min_len=2)
    assert xtr.x.shape == (180, 8, 3) and xva.x.shape == (20, 8, 3) and len(ytr) == 180
    assert xtr.lengths.min() >= 2 and xtr.lengths.max() <= 8
    pad = np.arange(8) >= xtr.lengths[:, None]
    assert (xtr.x[pad] == 0).all() and (xtr.x[~pad] != 0).all()
    seqs = xtr.for_nnfit()
    assert [len(s) for s in seqs] == xtr.lengths.tolist()
    full, _, _, _ = contenders.make_sequences(20, 8, 3, 4, min_len=8)
    assert full.for_nnfit() is full.x  # every sequence full length: the plain (N, T, F) array


@pytest.mark.parametrize(("kind", "mode", "channels"), [("stripes", "RGB", 3), ("digits", "L", 1)])
def test_the_image_folder_is_a_balanced_class_tree(tmp_path, kind, mode, channels):
    from PIL import Image

    images = _load("images")
    folder = images.make_folder(tmp_path, classes=2, per_class=3, test_per_class=1, size=8, kind=kind)
    for split, count in (("train", 3), ("test", 1)):
        for c in ("class0", "class1"):
            files = sorted((tmp_path / split / c).glob("*.png"))
            assert len(files) == count
            with Image.open(files[0]) as im:
                assert im.size == (8, 8) and im.mode == mode
    assert folder["train"] == str(tmp_path / "train") and folder["in_channels"] == channels
    assert len(folder["mean"]) == len(folder["std"]) == channels
    assert all(0 < m < 1 for m in folder["mean"]) and all(0 < s < 0.5 for s in folder["std"])


def test_held_out_digits_come_from_other_source_digits():
    sources = _load("images").digit_sources(10, seed=0)
    for c in range(10):
        train, test = sources["train"][c], sources["test"][c]
        assert len(train) > 3 * len(test) > 0
        assert not any((t == s).all() for t in test for s in train[:50])  # no digit in both


def test_the_step_ceiling_takes_nnfits_steps_with_nnfits_threads(monkeypatch):
    """The ceiling row runs as many steps of the same sizes as nnfit, on the threads nnfit
    picks, on one fixed batch."""
    contenders = _load("contenders")
    spec = dict(rows=300, features=8, classes=3, batch=64, epochs=2, device="cpu")
    xtr, ytr, xva, yva = contenders.make_data(spec["rows"], spec["features"], spec["classes"])
    built: dict[str, list[list]] = {"nnfit": [], "step_ceiling": []}  # each model's steps
    build = contenders.build_model

    def watched(into: list):
        def make(s):
            model, seen = build(s), []
            model.register_forward_pre_hook(lambda m, args: seen.append(
                (len(args[0]), args[0].data_ptr(), torch.get_num_threads())) if m.training else None)
            into.append(seen)
            return model
        return make

    torch.set_num_threads(2)  # nnfit and the ceiling both drop to 1 for this small step
    for name, run in (("nnfit", contenders.run_nnfit), ("step_ceiling", contenders.run_ceiling)):
        monkeypatch.setattr(contenders, "build_model", watched(built[name]))
        seconds, acc, *more = run(spec, xtr, ytr, xva, yva)
        assert seconds > 0 and 0 <= acc <= 1
    assert more == [{"threads": 1}] and torch.get_num_threads() == 2
    assert [len(b) for b in built["nnfit"]] == [2, 10]  # the warm-up fit (2 batches), then the run
    steps = {name: models[-1] for name, models in built.items()}
    sizes = [n for n, _, _ in steps["nnfit"]]
    assert sizes == [64] * 4 + [14] + [64] * 4 + [14]  # 270 training rows, 2 epochs
    assert [n for n, _, _ in steps["step_ceiling"]] == sizes
    assert {t for *_, t in steps["nnfit"]} == {t for *_, t in steps["step_ceiling"]} == {1}
    assert len({p for _, p, _ in steps["step_ceiling"]}) == 1  # one batch, never moved


def test_the_markdown_states_the_ceiling_ratios():
    bench = _load("bench")
    row = {"samples_per_s": 1000.0, "val_acc": 0.5, "peak_rss_mb": 300.0}
    spec = dict(rows=100, features=32, classes=10, batch=1024, epochs=2)
    runs = {"nnfit": [{"samples_per_s": 900.0}, {"samples_per_s": 1100.0}],
            "step_ceiling": [{"samples_per_s": 1000.0}, {"samples_per_s": 1000.0}]}
    assert bench.paired_ratios(runs["nnfit"], runs["step_ceiling"]) == [0.9, 1.1]
    assert bench.paired_ratios(runs["nnfit"], [{"error": "x"}, {"samples_per_s": 1000.0}]) == [1.1]
    med = {"nnfit": {**row, "samples_per_s": 920.0},
           "step_ceiling": {**row, "nnfit_speedup": 0.92, "nnfit_speedup_paired": 0.93, "threads": 2.0},
           "minimal_loop": {**row, "nnfit_speedup": 1.04, "nnfit_speedup_paired": 1.05}}
    md = bench.markdown({"device": "cpu", "machine": "m", "reps": 5,
                         "training": {"mlp-b1024": {"spec": spec, "median": med}}})
    assert ("nnfit: 0.92x the step-only ceiling and 1.04x the minimal loop (ratio of the medians; median "
            "of the per-repetition ratios: 0.93x, 1.05x)") in md
    assert "2 CPU thread(s), as nnfit picks) on one fixed batch" in md
    assert "| step_ceiling | 1,000 | 0.92x | 0.5000 | 300 |" in md
    del med["step_ceiling"]
    assert "step-only" not in bench.markdown({"device": "cpu", "machine": "m", "reps": 5,
                                              "training": {"mlp-b1024": {"spec": spec, "median": med}}})


def test_the_markdown_shows_padding_and_the_image_folder():
    bench, images = _load("bench"), _load("images")
    row = {"samples_per_s": 1000.0, "val_acc": 0.5, "peak_rss_mb": 300.0}
    spec = dict(model="lstm", rows=100, steps=50, min_len=10, features=16, hidden=64, classes=10,
                batch=128, epochs=2)
    epoch = {"first_epoch_s": 2.0, "steady_epoch_s": 1.0, "best_epoch_s": 0.8, "test_acc": 0.9}
    results = {"device": "cpu", "machine": "m", "reps": 1, "skipped": {"torchvision": "not installed"},
               "load_1min": {"start": 1.2, "max": 3.5, "end": 2.0},
               "training": {"lstm-T10-50": {"spec": spec, "median": {
                   "nnfit": {**row, "padding_share": 0.05}, "minimal_loop": {**row, "padding_share": 0.4}}}},
               "images": {"digits-16px-b32": {
                   "spec": {**images.DATA["digits16"], **images.WORKLOADS["digits-16px-b32"]},
                   "torchvision_op_schemas_defined": True,
                   "median": {"nnfit": {**epoch, "decode_and_setup_s": 0.5, "loader_only_s": 0.1,
                                        "loader_share": 0.1},
                              "torchvision_w0": {
                                  **epoch, "first_epoch_s": 3.0, "steady_epoch_s": 3.0, "best_epoch_s": 2.0,
                                  "loader_only_s": 1.5, "loader_share": 0.75, "nnfit_speedup_first": 1.5,
                                  "nnfit_speedup_steady": 3.0, "nnfit_speedup_best": 2.5}}},
                   "rgb-32px-b128": {
                       "spec": {**images.DATA["stripes32"], **images.WORKLOADS["rgb-32px-b128"]},
                       "median": {"nnfit": epoch}}}}
    md = bench.markdown(results)
    assert "lengths 10..50 (uniform), 16 features, LSTM hidden 64, batch 128" in md
    assert "| nnfit | 1,000 | 1.00x | 0.5000 | 300 | 5.0% |" in md
    assert "| minimal_loop | 1,000 | 1.00x | 0.5000 | 300 | 40.0% |" in md
    assert ("| digits-16px-b32 | 1.00 / 3.00 / - | 3.00x / - | 0.80 / 2.00 / - | 2.50x / - | 10% / 75% / - "
            "| 0.900 / 0.900 / - |") in md
    assert "| torchvision_w0 | 3.00 |  | 3.00 / 2.00 | 1.50x / 3.00x / 2.50x | 1.50 | 75% | 0.9000 |" in md
    assert "| nnfit | 2.00 | 0.50 | 1.00 / 0.80 | 1.00x / 1.00x / 1.00x | 0.10 | 10% | 0.9000 |" in md
    assert "greyscale digit PNGs of 16x16 (held out: 100 per class), CNN channels [32, 64], batch 32, " \
           "lr 0.003, 4 epochs" in md
    assert md.count("Compute-bound on a CPU") == 1 and "### rgb-32px-b128: 10 classes x 500 RGB stripe" in md
    assert "`torchvision::nms`/`qnms`" in md and "Skipped: torchvision (not installed)" in md
    assert "load average before the runs: 1.20 at the start, up to 3.50, 2.00 at the end (a busy" in md


def test_sweep_bench_smoke(tmp_path):
    """benchmarks/sweep.py runs end to end on a few rows and writes its tables."""
    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "sweep.py"
    p = subprocess.run([sys.executable, str(bench), "--rows", "600", "--epochs", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["members"] for r in report["in_process"]] == [8, 32]
    assert report["processes"]["speedup"] > 0 and "Peak RSS" in (tmp_path / "sweep.md").read_text()


@pytest.mark.slow
def test_stream_bench_smoke(tmp_path):
    """benchmarks/stream.py runs end to end on a few rows and writes its tables."""
    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "stream.py"
    p = subprocess.run([sys.executable, str(bench), "--rows", "20000", "--group-rows", "2000", "--no-whole",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads((tmp_path / "stream.json").read_text())
    assert [r["threads"] for r in report["read"]] == [1, 2]
    for r in report["read"]:  # every training row, shuffled and in order
        assert r["shuffled"]["rows"] == r["in_order"]["rows"] == r["train_rows"] > 0
    runs = [(r["rows"], r["stream"]) for r in report["train"]]
    assert runs == [(20000, True), (40000, True)]
    assert all(r["peak_rss_mb"] > 0 and 0 <= r["val_accuracy"] <= 1 for r in report["train"])
    md = (tmp_path / "stream.md").read_text()
    assert "The 2x file's peak is" in md and "Goals: read >= 2M rows/s" in md
