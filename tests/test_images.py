"""Images end to end: class folders, image files, path tables, arrays and pixel tables decoded
once into one tensor; the content-keyed cache; per-channel normalisation fitted on the training
split; augmentation on whole batches with exact resume; the saved layout and its validation;
and train -> evaluate -> predict through the CLI, with every bad input one line, exit 2."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nnfit
from helpers import TermAt, cli, one_error
from nnfit.config import TrainConfig
from nnfit.data import images
from nnfit.data.augment import ImageData, augment_batch, crop_padding
from nnfit.data.image_files import CACHE_DIR, decode, list_folder
from nnfit.errors import CheckpointError, ConfigError, DataError, NnfitWarning

QUICK = dict(quiet=True, device="cpu", seed=0)
SMALL = {"name": "cnn", "channels": [8, 16]}


def _digits(n_per_class: int = 12, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_per_class`` bundled 8x8 digits of each of ``classes`` classes, as uint8."""
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.concatenate([np.flatnonzero(d.target == c)[:n_per_class] for c in range(classes)])
    return (d.images[idx] * 255 / 16).round().astype(np.uint8), d.target[idx]


def write_folder(root: Path, n_per_class: int = 12, classes: int = 3, size: int = 16,
                 rgb: bool = False) -> Path:
    """Digits upscaled to ``size`` x ``size`` PNGs in class folders ``root/<digit>/``."""
    x, y = _digits(n_per_class, classes)
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR)
        if rgb:  # the digit in a colour that depends on the image, so the set is RGB
            a = np.asarray(im, dtype=np.float32)[..., None] * np.array([1.0, 0.5 + (i % 3) / 4, 0.3])
            im = Image.fromarray(a.clip(0, 255).astype(np.uint8), "RGB")
        im.save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_folder(tmp_path / "digits")


# ----------------------------------------------------------------------------- reading
def test_a_class_folder_tree_is_read_in_sorted_order_skipping_other_files(tmp_path) -> None:
    root = tmp_path / "imgs"
    for label, names in {"b": ["2.PNG", "1.jpg"], "a": ["z.bmp", "y.JPEG"]}.items():
        (root / label).mkdir(parents=True)
        for name in names:
            Image.new("L", (4, 4), 7).save(root / label / name, format=Image.registered_extensions()[
                Path(name).suffix.lower()])
    (root / "a" / ".hidden.png").write_bytes(b"not an image")
    (root / "a" / "notes.txt").write_text("skipped")
    (root / ".nnfit-cache").mkdir()
    (root / ".hidden").mkdir()
    Image.new("L", (4, 4)).save(root / ".hidden" / "x.png")
    files = list_folder(root, labelled=True)
    names = [p.relative_to(root).as_posix() for p in files.paths]
    assert names == ["a/y.JPEG", "a/z.bmp", "b/1.jpg", "b/2.PNG"]
    assert files.labels.tolist() == ["a", "a", "b", "b"]
    pixels = decode(files.paths)
    assert pixels.dtype == torch.uint8 and pixels.shape == (4, 1, 4, 4)


def test_one_colour_image_makes_the_set_rgb_greyscale_repeated_and_alpha_dropped(tmp_path) -> None:
    grey, rgba = tmp_path / "g.png", tmp_path / "c.png"
    Image.new("L", (3, 2), 50).save(grey)
    Image.new("RGBA", (3, 2), (10, 20, 30, 0)).save(rgba)
    pixels = decode([grey, rgba])
    assert pixels.shape == (2, 3, 2, 3)
    assert pixels[0].unique().tolist() == [50]
    assert pixels[1, :, 0, 0].tolist() == [10, 20, 30]  # not composited over the alpha


