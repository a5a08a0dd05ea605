"""Image files into one tensor: a class-folder tree or a list of files, decoded once with
Pillow in a thread pool into one uint8 ``(N, C, H, W)`` tensor, optionally cached on disk next
to the data, keyed by the files' content.

Greyscale images stay one channel; one colour image makes the whole set RGB (greyscale ones
are then repeated over three channels). An alpha channel is dropped, not composited. Every
problem is a :class:`~nnfit.errors.DataError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import CheckpointError, DataError, printable, warn
from .layouts import IMAGE_SUFFIXES

CACHE_DIR = ".nnfit-cache"
CACHE_VERSION = 1
# Pillow modes that hold no colour: they decode to one channel ("L").
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
SUFFIXES_TEXT = ", ".join(IMAGE_SUFFIXES)


@dataclass
class ImageFiles:
    """Image files in a fixed order, with the label of each when there is one.

    Attributes:
        paths: the files, as given (a folder's files joined to the folder as given).
        labels: one label per file (the name of its folder, or a label column's value), or
            None for unlabelled files.
        source: the folder, file or list the files came from, for messages.
        root: the folder the decoded-image cache lives in (the files' common folder), or None.
        labels_from: what the labels are, in messages ("class folders", "column 'label'").
    """

    paths: list[Path]
    labels: np.ndarray | None
    source: str
    root: Path | None
    labels_from: str = "class folders"

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, idx: Sequence[int] | np.ndarray) -> ImageFiles:
        """The files ``idx`` (with their labels), same source and cache folder."""
        labels = None if self.labels is None else self.labels[np.asarray(idx, dtype=np.int64)]
        return ImageFiles([self.paths[i] for i in idx], labels, self.source, self.root, self.labels_from)


def _is_image(p: Path) -> bool:
    """An image file nnfit reads: a known suffix (any case), not hidden."""
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()


def list_folder(root: str | Path, *, labelled: bool) -> ImageFiles:
    """The images of a class-folder tree ``root/<label>/*.png|jpg|jpeg|bmp``, sorted by path.

    Hidden files and folders and files of other types are skipped. Unlabelled (``predict``),
    images directly in ``root`` are read too, and every image of the class folders.

    Raises:
        DataError: ``root`` is not a folder; labelled, an image outside a class folder or
            no image at all, naming the folder.
    """
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"{printable(r)}: not a folder")
    entries = sorted(r.iterdir(), key=lambda p: p.name)
    loose = [p for p in entries if _is_image(p)]
    paths: list[Path] = []
    labels: list[str] = []
    for d in (p for p in entries if p.is_dir() and not p.name.startswith(".")):
        files = sorted((p for p in d.iterdir() if _is_image(p)), key=lambda p: p.name)
        paths += files
        labels += [d.name] * len(files)
    if labelled and loose:
        raise DataError(f"{printable(loose[0])}: an image outside a class folder: put each image in a "
                        f"folder named after its label ({printable(r)}/<label>/{printable(loose[0].name)})")
    if not paths and not loose:
        where = f"{printable(r)}/<label>/" if labelled else f"{printable(r)} or its class folders"
        raise DataError(f"{printable(r)}: no images ({SUFFIXES_TEXT} files in {where})")
    if not labelled:
        return ImageFiles(loose + paths, None, str(r), r)
    return ImageFiles(paths, np.asarray(labels, dtype=object), str(r), r)


def files_from_list(items: Sequence[str | Path], source: str, *, labelled: bool) -> ImageFiles:
    """Image files as given; labelled, each file's label is the name of its folder."""
    paths = [Path(p) for p in items]
    labels = np.asarray([p.parent.resolve().name for p in paths], dtype=object) if labelled else None
    return ImageFiles(paths, labels, source, common_folder(paths))


def common_folder(paths: Sequence[Path]) -> Path | None:
    """The deepest folder holding every file (a class-folder tree's root), None if there is none."""
    try:
        return Path(os.path.commonpath([str(p.parent.resolve()) for p in paths])) if paths else None
    except ValueError:  # files on different drives
        return None


def check_classes(files: ImageFiles) -> None:
    """Refuse training files of one class: a classifier needs two.

    Raises:
        DataError: naming the folder and the one class.
    """
    assert files.labels is not None
    found = sorted(set(files.labels.tolist()))
    if len(found) < 2:
        raise DataError(f"{printable(files.source)}: one class only ({printable(repr(found[0]))}): "
                        "a classifier needs images in at least two class folders")


# ------------------------------------------------------------------------------ decoding
def _decode_one(path: Path, mode: str | None, size: tuple[int, int] | None) -> np.ndarray:
    """One image as (H, W) or (H, W, 3) uint8: ``mode`` "L" or "RGB", or None to keep
    greyscale as "L" and make everything else "RGB"; resized to ``size`` (H, W) when given."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # decodes here, inside the try: a truncated file fails now, named
            want = mode or ("L" if im.mode in GREY_MODES else "RGB")
            if im.mode in ("P", "PA") and want == "RGB":
                im = im.convert("RGBA")  # a palette's transparency goes through RGBA, then is dropped
            if im.mode != want:
                im = im.convert(want)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{printable(path)}: refused as a possible decompression bomb "
                        f"({_first_line(e)})") from None
    except FileNotFoundError:
        raise DataError(f"{printable(path)}: file not found") from None
    except Exception as e:  # Pillow raises many types for damaged files: all mean "unreadable"
        raise DataError(f"{printable(path)}: not a readable image ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return printable(text[0]) if text else type(e).__name__


def _workers(n: int) -> int:
    """Decoding threads: Pillow releases the GIL while it decompresses."""
    return max(1, min(n, (os.cpu_count() or 1) + 2, 32))


def decode(paths: Sequence[Path], *, channels: int | None = None, shape: tuple[int, int] | None = None,
           resize: bool = False) -> Tensor:
    """Decode image files into one uint8 tensor.

    Args:
        paths: the files, in order.
        channels: 1 or 3 to convert every image to greyscale or RGB (a trained model's);
            None: greyscale stays one channel unless some image has colour.
        shape: (H, W) every image must have (a trained model's), or with ``resize`` is
            resized to; None: the first image's size, which every other one must have.
        resize: resize (bilinear) every image to ``shape``.

    Returns:
        uint8 tensor (N, C, H, W).

    Raises:
        DataError: an unreadable, truncated or decompression-bomb image, or one of another
            size (both sizes named), naming the file.
    """
    mode = None if channels is None else "L" if channels == 1 else "RGB"
    size = shape if resize else None
    with warnings.catch_warnings(), ThreadPoolExecutor(_workers(len(paths))) as pool:
        # Pillow warns (and does not refuse) between its pixel limit and twice it: refused here
        # too, in every decoding thread (they read the filters this block set).
        warnings.simplefilter("error", _bomb_warning())
        arrays = list(pool.map(lambda p: _decode_one(p, mode, size), paths))
    h, w = shape if shape is not None else arrays[0].shape[:2]
    for p, a in zip(paths, arrays, strict=True):
        if a.shape[:2] != (h, w):
            got = f"{printable(p)}: image of {a.shape[0]}x{a.shape[1]} pixels (HxW), but"
            if shape is not None:  # a trained model's size: resizing is decided at training
                raise DataError(f"{got} the model reads {h}x{w} images (a model trained with --image-size "
                                "H,W resizes every image)")
            raise DataError(f"{got} {printable(paths[0])} is {h}x{w}: pass --image-size H,W "
                            "(image_size=(H, W)) to resize every image")
    c = channels or (3 if any(a.ndim == 3 for a in arrays) else 1)
    out = np.empty((len(arrays), c, h, w), dtype=np.uint8)
    for i, a in enumerate(arrays):
        out[i] = a.transpose(2, 0, 1) if a.ndim == 3 else a  # a greyscale image fills every channel
    return torch.from_numpy(out)


def _bomb_warning() -> type[Warning]:
    from PIL import Image

    return Image.DecompressionBombWarning


# --------------------------------------------------------------------------------- cache
def cache_key(files: ImageFiles, settings: str) -> str:
    """SHA-256 of every file's path (relative to the cache folder) and bytes, and the size
    settings: any changed, added, removed or renamed file makes another key."""

    def digest(p: Path) -> bytes:
        try:
            return hashlib.sha256(p.read_bytes()).digest()
        except OSError as e:
            raise DataError(f"{printable(p)}: cannot read ({e.strerror})") from None

    assert files.root is not None
    with ThreadPoolExecutor(_workers(len(files))) as pool:  # hashlib releases the GIL too
        digests = list(pool.map(digest, files.paths))
    h = hashlib.sha256(f"nnfit-image-cache:{CACHE_VERSION}:{settings}:{len(files)};".encode())
    for p, d in zip(files.paths, digests, strict=True):
        rel = os.path.relpath(p.resolve(), files.root)
        h.update(Path(rel).as_posix().encode("utf-8", "surrogateescape") + b"\0" + d)
    return h.hexdigest()


def cached(files: ImageFiles, settings: str, make: Callable[[], Tensor]) -> Tensor:
    """The decoded images of ``files`` from ``<root>/.nnfit-cache/<sha256>.safetensors``, or
    ``make()`` and a new cache file. A damaged cache file is decoded again and rewritten, with
    a warning; a folder that cannot be written is skipped, with a warning."""
    from ..checkpoint import load_tensors, save_tensors

    if files.root is None:
        warn(f"{printable(files.source)}: the files share no folder to keep a cache in: decoding "
             "without one")
        return make()
    path = files.root / CACHE_DIR / f"{cache_key(files, settings)}.safetensors"
    if path.is_file():
        try:
            tensors, _ = load_tensors(path)
            t = tensors.get("pixels")
            if (t is not None and t.dtype == torch.uint8 and t.ndim == 4 and len(t) == len(files)
                    and t.shape[1] in (1, 3)):
                return t
            raise CheckpointError(f"{path}: not an image cache of {len(files)} images")
        except CheckpointError:
            warn(f"{printable(path)}: damaged image cache: decoding the images again and rewriting it")
    pixels = make()
    try:
        path.parent.mkdir(exist_ok=True)
        save_tensors(path, {"pixels": pixels}, {"kind": "image-cache", "version": CACHE_VERSION})
    except OSError as e:
        warn(f"{printable(path.parent)}: cannot write the image cache ({e.strerror or e}): the images "
             "are decoded again next time")
    return pixels
