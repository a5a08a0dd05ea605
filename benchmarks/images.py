"""Image-folder benchmark: nnfit against torchvision ``ImageFolder`` + ``DataLoader``.

``bench.py`` writes a class-folder tree of PNGs once (:func:`make_folder`), then runs each
contender in a fresh process, ``python images.py NAME SPEC_JSON``, interleaved for several
rounds. Every contender trains the same ``nnfit.models.CNN`` (same seed, Adam, lr 1e-3, batch,
epochs, no augmentation) on the same training folder, then scores the same held-out folder.
Each prints one line, ``RESULT {json}``: the seconds of every epoch (the first one includes
whatever the contender does once up front: nnfit decodes every image there), the first and
the steady (median of the later) epoch times, and the held-out accuracy.

The torchvision peers decode every image in every epoch (``ToTensor`` + ``Normalize`` per
sample, the default collate), with ``num_workers`` 0 and 2 and otherwise default DataLoader
settings, as its tutorials write it. On ``--device cuda`` their batches move to the GPU one
at a time; nnfit moves its decoded uint8 tensor once. On a CPU the CNN's own compute bounds
what any loader can save: ``loader_only_s`` (the peer's loader alone, one pass) shows that share.
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

# How many images of each class go to the training and the held-out folder.
FULL = dict(classes=10, per_class=500, test_per_class=100, size=32, channels=[32, 64], epochs=3,
            batch=128)
SMOKE = dict(classes=3, per_class=12, test_per_class=4, size=16, channels=[4, 8], epochs=2, batch=16,
             threads=1)
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


def make_folder(root: Path, classes: int, per_class: int, test_per_class: int, size: int,
                seed: int = 0, **_: object) -> dict:
    """Write ``root/train/<class>/*.png`` and ``root/test/<class>/*.png``; return both paths
    and the per-channel mean and std of the training pixels (in ToTensor's [0, 1] units, for
    torchvision's ``Normalize``: nnfit fits the same statistics itself)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    total, total_sq, n = np.zeros(3), np.zeros(3), 0
    for split, count in (("train", per_class), ("test", test_per_class)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                img = pattern(c, size, rng)
                Image.fromarray(img).save(folder / f"{i:05d}.png")
                if split == "train":
                    px = img.reshape(-1, 3).astype(np.float64) / 255
                    total, total_sq, n = total + px.sum(0), total_sq + (px ** 2).sum(0), n + len(px)
    mean = total / n
    return {"train": str(root / "train"), "test": str(root / "test"), "mean": mean.tolist(),
            "std": np.sqrt(total_sq / n - mean ** 2).tolist()}


def _epoch_summary(times: list[float], first: float) -> dict:
    """Every epoch's seconds, the first epoch's (with the work done once before it) and the
    steady epoch's (the median of the later ones); ``seconds`` is all of training."""
    steady = statistics.median(times[1:]) if len(times) > 1 else first
    return {"seconds": first + sum(times[1:]), "epoch_s": times, "first_epoch_s": first,
            "steady_epoch_s": steady}


# ------------------------------------------------------------------------------ contenders
def run_nnfit(spec: dict) -> dict:
    """``nnfit.fit`` on the folder: images decoded once, then batches of one uint8 tensor."""
    from nnfit import fit
    from nnfit.models import CNN

    torch.manual_seed(0)
    model = CNN(3, spec["classes"], channels=spec["channels"])
    t0 = time.perf_counter()
    learner = fit(model, spec["train"], epochs=spec["epochs"], batch_size=spec["batch"], val_split=0,
                  patience=0, augment="none", quiet=True, device=spec["device"])
    total = time.perf_counter() - t0
    times = [h["time"] for h in learner.history]
    # fit's time beyond its epochs' is the reading, decoding and fitting done once before the
    # first epoch: charged to that epoch, as the peers pay their decoding inside each epoch.
    out = _epoch_summary(times, total - sum(times[1:]))
    out["decode_and_setup_s"] = total - sum(times)
    out["test_acc"] = float(learner.evaluate(spec["test"])["accuracy"])
    return out


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


def run_torchvision(spec: dict, workers: int) -> dict:
    """ImageFolder + ToTensor/Normalize + DataLoader, and a hand-written loop on the same CNN."""
    torchvision, shimmed = import_torchvision()
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from nnfit.models import CNN

    dev = spec["device"]
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(spec["mean"], spec["std"])])
    torch.manual_seed(0)
    model = CNN(3, spec["classes"], channels=spec["channels"]).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    t0 = time.perf_counter()
    train = DataLoader(datasets.ImageFolder(spec["train"], transform=tf), batch_size=spec["batch"],
                       shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0))
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
        for xb, yb in DataLoader(datasets.ImageFolder(spec["test"], transform=tf), batch_size=512,
                                 num_workers=workers):
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


def main() -> None:
    from contenders import warm_up

    name, spec = sys.argv[1], json.loads(sys.argv[2])
    if spec.get("threads"):  # the smoke's tiny steps: see bench.SMOKE_MODELS
        torch.set_num_threads(spec["threads"])
    warm_up({"model": "cnn", "size": 8, "channels": spec["channels"], "classes": spec["classes"],
             "device": spec["device"]})
    out = run_nnfit(spec) if name == "nnfit" else run_torchvision(spec, int(name.rsplit("_w", 1)[1]))
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