def test_image_size_resizes_every_image_and_without_it_another_size_is_named(tmp_path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("L", (8, 6)).save(a)
    Image.new("L", (5, 5)).save(b)
    assert decode([a, b], shape=(4, 4), resize=True).shape == (2, 1, 4, 4)
    with pytest.raises(DataError, match=r"b\.png: image of 5x5 pixels \(HxW\), but .*a\.png is 6x8: pass "
                                        r"--image-size H,W"):
        decode([a, b])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bomb"])
def test_an_unreadable_truncated_or_bomb_image_is_named(tmp_path, monkeypatch, damage) -> None:
    from PIL import Image as PILImage

    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("L", (40, 40)).save(good)
    if damage == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(bad)
        bad.write_bytes(bad.read_bytes()[:-200])
        want = r"bad\.png: not a readable image \(.*truncated"
    elif damage == "garbage":
        bad.write_bytes(b"\x89PNG but not really")
        want = r"bad\.png: not a readable image \(cannot identify image file"
    else:  # over Pillow's pixel limit: refused, though Pillow itself would only warn
        Image.new("L", (40, 40)).save(bad)
        monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
        good = tmp_path / "small.png"
        Image.new("L", (10, 10)).save(good)
        want = r"bad\.png: refused as a possible decompression bomb \(Image size \(1600 pixels\)"
    with pytest.raises(DataError, match=want):
        decode([good, bad])


def test_arrays_and_pixel_tables_become_images() -> None:
    layout = None
    grey = images.read_images(np.zeros((5, 6, 7), np.uint8), np.arange(5), None, "x", layout, labelled=True)
    assert grey.pixels.shape == (5, 1, 6, 7) and grey.pixels.dtype == torch.uint8
    floats = images.read_images(torch.rand(4, 3, 2, 2, dtype=torch.float64), None, None, "x", layout,
                                labelled=False)
    assert floats.pixels.dtype == torch.float32 and floats.pixels.shape == (4, 3, 2, 2)
    ints = images.read_images(np.full((2, 1, 2, 2), 300), None, None, "x", layout, labelled=False)
    assert ints.pixels.dtype == torch.float32  # beyond uint8: kept as numbers
    from nnfit.data.columns import Columns

    table = Columns("t", {**{f"p{i}": np.arange(2.0) + i for i in range(12)}, "y": np.array([0, 1])})
    rgb = images.read_images(table, None, "y", "t", layout, labelled=True)
    assert rgb.pixels.shape == (2, 3, 2, 2) and rgb.labels.tolist() == [0, 1]
    assert rgb.pixels[1, 2].flatten().tolist() == [9.0, 10.0, 11.0, 12.0]  # the third plane: p8..p11
    table.arrays.pop("p0")
    with pytest.raises(DataError, match=r"t: 11 pixel columns are not k\*k \(greyscale\) or 3\*k\*k"):
        images.read_images(table, None, "y", "t", layout, labelled=True)


# ----------------------------------------------------------------------- normalisation
def test_statistics_come_from_the_training_split_and_memory_holds_uint8(folder) -> None:
    cfg = TrainConfig(val_split=0.25, **QUICK)
    p = images.prepare(str(folder), target=None, val=None, task="auto", config=cfg, resumed=None)
    assert isinstance(p.train, ImageData) and p.train.pixels.dtype == torch.uint8
    x = p.train.pixels.double()
    layout = p.preprocessor.layout
    assert layout.mean == pytest.approx([x.mean().item()], rel=1e-12)
    assert layout.std == pytest.approx([x.std(correction=0).item()], rel=1e-12)
    assert len(p.train) + len(p.val) == 36 and len(p.val) == 9
    (batch,), _ = next(p.val.batches(4))
    want = (p.val.pixels[:4].float() - torch.tensor(layout.mean).float()) / torch.tensor(layout.std).float()
    assert batch.dtype == torch.float32 and torch.equal(batch, want)
    s = p.preprocessor.inputs[0]
    assert (s.name, s.shape, s.dtype, p.preprocessor.style) == ("x", [1, 16, 16], "float32", "single")


# ------------------------------------------------------------------------ augmentation
def test_augmentation_crops_and_flips_whole_batches_from_a_seed() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).reshape(2, 3, 8, 8)
    assert crop_padding(8, 8) == 1 and crop_padding(32, 32) == 4 and crop_padding(3, 100) == 1
    out = augment_batch(x, ["crop"], 1)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, augment_batch(x, ["crop"], 1))
    assert not torch.equal(out, augment_batch(x, ["crop"], 2))
    for i in range(2):  # each image is its padded self shifted by at most 1 pixel in each direction
        padded = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
        assert any(torch.equal(out[i], padded[:, a:a + 8, b:b + 8]) for a in range(3) for b in range(3))
    flipped = [augment_batch(x, ["flip"], s) for s in range(8)]
    assert all(torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(-1)) for f in flipped for i in range(2))
    assert any(not torch.equal(f, x) for f in flipped)


