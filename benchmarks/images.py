"""Image-folder benchmark: nnfit against torchvision ``ImageFolder`` + ``DataLoader``.

``bench.py`` writes each workload's class-folder tree of PNGs once (:func:`make_folder`), then
runs each contender in a fresh process, ``python images.py NAME SPEC_JSON``, interleaved for
several rounds. Every contender trains the same ``nnfit.models.CNN`` (same seed, Adam, the
CLI's defaults for an image folder: channels 32,64, batch norm, lr 3e-3; same batch and epochs,
no augmentation) on the same training folder, then scores the same held-out folder. Each
prints one line, ``RESULT {json}``: the seconds of every epoch (the first one includes whatever
the contender does once up front: nnfit decodes every image there), the first and the steady
(median of the later) epoch times, the held-out accuracy, and ``loader_only_s``: one pass of
the contender's batches without the model (nnfit: its normalised batches of the decoded
tensor; the peers: the DataLoader).

The workloads (:data:`WORKLOADS`, in the order of the results): digits-like greyscale folders
first (scikit-learn's bundled 8x8 digits, upscaled, rotated, shifted and noised: the kind of
set the issue's independent check uses), at the CLI's batch 32 and at 128; then 32x32 RGB
stripes, where on a CPU the CNN's own compute bounds what any loader can save.

The torchvision peers decode every image in every epoch (``ToTensor`` + ``Normalize`` per
sample, the default collate; greyscale files opened as "L", ImageFolder's own loader would
make them RGB), with ``num_workers`` 0 and 2 and otherwise default DataLoader settings, as its
tutorials write it. On ``--device cuda`` their batches move to the GPU one at a time; nnfit
moves its decoded uint8 tensor once.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# The data of the workloads: how many images of each class go to the training and the held-out
# folder, and which generator draws them ("digits": :func:`digit`, "stripes": :func:`pattern`).
DATA = {
    "digits16": dict(kind="digits", classes=10, per_class=500, test_per_class=100, size=16),
    "digits8": dict(kind="digits", classes=10, per_class=500, test_per_class=100, size=8),
    "stripes32": dict(kind="stripes", classes=10, per_class=500, test_per_class=100, size=32),
}
# `nnfit train FOLDER`'s model and optimizer (cli.train._config/_model_spec: cnn, channels
# 32,64, batch norm, Adam at CNN_LR 3e-3); batch 32 is the CLI's default.
MODEL = dict(channels=[32, 64], lr=3e-3, epochs=4)
WORKLOADS = {
    "digits-16px-b32": dict(data="digits16", batch=32, **MODEL),
    "digits-16px-b128": dict(data="digits16", batch=128, **MODEL),
    "digits-8px-b32": dict(data="digits8", batch=32, **MODEL),
    "digits-8px-b128": dict(data="digits8", batch=128, **MODEL),
    # compute-bound on a CPU: the CNN's own time dominates the epoch
    "rgb-32px-b128": dict(data="stripes32", batch=128, **{**MODEL, "epochs": 3}),
}
SMOKE_DATA = {
    "digits-smoke": dict(kind="digits", classes=3, per_class=12, test_per_class=4, size=8),
    "stripes-smoke": dict(kind="stripes", classes=3, per_class=12, test_per_class=4, size=16),
}
SMOKE = {
    "smoke-digits": dict(data="digits-smoke", batch=16, channels=[4, 8], lr=3e-3, epochs=2, threads=1),
    "smoke-rgb": dict(data="stripes-smoke", batch=16, channels=[4, 8], lr=3e-3, epochs=2, threads=1),
}
CONTENDERS = ["nnfit", "torchvision_w0", "torchvision_w2"]


def pattern(cls: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, 3) uint8 image of class ``cls``: stripes whose orientation
    (horizontal or vertical: ``cls % 2``) and frequency (``cls // 2``) make the class, with
    a random phase, a random colour and pixel noise, so only the pattern tells the class and
    accuracy is not trivially 1. A horizontal flip keeps the class (flips are harmless)."""
    t = np.arange(size, dtype=np.float32) / size
    cycles = 1.5 + cls // 2
    wave = np.sin(2 * np.pi * (cycles * t + rng.random()))
    plane = np.broadcast_to(wave[:, None] if cls % 2 == 0 else wave[None, :], (size, size))
    colour = rng.uniform(0.3, 1.0, 3).astype(np.float32)
    img = 0.5 + 0.35 * plane[..., None] * colour + rng.normal(0, 0.35, (size, size, 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def digit(source: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size) uint8 greyscale image from an 8x8 scikit-learn digit (values 0..16):
    upscaled bilinearly, rotated by up to 8 degrees, shifted by up to a sixteenth of the side,
    dimmed, on a random background level, with pixel noise. Digits are never mirrored. The
    CLI's CNN sees 8x8 windows before its global pooling: on 16x16 digits it learns slower
    (about 0.8 held-out accuracy after 4 epochs, 0.95 after 12) than on 8x8 ones (about 0.9)."""
    from PIL import Image

    img = Image.fromarray((source * (255 / 16)).round().astype(np.uint8), "L")
    img = img.resize((size, size), Image.Resampling.BILINEAR)
    shift = rng.uniform(-size / 16, size / 16, 2)
    img = img.rotate(rng.uniform(-8, 8), Image.Resampling.BILINEAR, translate=tuple(shift))
    px = np.asarray(img, np.float32) / 255 * rng.uniform(0.6, 1.0) + rng.uniform(0, 0.2)
    px = px + rng.normal(0, 0.08, px.shape)
    return (np.clip(px, 0, 1) * 255).round().astype(np.uint8)


def digit_sources(classes: int, seed: int) -> dict[str, list[np.ndarray]]:
    """scikit-learn's bundled 8x8 digits of classes 0..classes-1, split per class (80/20) into
    the training folder's sources and the held-out folder's: held-out images are drawn from
    digits the training images never came from."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for c in range(classes):
        imgs = d.images[d.target == c][rng.permutation(int((d.target == c).sum()))]
        cut = int(len(imgs) * 0.8)
        out["train"].append(imgs[:cut])
        out["test"].append(imgs[cut:])
    return out


def make_folder(root: Path, classes: int, per_class: int, test_per_class: int, size: int,
                kind: str = "stripes", seed: int = 0, **_: object) -> dict:
    """Write ``root/train/<class>/*.png`` and ``root/test/<class>/*.png`` (``kind`` "stripes":
    RGB :func:`pattern` images; "digits": greyscale :func:`digit` images); return both paths,
    the images' channels, and the per-channel mean and std of the training pixels (in
    ToTensor's [0, 1] units, for torchvision's ``Normalize``: nnfit fits the same statistics
    itself)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = digit_sources(classes, seed) if kind == "digits" else None
    ch = 1 if kind == "digits" else 3
    total, total_sq, n = np.zeros(ch), np.zeros(ch), 0
    for split, count in (("train", per_class), ("test", test_per_class)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                if sources is not None:
                    pool = sources[split][c]
                    img = digit(pool[rng.integers(len(pool))], size, rng)
                else:
                    img = pattern(c, size, rng)
                Image.fromarray(img).save(folder / f"{i:05d}.png")
                if split == "train":
                    px = img.reshape(-1, ch).astype(np.float64) / 255
                    total, total_sq, n = total + px.sum(0), total_sq + (px ** 2).sum(0), n + len(px)
    mean = total / n
    return {"train": str(root / "train"), "test": str(root / "test"), "in_channels": ch,
            "mean": mean.tolist(), "std": np.sqrt(total_sq / n - mean ** 2).tolist()}


def _epoch_summary(times: list[float], first: float) -> dict:
    """Every epoch's seconds, the first epoch's (with the work done once before it) and the
    steady epoch's (the median of the later ones; ``best_epoch_s`` their fastest, the figure
    a busy machine disturbs least); ``seconds`` is all of training."""
    later = times[1:] or [first]
    return {"seconds": first + sum(times[1:]), "epoch_s": times, "first_epoch_s": first,
            "steady_epoch_s": statistics.median(later), "best_epoch_s": min(later)}


# ------------------------------------------------------------------------------ contenders
def run_nnfit(spec: dict) -> dict:
    """``nnfit.fit`` on the folder: images decoded once, then batches of one uint8 tensor."""
    from nnfit import fit
    from nnfit.models import CNN

    torch.manual_seed(0)
    model = CNN(spec["in_channels"], spec["classes"], channels=spec["channels"])
    t0 = time.perf_counter()
    learner = fit(model, spec["train"], epochs=spec["epochs"], batch_size=spec["batch"], lr=spec["lr"],
                  val_split=0, patience=0, augment="none", quiet=True, device=spec["device"])
    total = time.perf_counter() - t0
    times = [h["time"] for h in learner.history]
    # fit's time beyond its epochs' is the reading, decoding and fitting done once before the
    # first epoch: charged to that epoch, as the peers pay their decoding inside each epoch.
    out = _epoch_summary(times, total - sum(times[1:]))
    out["decode_and_setup_s"] = total - sum(times)
    out["test_acc"] = float(learner.evaluate(spec["test"])["accuracy"])
    out["loader_only_s"] = _nnfit_loader_pass(learner, spec)
    return out


def _nnfit_loader_pass(learner, spec: dict) -> float:
    """Seconds of one pass over the batches nnfit's trainer draws (shuffled, normalised from
    the decoded uint8 tensor), without the model: the loader's share of nnfit's epoch."""
    from nnfit.data.images import read_images

    layout = learner.preprocessor.layout
    imgs = read_images(spec["train"], None, None, "training data", layout, labelled=True)
    pixels = imgs.pixels.to(spec["device"])
    source = layout.source(pixels, torch.zeros(len(pixels), dtype=torch.long, device=pixels.device),
                           train=True)
    t0 = time.perf_counter()
    for _batch in source.batches(spec["batch"], shuffle=True, generator=torch.Generator().manual_seed(0),
                                 drop_single=True):
        pass
    if spec["device"].startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


_TORCHVISION_OPS = None  # kept alive: the schemas are defined while this object lives


def import_torchvision():
    """Import torchvision; returns (module, whether the op schemas had to be defined).

    A CUDA build of torchvision whose C extension cannot load next to a CPU torch fails to
    import because its Python side registers fake kernels for ``torchvision::nms`` and
    ``qnms``, ops the extension would define. Defining their two schemas lets the Python side
    (ImageFolder, transforms, DataLoader) import; the timed path never calls those ops. A CPU
    build imports as is and is left alone.
    """
    global _TORCHVISION_OPS
    try:
        import torchvision

        return torchvision, False
    except RuntimeError:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # the failed import's half-loaded modules
    _TORCHVISION_OPS = torch.library.Library("torchvision", "DEF")
    _TORCHVISION_OPS.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_OPS.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision

    return torchvision, True


def grey_loader(path: str):
    """A greyscale image file as a one-channel PIL image (ImageFolder's ``pil_loader``, "L")."""
    from PIL import Image

    with open(path, "rb") as f:
        return Image.open(f).convert("L")


def run_torchvision(spec: dict, workers: int) -> dict:
    """ImageFolder + ToTensor/Normalize + DataLoader, and a hand-written loop on the same CNN."""
    torchvision, shimmed = import_torchvision()
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from nnfit.models import CNN

    dev = spec["device"]
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(spec["mean"], spec["std"])])
    # ImageFolder's default loader converts every file to RGB: greyscale sets open as "L"
    loader = grey_loader if spec["in_channels"] == 1 else datasets.folder.default_loader
    torch.manual_seed(0)
    model = CNN(spec["in_channels"], spec["classes"], channels=spec["channels"]).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    times = []
    t0 = time.perf_counter()
    train = DataLoader(datasets.ImageFolder(spec["train"], transform=tf, loader=loader),
                       batch_size=spec["batch"], shuffle=True, num_workers=workers,
                       generator=torch.Generator().manual_seed(0))
    for _ in range(spec["epochs"]):
        model.train()
        for xb, yb in train:
            loss = F.cross_entropy(model(xb.to(dev)), yb.to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
        if dev.startswith("cuda"):  # the epoch's kernels finish inside its time
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    model.eval()
    right = total = 0
    with torch.inference_mode():
        for xb, yb in DataLoader(datasets.ImageFolder(spec["test"], transform=tf, loader=loader),
                                 batch_size=512, num_workers=workers):
            right += int((model(xb.to(dev)).argmax(1).cpu() == yb).sum())
            total += len(yb)
    # One more pass over the training batches without the model: what the loader alone costs
    # per epoch (decoding, ToTensor, Normalize, collate), the part nnfit does once.
    t0 = time.perf_counter()
    for _ in train:
        pass
    out = _epoch_summary(times, times[0])
    out.update(test_acc=right / total, loader_only_s=time.perf_counter() - t0,
               torchvision=torchvision.__version__, op_schemas_defined=shimmed)
    return out


def warm_up(spec: dict) -> None:
    """Pay torch's one-time costs (the optimizer's lazy imports, the CNN's first kernels)
    before any clock starts, so no contender is charged for them."""
    from nnfit.models import CNN

    m = CNN(spec["in_channels"], spec["classes"], channels=spec["channels"]).to(spec["device"])
    opt = torch.optim.Adam(m.parameters())
    x = torch.zeros(2, spec["in_channels"], spec["size"], spec["size"], device=spec["device"])
    F.cross_entropy(m(x), torch.zeros(2, dtype=torch.long, device=spec["device"])).backward()
    opt.step()


def main() -> None:
    name, spec = sys.argv[1], json.loads(sys.argv[2])
    if spec.get("threads"):  # the smoke's tiny steps: see bench.SMOKE_MODELS
        torch.set_num_threads(spec["threads"])
    warm_up(spec)
    out = run_nnfit(spec) if name == "nnfit" else run_torchvision(spec, int(name.rsplit("_w", 1)[1]))
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
