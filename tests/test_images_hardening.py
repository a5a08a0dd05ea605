"""Image data against hostile or awkward inputs: class folders whose names look like numbers
read back from a run's test.csv as text, every header read (and mixed sizes, oversized images
and sets that cannot fit in memory refused) before any decode, names that are not UTF-8 and
files that are not regular files refused at listing, a saved layout bounded so a crafted
model.json cannot make ``inspect`` allocate gigabytes, and a cache of other images refused."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nnfit
from helpers import cli, one_error
from nnfit.checkpoint import save_tensors
from nnfit.config import TrainConfig
from nnfit.data import image_files, images
from nnfit.data.image_files import CACHE_DIR, decode, files_from_list, list_folder
from nnfit.errors import CheckpointError, DataError, NnfitWarning
from nnfit.io import validate_layouts

QUICK = dict(quiet=True, device="cpu", seed=0)


def _folder(root: Path, classes: list[str] | list[bytes], n: int = 4, size: int = 8) -> Path:
    """``n`` random greyscale ``size`` x ``size`` PNGs in each class folder (names as given:
    bytes make names that are not UTF-8)."""
    rng = np.random.default_rng(0)
    for c in classes:
        d = os.path.join(os.fsencode(root), c if isinstance(c, bytes) else c.encode())
        os.makedirs(d)
        for i in range(n):
            img = Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8))
            img.save(os.fsdecode(os.path.join(d, f"{i}.png".encode())))
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------- 1. labels that look like numbers
def test_a_runs_test_csv_keeps_class_folders_that_look_like_numbers_as_text(tmp_path, capsys,
                                                                            monkeypatch) -> None:
    """Before: "00000".."00002" read back as 0..2 ("unseen at training", exit 2); "1", "01" and
    "1.0" all as 1.0 (every test image labelled "1.0"); "NA" as a missing value."""
    monkeypatch.chdir(tmp_path)
    classes = ["00000", "00001", "1", "01", "1.0", "NA"]
    root = _folder(tmp_path / "imgs", classes)
    status, out, err = cli(capsys, "train", root, "--model", "cnn", "--channels", "4,8", "--epochs", "1",
                           "--test-split", "0.5", "--quiet", "--out", "run")
    assert status == 0, err
    test = _rows(tmp_path / "run" / "test.csv")
    assert sorted(r["label"] for r in test) == sorted(classes * 2)
    learner = nnfit.load("run")
    read = images.read_images(tmp_path / "run" / "test.csv", None, None, "x", learner.preprocessor.layout,
                              labelled=True, text_labels=True)
    assert read.labels.tolist() == [Path(p).parent.name for p in read.paths]
    # the accuracy reported is the one the folder names give
    predicted = learner.predict([r["path"] for r in test])
    truth = np.asarray([r["label"] for r in test], dtype=object)
    assert learner.evaluate(tmp_path / "run" / "test.csv")["accuracy"] == pytest.approx(
        float(np.mean(predicted == truth)))
    assert json.loads((tmp_path / "run" / "test_metrics.json").read_text())["accuracy"] == pytest.approx(
        float(np.mean(predicted == truth)))
    # a path table of the user's own, and a TSV, at evaluate
    rows = "".join(f"{r['path']}\t{r['label']}\n" for r in test)
    (tmp_path / "mine.tsv").write_text("path\tlabel\n" + rows)
    status, out, _ = cli(capsys, "evaluate", "run", tmp_path / "mine.tsv", "--json")
    assert status == 0 and json.loads(out)["accuracy"] == pytest.approx(float(np.mean(predicted == truth)))


def test_a_path_table_of_a_model_with_number_labels_reads_its_labels_as_numbers(tmp_path) -> None:
    """Labels are text only for a model whose labels are text: a table trained as numbers stays so."""
    root = _folder(tmp_path / "imgs", ["a", "b"])
    paths = sorted(root.glob("*/*.png"))
    (tmp_path / "t.csv").write_text("path,label\n" + "".join(f"{p},{i % 2}\n" for i, p in enumerate(paths)))
    learner = nnfit.fit("cnn", str(tmp_path / "t.csv"), epochs=1, **QUICK)
    assert learner.classes == [0, 1]
    assert 0 <= learner.evaluate(str(tmp_path / "t.csv"))["accuracy"] <= 1


# ------------------------------------------------------- 2. headers first: sizes and memory
def _no_decoding(monkeypatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(image_files, "_decode_one", refuse)


def test_mixed_sizes_are_refused_from_the_headers_before_any_decode(tmp_path, monkeypatch) -> None:
    """Before: every image was decoded first (40 copies of a 9000x9000 PNG: 3.7 GB) and then refused."""
    root = _folder(tmp_path / "imgs", ["a", "b"])
    Image.new("L", (300, 200)).save(root / "b" / "big.png")
    _no_decoding(monkeypatch)
    with pytest.raises(DataError, match=r"b/big\.png: image of 200x300 pixels \(HxW\), but .*a/0\.png is "
                                        r"8x8: pass --image-size"):
        decode(list_folder(root, labelled=True).paths)


def test_a_set_that_cannot_fit_in_memory_is_refused_before_any_decode(tmp_path, monkeypatch) -> None:
    root = _folder(tmp_path / "imgs", ["a", "b"], n=5, size=16)
    monkeypatch.setattr(image_files, "memory_bytes", lambda device: 3000)
    _no_decoding(monkeypatch)
    # 10 images of 16x16: the decoded images and the tensor hold at least 2 * 10 * 256 bytes
    with pytest.raises(DataError, match=r"a/0\.png and 9 more: decoding 10 images of 16x16 pixels needs at "
                                        r"least 5\.0 KiB .* but this machine has 2\.9 KiB of memory"):
        decode(list_folder(root, labelled=True).paths)
    monkeypatch.setattr(image_files, "memory_bytes", lambda device: 5120)
    with pytest.raises(AssertionError, match="decoded"):  # 5,120 bytes pass: decoding starts
        decode(list_folder(root, labelled=True).paths)


def test_images_larger_than_a_model_reads_are_refused_and_a_saved_layout_is_bounded(tmp_path,
                                                                                     monkeypatch) -> None:
    """Before: a layout of 46000x46000 passed (C*H*W <= 2**31) and ``inspect`` allocated 17 GB."""
    assert image_files.MAX_IMAGE_VALUES == validate_layouts.MAX_IMAGE_VALUES == 2**25
    layout = {"kind": "image", "channels": 1, "height": 5792, "width": 5792, "resize": False, "mean": [0.0],
              "std": [1.0], "augment": "none", "columns": None}
    assert validate_layouts._image_layout_rule(layout) is None
    assert validate_layouts._image_layout_rule({**layout, "height": 5793, "width": 5793})[0] == "height"
    assert validate_layouts._image_layout_rule({**layout, "channels": 3, "mean": [0.0] * 3,
                                                "std": [1.0] * 3, "height": 3400, "width": 3400}) is not None
    root = _folder(tmp_path / "imgs", ["a", "b"])
    monkeypatch.setattr(image_files, "MAX_IMAGE_VALUES", 63)
    _no_decoding(monkeypatch)
    with pytest.raises(DataError, match=r"images of 1x8x8 \(C, H, W\) hold more values than a model reads "
                                        r"\(64; at most 63\): pass --image-size"):
        decode(list_folder(root, labelled=True).paths)
    monkeypatch.undo()
    monkeypatch.setattr(images, "MAX_IMAGE_VALUES", 3 * 4 * 4 - 1)  # arrays and colour sets, after reading
    with pytest.raises(DataError, match=r"images of shape \(3, 4, 4\) \(C, H, W\) hold more values"):
        nnfit.fit("cnn", np.zeros((4, 3, 4, 4), np.uint8), np.array([0, 1, 0, 1]), epochs=1, **QUICK)


def test_a_crafted_layout_of_huge_images_is_refused_at_load(tmp_path) -> None:
    from test_validation import tamper_model

    root = _folder(tmp_path / "imgs", ["a", "b"])
    nnfit.fit("cnn", str(root), epochs=1, run_dir=tmp_path / "run", **QUICK)

    def huge(m: dict) -> None:
        m["preprocess"]["layout"]["height"] = m["preprocess"]["layout"]["width"] = 46000
        m["preprocess"]["inputs"][0]["shape"] = [1, 46000, 46000]

    tamper_model(tmp_path / "run", huge)
    with pytest.raises(CheckpointError, match=r"preprocess\.layout\.height: 1x46000x46000 images hold "
                                              r"2116000000 values each, more than 33554432"):
        nnfit.load(tmp_path / "run")


def test_summary_of_large_images_runs_the_default_sample_on_the_meta_device(tmp_path) -> None:
    """Before: two zero images of the layout's size went through the real model (a 1x5792x5792
    layout: 17 GB in ``nnfit inspect``)."""
    learner = nnfit.fit("cnn", str(_folder(tmp_path / "imgs", ["a", "b"])), epochs=1, **QUICK)
    learner.preprocessor.inputs[0].shape = [1, 1024, 1024]
    seen: list[torch.device] = []
    learner.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].device))
    rows = learner.summary().layers
    assert rows[0].output_shape == "(2, 32, 1024, 1024)" and rows[-1].output_shape == "(2, 1)"
    assert seen == [torch.device("meta")]
    assert next(learner.model.parameters()).device.type == "cpu"  # the model itself stays
    assert learner.summary().total_params == sum(p.numel() for p in learner.model.parameters())


def test_summary_falls_back_to_zeros_in_memory_for_a_model_that_reads_values(tmp_path) -> None:
    class Reads(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _ = float(x.sum())  # a value: meta tensors have none
            return self.inner(x)

    learner = nnfit.fit("cnn", str(_folder(tmp_path / "imgs", ["a", "b"])), epochs=1, **QUICK)
    learner.model = Reads(learner.model)
    assert learner.summary().layers[0].output_shape == "(2, 32, 8, 8)"


# ------------------------------------------------ 3 and 5. names and files refused at listing
def test_names_that_are_not_utf8_are_refused_at_listing_before_anything_is_written(tmp_path, capsys,
                                                                                  monkeypatch) -> None:
    """Before: UnicodeEncodeError in write_test, predict's CSV and the stratified split."""
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "lab", [b"\xffx", b"b"])
    _folder(tmp_path / "file", ["a", "b"])
    a = os.fsencode(tmp_path / "file" / "a")
    os.rename(a + b"/0.png", a + b"/\xfe.png")
    with pytest.raises(DataError, match=r"lab/\\xffx/0\.png: the name is not UTF-8 text"):
        list_folder(tmp_path / "lab", labelled=True)
    for data in ("lab", "file"):
        line = one_error(capsys, "train", data, "--model", "cnn", "--epochs", "1", "--test-split", "0.5",
                         "--quiet", "--out", "run")
        assert "the name is not UTF-8 text" in line and "\\x" in line
        assert not (tmp_path / "run").exists()
    nnfit.fit("cnn", str(_folder(tmp_path / "ok", ["a", "b"])), epochs=1, run_dir="run", **QUICK)
    line = one_error(capsys, "predict", "run", "file", "-o", "pred.csv")
    assert "file/a/\\xfe.png: the name is not UTF-8 text" in line and not (tmp_path / "pred.csv").exists()