def test_auto_augments_colour_images_only_and_evaluation_never(tmp_path) -> None:
    grey = images.prepare(str(write_folder(tmp_path / "g")), target=None, val=None, task="auto",
                          config=TrainConfig(**QUICK), resumed=None)
    assert grey.preprocessor.layout.augment == "none" and grey.train.augment == ()
    rgb = images.prepare(str(write_folder(tmp_path / "c", rgb=True)), target=None, val=None, task="auto",
                         config=TrainConfig(**QUICK), resumed=None)
    assert rgb.preprocessor.layout.augment == "crop,flip" and rgb.train.augment == ("crop", "flip")
    assert rgb.val.augment == ()
    g = torch.Generator().manual_seed(0)
    (a,), _ = next(rgb.train.batches(8))  # not shuffled: an evaluation pass over training data
    (b,), _ = next(rgb.train.batches(8, shuffle=False, generator=g))
    assert torch.equal(a, b)


def test_resume_with_augmentation_equals_the_uninterrupted_run(tmp_path) -> None:
    root = write_folder(tmp_path / "rgb", n_per_class=10, rgb=True, size=8)
    kw = dict(epochs=3, batch_size=4, augment="crop,flip", checkpoint_steps=3, **QUICK)
    full = nnfit.fit(SMALL, str(root), **kw)
    with pytest.raises(nnfit.errors.Stopped):  # 6 batches an epoch: stopped inside epoch 2
        nnfit.fit(SMALL, str(root), run_dir=tmp_path / "r", callbacks=[TermAt(8)], **kw)
    from nnfit.run import read_latest

    assert read_latest(tmp_path / "r")[1]["batch"] == 2  # the resume replays epoch 2 from batch 3
    resumed = nnfit.fit(SMALL, str(root), run_dir=tmp_path / "r", resume=tmp_path / "r", **kw)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]


# ------------------------------------------------------------------------------ the layout
def test_the_learner_reads_every_form_and_its_module_equals_its_outputs(folder, tmp_path) -> None:
    learner = nnfit.fit(SMALL, str(folder), epochs=2, **QUICK)
    assert learner.spec["in_channels"] == 1
    out = learner.outputs(str(folder))
    pixels = decode(list_folder(folder, labelled=True).paths)
    assert torch.equal(learner.as_module()(pixels).detach(), out)
    files = sorted(str(p) for p in folder.glob("*/*.png"))
    assert torch.equal(learner.outputs(files), out)
    assert learner.predict(files[0]).shape == (1,)
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label\n" + "".join(
        f"{Path(f).relative_to(folder.parent)},{Path(f).parent.name}\n" for f in files))
    assert torch.equal(learner.outputs(str(csv_path)), out)
    assert learner.evaluate(str(csv_path)) == learner.evaluate(str(folder))
    assert torch.equal(learner.outputs(pixels), out)
    summary = learner.summary()  # on zeros of the input schema's (C, H, W)
    assert summary.layers[-1].name == "head" and summary.layers[-1].output_shape == "(2, 3)"
    with nnfit.capture_activations(learner.model, ["stages.0"]) as acts:
        learner.outputs(str(folder))
    assert acts["stages.0"].shape[1:] == (8, 8, 8)
    saved = learner.save(tmp_path / "m")
    again = nnfit.load(saved)
    assert torch.equal(again.outputs(str(folder)), out)
    _, keys = again.prediction_keys(str(folder))
    assert keys["path"].tolist() == files


def test_evaluating_an_unknown_class_folder_names_it_as_a_folder(folder, tmp_path) -> None:
    learner = nnfit.fit(SMALL, str(folder), epochs=1, **QUICK)
    (folder / "1").rename(folder / "seven")
    with pytest.raises(DataError, match=r"digits: class folder 'seven' is not a label the model knows "
                                        r"\(known: '0', '1', '2'\)$"):
        learner.evaluate(str(folder))
    (folder / "2").rename(folder / "tulip")
    with pytest.raises(DataError, match=r"digits: class folders 'seven', 'tulip' are not labels the model"):
        learner.evaluate(str(folder))
    # a table of paths keeps the label column's own message
    files = sorted(folder.glob("*/*.png"))
    (tmp_path / "t.csv").write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in files))
    with pytest.raises(DataError, match=r"column 'label' has labels unseen at training: 'seven'"):
        learner.evaluate(str(tmp_path / "t.csv"))


def test_a_table_model_cannot_take_images(folder) -> None:
    with pytest.raises(ConfigError, match=r"^model 'mlp' cannot read images: use --model cnn"):
        nnfit.fit("mlp", str(folder), epochs=1, **QUICK)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("channels", 2, r"layout\.channels: 2 is not 1 \(greyscale\) or 3 \(RGB\)"),
    ("mean", [1.0, 2.0], r"layout\.mean: 2 values for 1 channels"),
    ("std", [0.0], r"layout\.std\[0\]: 0\.0 is out of range"),
    ("height", 15, r"preprocess\.inputs: the inputs do not match the image layout"),
    ("augment", "rotate", r"layout\.augment: 'rotate' is not one of"),
    ("columns", ["a", "b"], r"layout\.columns: 2 pixel columns for 1x16x16 images"),
    ("resize", "yes", r"layout\.resize: expected true or false"),
])
def test_a_tampered_layout_is_refused_in_one_line(folder, tmp_path, field, value, message) -> None:
    saved = nnfit.fit(SMALL, str(folder), epochs=1, **QUICK).save(tmp_path / "m")
    meta = json.loads((saved / "model.json").read_text())
    meta["preprocess"]["layout"][field] = value
    from nnfit.files import write_files

    write_files(saved, "model", {"model.safetensors": (saved / "model.safetensors").read_bytes(),
                                 "model.json": json.dumps(meta).encode()})
    with pytest.raises(CheckpointError, match=message) as e:
        nnfit.load(saved)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------- cache
def test_the_cache_is_hit_rewritten_when_damaged_and_skipped_when_unwritable(folder, monkeypatch) -> None:
    from nnfit.data import image_files

    cfg = TrainConfig(image_cache=True, **QUICK)
    first = images.read_images(str(folder), None, None, "x", None, labelled=True, config=cfg).pixels
    [cache] = (folder / CACHE_DIR).iterdir()
    assert cache.suffix == ".safetensors" and len(cache.stem) == 64

    def no_decoding(*a, **k):
        raise AssertionError("decoded despite the cache")

    monkeypatch.setattr(images, "decode", no_decoding)
    assert torch.equal(images.read_images(str(folder), None, None, "x", None, labelled=True,
                                          config=cfg).pixels, first)
    monkeypatch.undo()
    cache.write_bytes(b"damaged")
    with pytest.warns(NnfitWarning, match=r"damaged image cache: decoding the images again and rewriting it"):
        again = images.read_images(str(folder), None, None, "x", None, labelled=True, config=cfg).pixels
    assert torch.equal(again, first) and cache.read_bytes() != b"damaged"
    Image.new("L", (16, 16)).save(folder / "0" / "new.png")  # another file: another key
    assert image_files.cache_key(list_folder(folder, labelled=True), "s") != image_files.cache_key(
        list_folder(folder, labelled=True).take(range(36)), "s")
    cache.unlink()
    (folder / CACHE_DIR).rmdir()
    (folder / CACHE_DIR).write_text("a file where the cache folder goes")
    with pytest.warns(NnfitWarning, match=r"cannot write the image cache"):
        images.read_images(str(folder), None, None, "x", None, labelled=True, config=cfg)