def test_a_fifo_or_folder_named_like_an_image_is_refused_without_opening_it(tmp_path, capsys,
                                                                            monkeypatch) -> None:
    """Before: a FIFO named x.png, given explicitly or in a path table, blocked forever."""
    monkeypatch.chdir(tmp_path)
    nnfit.fit("cnn", str(_folder(tmp_path / "ok", ["a", "b"])), epochs=1, run_dir="run", **QUICK)
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "table.csv").write_text("path\nok/a/0.png\nfifo.png\n")
    with pytest.raises(DataError, match=r"fifo\.png: not a regular file"):
        files_from_list([tmp_path / "fifo.png"], "x", labelled=False)
    assert one_error(capsys, "predict", "run", "fifo.png", "-o", "p.csv").endswith(
        "fifo.png: not a regular file (a folder, FIFO or device)")
    with pytest.raises(DataError, match=r"dir\.png: not a regular file"):  # a folder given as a file
        files_from_list([tmp_path / "dir.png"], "x", labelled=False)
    assert "fifo.png: not a regular file" in one_error(capsys, "predict", "run", "table.csv", "-o", "p.csv")
    assert "gone.png: file not found" in one_error(capsys, "predict", "run", "gone.png", "-o", "p.csv")
    assert not (tmp_path / "p.csv").exists()


# ------------------------------------------------------------------------- 6. a wrong cache
@pytest.mark.parametrize("wrong", ["size", "content"])
def test_a_cache_of_other_images_with_the_right_count_is_decoded_again(tmp_path, wrong) -> None:
    """Before: any uint8 (N, 1 or 3, H, W) tensor of the right count was used as the images."""
    root = _folder(tmp_path / "imgs", ["a", "b"])
    cfg = TrainConfig(image_cache=True, **QUICK)
    first = images.read_images(str(root), None, None, "x", None, labelled=True, config=cfg).pixels
    [cache] = (root / CACHE_DIR).iterdir()
    other = torch.zeros(8, 1, 4, 4, dtype=torch.uint8) if wrong == "size" else first.flip(0).contiguous()
    save_tensors(cache, {"pixels": other}, {"kind": "image-cache", "version": image_files.CACHE_VERSION})
    with pytest.warns(NnfitWarning, match="damaged image cache: decoding the images again and rewriting it"):
        again = images.read_images(str(root), None, None, "x", None, labelled=True, config=cfg).pixels
    assert torch.equal(again, first)
    assert torch.equal(images.read_images(str(root), None, None, "x", None, labelled=True, config=cfg).pixels,
                       first)  # rewritten: read back without a warning