# ------------------------------------------------------------------------------------ CLI
def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_train_evaluate_predict_round_trip_on_a_png_folder(folder, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    status, out, _ = cli(capsys, "train", folder, "--model", "cnn", "--channels", "8,16", "--epochs", "3",
                         "--test-split", "0.25", "--quiet", "--out", "run")
    assert status == 0, out
    test = _rows(tmp_path / "run" / "test.csv")
    assert len(test) == 9 and all(Path(r["path"]).is_absolute() and Path(r["path"]).parent.name == r["label"]
                                  for r in test)
    assert sorted(r["label"] for r in test) == ["0"] * 3 + ["1"] * 3 + ["2"] * 3  # stratified
    want = json.loads((tmp_path / "run" / "test_metrics.json").read_text())["accuracy"]
    status, out, _ = cli(capsys, "evaluate", "run", tmp_path / "run" / "test.csv", "--json")
    assert status == 0 and json.loads(out)["accuracy"] == want
    assert cli(capsys, "evaluate", "run", folder, "--json")[0] == 0
    status, _, _ = cli(capsys, "predict", "run", folder, "-o", "pred.csv", "--proba")
    assert status == 0
    rows = _rows(tmp_path / "pred.csv")
    assert list(rows[0]) == ["path", "prediction", "proba_0", "proba_1", "proba_2"]
    assert [r["path"] for r in rows] == sorted(str(p) for p in folder.glob("*/*.png"))
    files = [str(p) for p in sorted(folder.glob("1/*.png"))[:2]]
    assert cli(capsys, "predict", "run", *files, "-o", "two.csv")[0] == 0
    assert [r["path"] for r in _rows(tmp_path / "two.csv")] == files
    # a fresh process reads the run alone and predicts the same
    fresh = subprocess.run([sys.executable, "-m", "nnfit", "predict", "run", str(folder), "--proba"],
                           capture_output=True, text=True, cwd=tmp_path, check=True)
    assert list(csv.DictReader(fresh.stdout.splitlines())) == rows


def test_cli_round_trip_on_rgb_images_with_a_path_table(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = write_folder(tmp_path / "rgb", n_per_class=8, rgb=True, size=12)
    lines = ["path,label"] + [f"{p.relative_to(tmp_path).as_posix()},{p.parent.name}"
                              for p in sorted(root.glob("*/*.png"))]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    status, out, err = cli(capsys, "train", "list.csv", "--model", "cnn", "--channels", "8", "--epochs", "2",
                           "--test-split", "0.25", "--quiet", "--out", "run", "--image-size", "10,10")
    assert status == 0, err
    layout = json.loads((tmp_path / "run" / "model.json").read_text())["preprocess"]["layout"]
    got = (layout["channels"], layout["height"], layout["resize"], layout["augment"])
    assert got == (3, 10, True, "crop,flip")
    assert cli(capsys, "evaluate", "run", "run/test.csv", "--json")[0] == 0
    assert cli(capsys, "predict", "run", "list.csv", "-o", "p.csv")[0] == 0
    # each image named by its path as the table gives it (from the table's folder: here ".")
    assert [r["path"] for r in _rows(tmp_path / "p.csv")] == [ln.split(",")[0] for ln in lines[1:]]


def test_cli_digits_as_a_pixel_table_save_their_test_split_as_one(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    status, _, err = cli(capsys, "train", "--dataset", "digits", "--model", "cnn", "--channels", "4",
                         "--epochs", "1", "--quiet", "--out", "run")
    assert status == 0, err
    with open(tmp_path / "run" / "test.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert len(header) == 65 and header[-1] == "digit" and len(rows) == 359  # 20% of 1797, stratified
    want = json.loads((tmp_path / "run" / "test_metrics.json").read_text())["accuracy"]
    status, out, _ = cli(capsys, "evaluate", "run", "run/test.csv", "--json")
    assert status == 0 and json.loads(out)["accuracy"] == want
    assert cli(capsys, "predict", "run", "run/test.csv", "-o", "p.csv", "--proba")[0] == 0
    pred = _rows(tmp_path / "p.csv")
    assert len(pred) == 359 and list(pred[0])[:2] == ["digit", "proba_0"]  # one row per image, in order
    line = one_error(capsys, "predict", "run", "run/test.csv", "run/test.csv")
    assert line.endswith("run/test.csv: not an image file (.png, .jpg, .jpeg, .bmp)")
    assert cli(capsys, "train", "--dataset", "iris", "--epochs", "1", "--quiet", "--out", "t")[0] == 0
    line = one_error(capsys, "predict", "t", "t/test.csv", "t/test.csv")
    assert line == ("nnfit: error: one DATA file, got 2: several are read as the image files of a model "
                    "trained on images")


def test_training_refuses_a_loose_image_and_a_single_class(folder, tmp_path) -> None:
    Image.new("L", (16, 16)).save(folder / "loose.png")
    with pytest.raises(DataError, match=r"loose\.png: an image outside a class folder: put each image in a "
                                        r"folder named after its label"):
        nnfit.fit(SMALL, str(folder), epochs=1, **QUICK)
    one = write_folder(tmp_path / "one", n_per_class=4, classes=1)
    with pytest.raises(DataError, match=r"one: one class only \('0'\)"):
        nnfit.fit(SMALL, str(one), epochs=1, **QUICK)


def _bad_folder(root: Path, case: str) -> Path:
    write_folder(root, n_per_class=3, classes=2 if case != "one class" else 1)
    if case == "no images":
        for p in root.glob("*/*.png"):
            p.unlink()
    elif case == "truncated":
        p = sorted(root.glob("1/*.png"))[1]
        p.write_bytes(p.read_bytes()[:30])
    elif case == "mixed sizes":
        Image.new("L", (9, 16)).save(root / "1" / "wide.png")
    return root


@pytest.mark.parametrize(("case", "message"), [
    ("no images", r"imgs: no images \(\.png, \.jpg, \.jpeg, \.bmp files in .*imgs/<label>/\)$"),
    ("one class", r"imgs: one class only \('0'\): a classifier needs images in at least two class folders$"),
    ("truncated", r"imgs/1/004\.png: not a readable image \("),
    ("mixed sizes", r"imgs/1/wide\.png: image of 16x9 pixels \(HxW\), but .*imgs/0/000\.png is 16x16: pass "
                    r"--image-size H,W"),
])
def test_cli_bad_image_folders_are_one_line_and_leave_no_run(tmp_path, capsys, monkeypatch, case,
                                                             message) -> None:
    monkeypatch.chdir(tmp_path)
    root = _bad_folder(tmp_path / "imgs", case)
    line = one_error(capsys, "train", root, "--model", "cnn", "--epochs", "1", "--quiet")
    assert __import__("re").search(message, line), line
    assert not (tmp_path / "runs").exists()
    assert not (root / CACHE_DIR).exists()


# ------------------------------------------- pixel modes, nested folders, grey RGB, defaults
def _mode(path: Path) -> str:
    with Image.open(path) as im:
        return im.mode


def test_sixteen_bit_greyscale_is_scaled_by_its_high_byte_not_clipped(tmp_path) -> None:
    values = np.array([[0, 255, 256, 1000], [20000, 30000, 60000, 65535]], dtype=np.uint16)
    wide = tmp_path / "wide.png"
    Image.fromarray(values).save(wide)
    assert _mode(wide) == "I;16"
    want = torch.from_numpy((values >> 8).astype(np.uint8))
    for channels in (None, 1, 3):  # training; a trained greyscale or RGB model
        pixels = decode([wide], channels=channels)
        assert pixels.shape == (1, channels or 1, 2, 4) and all(torch.equal(p, want) for p in pixels[0])
    # 32-bit ints ("I": how older Pillow opened a 16-bit PNG; here a TIFF named .png, as Pillow
    # reads a file by its content) scale alike, and values past 16 bits are refused, named
    ints = tmp_path / "ints.png"
    Image.fromarray(values.astype(np.int32)).save(ints, format="TIFF")
    assert _mode(ints) == "I" and torch.equal(decode([ints])[0, 0], want)
    Image.fromarray(np.array([[-1, 70000]], np.int32)).save(ints, format="TIFF")
    with pytest.raises(DataError, match=r"ints\.png: image mode 'I' with values -1\.\.70000, outside the "
                                        r"16-bit range"):
        decode([ints])


def test_bilevel_alpha_palette_and_cmyk_images_map_to_grey_or_rgb_and_float_pixels_are_refused(
        tmp_path) -> None:
    def save(name: str, im: Image.Image, fmt: str | None = None) -> Path:
        im.save(tmp_path / name, format=fmt)
        return tmp_path / name

    bilevel = Image.new("1", (2, 2))
    bilevel.putpixel((0, 0), 1)
    grey_palette, colour_palette = Image.new("P", (2, 2), 1), Image.new("P", (2, 2), 1)
    grey_palette.putpalette([0, 0, 0, 90, 90, 90])
    colour_palette.putpalette([0, 0, 0, 200, 30, 10])
    assert decode([save("bin.png", bilevel)])[0, 0].tolist() == [[255, 0], [0, 0]]
    assert decode([save("la.png", Image.new("LA", (2, 2), (40, 0)))]).unique().tolist() == [40]
    grey = decode([save("grey.png", grey_palette)])
    assert grey.shape == (1, 1, 2, 2) and grey.unique().tolist() == [90]
    colour = decode([save("colour.png", colour_palette)])
    assert colour.shape == (1, 3, 2, 2) and colour[0, :, 0, 0].tolist() == [200, 30, 10]
    red = decode([save("cmyk.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)))])
    assert red.shape == (1, 3, 8, 8) and red[0, 0].min() > 200 and red[0, 1:].max() < 50
    floats = save("f.png", Image.fromarray(np.full((2, 2), 0.5, np.float32)), "TIFF")
    with pytest.raises(DataError, match=r"f\.png: image mode 'F' \(32-bit float pixels\) has no fixed range"):
        decode([tmp_path / "bin.png", floats])


def test_class_folders_are_read_recursively_and_symlink_loops_end(tmp_path) -> None:
    root = tmp_path / "imgs"
    for rel in ["a/1.png", "a/sub/0.png", "a/sub/deeper/2.png", "a/sub2.png", "a/.hidden/3.png",
                "b/x.png", "b/y/z.png", "elsewhere/m.png"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), len(rel)).save(root / rel)
    (root / "elsewhere").rename(tmp_path / "elsewhere")
    (root / "a" / "loop").symlink_to(root)  # back to the tree's root: not followed
    (root / "b" / "y" / "up").symlink_to(root / "b")  # back to its class folder: not followed
    (root / "b" / "linked").symlink_to(tmp_path / "elsewhere")  # out of the tree: followed
    files = list_folder(root, labelled=True)
    assert [p.relative_to(root).as_posix() for p in files.paths] == [
        "a/1.png", "a/sub/0.png", "a/sub/deeper/2.png", "a/sub2.png",
        "b/linked/m.png", "b/x.png", "b/y/z.png"]
    assert files.labels.tolist() == ["a"] * 4 + ["b"] * 3
    assert len(list_folder(root, labelled=False)) == 7
    # --test-split: both parts keep the class folders as labels (not "sub" or "deeper")
    train, test, n = images.hold_out(str(root), 0.4, TrainConfig(**QUICK), None, "auto")
    got = [images.read_images(part, None, None, "x", None, labelled=True).labels.tolist()
           for part in (train, test)]
    assert n == 3 and sorted(got[0] + got[1]) == ["a"] * 4 + ["b"] * 3


def test_rgb_files_whose_channels_agree_within_3_are_a_greyscale_set(tmp_path) -> None:
    base = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3

    def rgb(name: str, spread: int) -> Path:
        Image.fromarray(np.stack([base, base + spread, base], -1)).save(tmp_path / name)
        return tmp_path / name

    Image.fromarray(base).save(tmp_path / "l.png")
    Image.fromarray(base).convert("RGB").save(tmp_path / "j.jpg", quality=80)
    grey = [tmp_path / "l.png", rgb("near.png", 3), tmp_path / "j.jpg"]
    pixels = decode(grey)
    assert pixels.shape == (3, 1, 8, 8)
    assert torch.equal(pixels, decode(grey, channels=1))  # as the greyscale model reads them later
    small = decode(grey, shape=(5, 5), resize=True)
    assert torch.equal(small, decode(grey, channels=1, shape=(5, 5), resize=True))
    assert decode([*grey, rgb("far.png", 4)]).shape == (4, 3, 8, 8)
    # digits saved as RGB JPEGs train as greyscale: one channel, and auto does not flip them
    root = write_folder(tmp_path / "jpegs")
    for path in list(root.glob("*/*.png")):
        with Image.open(path) as im:
            im.convert("RGB").save(path.with_suffix(".jpg"))
        path.unlink()
    cfg = TrainConfig(**QUICK)
    p = images.prepare(str(root), target=None, val=None, task="auto", config=cfg, resumed=None)
    assert p.preprocessor.layout.channels == 1 and p.preprocessor.layout.augment == "none"
    # arrays keep their channels, but three equal ones are not flipped either
    x = torch.from_numpy(base).expand(2, 3, 8, 8)
    assert images.resolve_augment("auto", x) == images.resolve_augment("auto", x.float() / 255) == "none"
    assert images.resolve_augment("auto", x[:, :1]) == "none"
    tinted = x + torch.tensor([0, 4, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert images.resolve_augment("auto", tinted) == "crop,flip"
    assert images.resolve_augment("flip", x) == "flip"


def test_default_cnn_channels_follow_the_shorter_image_side(tmp_path, capsys, monkeypatch) -> None:
    from nnfit.data.images import default_channels

    sides = (4, 8, 16, 17, 28, 32, 33, 64, 512)
    assert [len(default_channels(s, s)) for s in sides] == [2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert default_channels(100, 20) == [32, 64, 128] and default_channels(64, 64) == [32, 64, 128, 256]
    root = write_folder(tmp_path / "d", n_per_class=4, classes=2, size=28)
    assert nnfit.fit("cnn", str(root), epochs=1, **QUICK).spec["channels"] == [32, 64, 128]
    assert nnfit.fit(SMALL, str(root), epochs=1, **QUICK).spec["channels"] == [8, 16]  # given: kept
    own = nnfit.models.CNN(1, 2, channels=[4, 4])  # a hand-built CNN of other widths trains too
    assert nnfit.fit(own, str(root), epochs=1, **QUICK).spec["channels"] == [4, 4]
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "train", root, "--epochs", "1", "--quiet", "--out", "run")[0] == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["channels"] == []  # from the data
    assert json.loads((tmp_path / "run" / "model.json").read_text())["spec"]["channels"] == [32, 64, 128]
    assert cli(capsys, "evaluate", "run", root, "--json")[0] == 0  # config and spec agree on loading
    assert cli(capsys, "train", root, "--channels", "8", "--epochs", "1", "--quiet", "--out", "r8")[0] == 0
    assert json.loads((tmp_path / "r8" / "model.json").read_text())["spec"]["channels"] == [8]
