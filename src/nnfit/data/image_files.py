"""Image files into one tensor: a class-folder tree or a list of files, decoded once with
Pillow in a thread pool into one uint8 ``(N, C, H, W)`` tensor, optionally cached on disk next
to the data, keyed by the files' content.

Every image becomes 8-bit greyscale ("L") or RGB: 16-bit greyscale by its high byte, bilevel
as 0/255, palettes, CMYK and other colour modes as RGB; an alpha channel is dropped, not
composited. A set whose every image is greyscale, or has channels equal within
:data:`GREY_TOLERANCE` (a grey picture saved as RGB), is one channel; one colour image makes the
whole set RGB (greyscale ones are then repeated over three channels). Every problem is a
:class:`~nnfit.errors.DataError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import CheckpointError, DataError, printable, warn
from ..runtime import memory_bytes
from .layouts import IMAGE_SUFFIXES

CACHE_DIR = ".nnfit-cache"
CACHE_VERSION = 2  # 2: 16-bit greyscale scaled (not clipped), grey RGB sets stored as one channel
# Pillow modes that hold no colour: they decode to one channel ("L").
GREY_MODES = frozenset({"1", "L", "LA"})
# 16-bit greyscale (a 16-bit PNG opens as "I;16"; older Pillow opened it as "I"): scaled to 8 bits
# by the high byte (value >> 8), as Pillow itself reads 16-bit RGB and LA PNGs. It inverts the
# usual 8-to-16-bit expansion (v * 257) exactly, as rounding value / 257 would too.
WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
# An RGB image whose channels differ by at most this much at every pixel is greyscale: a grey
# picture saved as RGB (libjpeg-turbo keeps a grey JPEG's channels exactly equal, other encoders
# may not quite). Of the 32x32 patches of the two scikit-learn sample photos, the greyest differ
# by 5 somewhere, so colour content stays clear of it.
GREY_TOLERANCE = 3
# The most values (C*H*W) one image may hold: a model's input is a batch of them in float32,
# and a CNN's first stage holds dozens of channels at this size (a batch of two 2**25-value
# images through 32 channels is 8 GiB). Larger images are resized with --image-size; a saved
# layout is bounded alike (nnfit.io.validate_layouts.MAX_IMAGE_VALUES).
MAX_IMAGE_VALUES = 2**25
SUFFIXES_TEXT = ", ".join(IMAGE_SUFFIXES)
FOLDERS = "class folders"  # ImageFiles.labels_from of labels that are the files' folder names


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
    labels_from: str = FOLDERS

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, idx: Sequence[int] | np.ndarray) -> ImageFiles:
        """The files ``idx`` (with their labels), same source and cache folder."""
        labels = None if self.labels is None else self.labels[np.asarray(idx, dtype=np.int64)]
        return ImageFiles([self.paths[i] for i in idx], labels, self.source, self.root, self.labels_from)


def _is_image(p: Path) -> bool:
    """An image file nnfit reads: a known suffix (any case), not hidden."""
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()


def _images_under(folder: Path, outer: tuple[Path, ...]) -> list[Path]:
    """Every image under ``folder``, in its subfolders too, sorted by path (as torchvision's
    ImageFolder reads a class folder).

    Hidden files and folders are skipped. A folder symlink is followed unless it leads back to
    ``folder`` or a folder holding it (``outer``: the real paths of the folders walked so far,
    from the tree's root): a loop ends there instead of walking forever.
    """
    here = (*outer, folder.resolve())
    out: list[Path] = []
    for p in _entries(folder):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if p.resolve() not in here:
                out += _images_under(p, here)
        elif _is_image(p):
            out.append(p)
    return sorted(out, key=lambda p: p.relative_to(folder).parts)


def _entries(folder: Path) -> list[Path]:
    """The files and folders in ``folder``, sorted by name.

    Raises:
        DataError: the folder cannot be read (no permission), naming it.
    """
    try:
        return sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise DataError(f"{printable(folder)}: cannot read the folder ({e.strerror or e})") from None


def list_folder(root: str | Path, *, labelled: bool) -> ImageFiles:
    """The images of a class-folder tree ``root/<label>/**/*.png|jpg|jpeg|bmp``, sorted by path.

    Each class folder's images are read from its subfolders too (every image under it has
    its label). Hidden files and folders and files of other types are skipped; a folder
    symlink is followed unless it loops back into its own path. Unlabelled (``predict``),
    images directly in ``root`` are read too, and every image of the class folders.

    Raises:
        DataError: ``root`` is not a folder; labelled, an image outside a class folder or
            no image at all, naming the folder.
    """
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"{printable(r)}: not a folder")
    entries = _entries(r)
    loose = [p for p in entries if _is_image(p)]
    paths: list[Path] = []
    labels: list[str] = []
    for d in (p for p in entries if p.is_dir() and not p.name.startswith(".")):
        files = _images_under(d, (r.resolve(),))
        paths += files
        labels += [d.name] * len(files)
    if labelled and loose:
        raise DataError(f"{printable(loose[0])}: an image outside a class folder: put each image in a "
                        f"folder named after its label ({printable(r)}/<label>/{printable(loose[0].name)})")
    if not paths and not loose:
        where = f"{printable(r)}/<label>/" if labelled else f"{printable(r)} or its class folders"
        raise DataError(f"{printable(r)}: no images ({SUFFIXES_TEXT} files in {where})")
    check_names([r.absolute(), *loose, *paths])
    if not labelled:
        return ImageFiles(loose + paths, None, str(r), r)
    return ImageFiles(paths, np.asarray(labels, dtype=object), str(r), r)


def files_from_list(items: Sequence[str | Path], source: str, *, labelled: bool) -> ImageFiles:
    """Image files as given; labelled, each file's label is the name of its folder.

    Raises:
        DataError: a file that is missing or not a regular file (a FIFO would block its
            reader), or whose name is not UTF-8 (:func:`check_names`), naming it.
    """
    paths = [Path(p) for p in items]
    for p in paths:
        _check_regular(p)
    check_names([p.absolute() for p in paths])
    labels = np.asarray([p.parent.resolve().name for p in paths], dtype=object) if labelled else None
    return ImageFiles(paths, labels, source, common_folder(paths))


def check_names(paths: Sequence[Path]) -> None:
    """Refuse a file or folder name that is not UTF-8: the run's ``test.csv``, predictions and
    labels are UTF-8 text, which cannot hold it.

    Raises:
        DataError: naming the first such path, its odd bytes escaped (``\\xff``).
    """
    for p in paths:
        try:
            str(p).encode("utf-8")
        except UnicodeEncodeError:  # the bytes os.fsdecode could not decode, kept as surrogates
            raise DataError(f"{printable(_shown(p))}: the name is not UTF-8 text: rename the file or "
                            "folder (test.csv, predictions and labels are written as UTF-8)") from None


def _check_regular(p: Path) -> None:
    """Refuse a path that is not a regular file (symlinks followed) before anything opens it:
    opening a FIFO blocks until something writes to it.

    Raises:
        DataError: "file not found" or "not a regular file", naming it.
    """
    if not p.is_file():
        what = "not a regular file (a folder, FIFO or device)" if p.exists() else "file not found"
        raise DataError(f"{printable(_shown(p))}: {what}")


def _shown(p: Path) -> str:
    """``p`` for a message: bytes that are not UTF-8 as ``\\xff`` escapes."""
    return os.fsencode(p).decode("utf-8", "backslashreplace")


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
def _eight_bit(im: Any, path: Path) -> Any:
    """``im`` as an 8-bit "L" (greyscale modes) or "RGB" (every other) Pillow image.

    Raises:
        DataError: a mode with no fixed range of values ("F": float pixels), 32-bit values
            outside 0..65535, or a mode Pillow cannot convert, naming the file and the mode.
    """
    from PIL import Image

    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode in GREY_MODES:
        return im.convert("L")  # bilevel "1" as 0/255; alpha dropped
    if mode in WIDE_MODES:
        a = np.asarray(im).astype(np.int64)
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise DataError(f"{printable(path)}: image mode {mode!r} with values {lo}..{hi}, outside the "
                            "16-bit range 0..65535: save it as an 8- or 16-bit image")
        return Image.fromarray((a >> 8).astype(np.uint8))  # 2-D uint8: mode "L"
    if mode == "F":  # floats have no range to scale from (0..1? 0..255?): not guessed
        raise DataError(f"{printable(path)}: image mode 'F' (32-bit float pixels) has no fixed range of "
                        "values: save it as an 8- or 16-bit image, or pass the pixels as a float array")
    if mode in ("P", "PA"):
        im = im.convert("RGBA")  # a palette's transparency goes through RGBA, then is dropped
    try:
        return im.convert("RGB")  # RGBA, CMYK, YCbCr, LAB, HSV...
    except ValueError:
        raise DataError(f"{printable(path)}: image mode {mode!r} cannot be read as greyscale or RGB: "
                        "save it as an 8-bit greyscale or RGB image") from None


def _decode_one(path: Path, mode: str | None,
                size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """One image as (H, W) or (H, W, 3) uint8: ``mode`` "L" or "RGB", or None to keep
    greyscale as "L" and colour as "RGB"; resized to ``size`` (H, W) when given. With ``mode``
    None, an RGB image whose channels agree within :data:`GREY_TOLERANCE` comes with its "L"
    conversion too (second, else None), made as a greyscale model's ``mode="L"`` makes it."""
    from PIL import Image

    def sized(im: Any) -> np.ndarray:
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(im)

    with _reading(path), Image.open(path) as im:
        im.load()  # decodes here, inside _reading: a truncated file fails now, named
        im = _eight_bit(im, path)
        if mode is not None and im.mode != mode:
            im = im.convert(mode)
        grey = None
        if mode is None and im.mode == "RGB" and _spread(np.asarray(im)) <= GREY_TOLERANCE:
            grey = sized(im.convert("L"))
        return sized(im), grey


def _header(path: Path) -> tuple[int, int, bool]:
    """(H, W, colour) of an image from its header, its pixels not decoded: whether it opens
    as a colour mode (it may still be a grey picture saved as RGB)."""
    from PIL import Image

    _check_regular(path)
    with _reading(path), Image.open(path) as im:
        return im.height, im.width, im.mode not in GREY_MODES | WIDE_MODES | {"L", "F"}


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Pillow's errors while reading ``path`` as one DataError naming it.

    Raises:
        DataError: a decompression bomb, a missing file, or any other failure (Pillow raises
            many types for damaged files: all mean "unreadable").
    """
    from PIL import Image

    try:
        yield
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{printable(path)}: refused as a possible decompression bomb "
                        f"({_first_line(e)})") from None
    except FileNotFoundError:
        raise DataError(f"{printable(path)}: file not found") from None
    except Exception as e:
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
            None: one channel unless some image has colour (RGB channels that differ by more
            than :data:`GREY_TOLERANCE` somewhere).
        shape: (H, W) every image must have (a trained model's), or with ``resize`` is
            resized to; None: the first image's size, which every other one must have.
        resize: resize (bilinear) every image to ``shape``.

    Returns:
        uint8 tensor (N, C, H, W).

    Raises:
        DataError: an unreadable, truncated or decompression-bomb image, one of another
            size (both sizes named) or larger than :data:`MAX_IMAGE_VALUES`, naming the file;
            images whose pixels cannot fit in memory (:func:`_check_memory`). Every header
            is read, and these checked, before any image is decoded.
    """
    mode = None if channels is None else "L" if channels == 1 else "RGB"
    size = shape if resize else None
    with warnings.catch_warnings(), ThreadPoolExecutor(_workers(len(paths))) as pool:
        # Pillow warns (and does not refuse) between its pixel limit and twice it: refused here
        # too, in every decoding thread (they read the filters this block set).
        warnings.simplefilter("error", _bomb_warning())
        # every header first (cheap): a set of mixed sizes, or too large to hold, is refused
        # before a single image is decoded
        headers = list(pool.map(_header, paths))
        h, w = _check_sizes(paths, [(hh, ww) for hh, ww, _ in headers], shape, resize, channels or 1)
        _check_memory(paths, [colour for _, _, colour in headers], channels, h, w)
        decoded = list(pool.map(lambda p: _decode_one(p, mode, size), paths))
    if all(a.ndim == 2 or grey is not None for a, grey in decoded):  # a greyscale set: one channel
        arrays = [a if grey is None else grey for a, grey in decoded]
    else:
        arrays = [a for a, _ in decoded]
    _check_sizes(paths, [a.shape[:2] for a in arrays], (h, w), False)  # as the headers said
    c = channels or (3 if any(a.ndim == 3 for a in arrays) else 1)
    out = np.empty((len(arrays), c, h, w), dtype=np.uint8)
    for i, a in enumerate(arrays):
        out[i] = a.transpose(2, 0, 1) if a.ndim == 3 else a  # a greyscale image fills every channel
    return torch.from_numpy(out)


def _check_sizes(paths: Sequence[Path], sizes: Sequence[tuple[int, int]], shape: tuple[int, int] | None,
                 resize: bool, channels: int = 1) -> tuple[int, int]:
    """The (H, W) the images become: ``shape``, or the first image's; without ``resize``
    every image must have it, and ``channels`` (at least) of it must be a size a model reads.

    Raises:
        DataError: an image of another size, both sizes named, or an image larger than a
            model reads (:data:`MAX_IMAGE_VALUES`), naming the file.
    """
    h, w = shape if shape is not None else sizes[0]
    if not resize:
        for p, (ph, pw) in zip(paths, sizes, strict=True):
            if (ph, pw) != (h, w):
                got = f"{printable(p)}: image of {ph}x{pw} pixels (HxW), but"
                if shape is not None:  # a trained model's size: resizing is decided at training
                    raise DataError(f"{got} the model reads {h}x{w} images (a model trained with "
                                    "--image-size H,W resizes every image)")
                raise DataError(f"{got} {printable(paths[0])} is {h}x{w}: pass --image-size H,W "
                                "(image_size=(H, W)) to resize every image")
    if channels * h * w > MAX_IMAGE_VALUES:
        raise DataError(f"{printable(paths[0])}: images of {channels}x{h}x{w} (C, H, W) hold more values "
                        f"than a model reads ({channels * h * w:,}; at most {MAX_IMAGE_VALUES:,}): pass "
                        "--image-size H,W (image_size=(H, W)) to resize them")
    return h, w


def _check_memory(paths: Sequence[Path], colour: Sequence[bool], channels: int | None, h: int,
                  w: int) -> None:
    """Refuse decoding images whose pixels cannot fit in this machine's memory.

    The estimate is a lower bound: every decoded image (RGB for a colour mode, unless
    ``channels`` says otherwise) is held until all are stacked into the tensor, of at least
    ``channels`` (else one) channel.

    Raises:
        DataError: naming the first file, the count, the size and both amounts of memory.
    """
    held = sum(channels or (3 if c else 1) for c in colour) + len(paths) * (channels or 1)
    need, have = held * h * w, memory_bytes(torch.device("cpu"))
    if have is None or need <= have:
        return
    raise DataError(f"{printable(paths[0])} and {len(paths) - 1:,} more: decoding {len(paths):,} images of "
                    f"{h}x{w} pixels needs at least {_size(need)} (the tensor and the decoded "
                    f"images) but this machine has {_size(have)} of memory: decode them smaller "
                    "(--image-size H,W) or fewer at a time")


def _size(n: int) -> str:
    """Bytes in the largest binary unit that keeps a number of at least 1."""
    unit = next(u for u in (3, 2, 1, 0) if n >= 1024**u or u == 0)
    return f"{n / 1024**unit:.1f} {('B', 'KiB', 'MiB', 'GiB')[unit]}"


def _spread(rgb: np.ndarray) -> int:
    """The largest difference between an RGB image's channels at any pixel.

    Shape:
        rgb: (H, W, 3) uint8.
    """
    return int(np.ptp(rgb, axis=2).max()) if rgb.size else 0


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


def cached(files: ImageFiles, size: tuple[int, int] | None, make: Callable[[], Tensor]) -> Tensor:
    """The decoded images of ``files`` (resized to ``size`` (H, W) when given) from
    ``<root>/.nnfit-cache/<sha256>.safetensors``, or ``make()`` and a new cache file. A damaged
    cache file (:func:`_cache_fits`) is decoded again and rewritten, with a warning; a folder
    that cannot be written is skipped, with a warning."""
    from ..checkpoint import load_tensors, save_tensors

    if files.root is None:
        warn(f"{printable(files.source)}: the files share no folder to keep a cache in: decoding "
             "without one")
        return make()
    path = files.root / CACHE_DIR / f"{cache_key(files, f'size={size}')}.safetensors"
    if path.is_file():
        try:
            tensors, _ = load_tensors(path)
            t = tensors.get("pixels")
            if t is not None and _cache_fits(t, files, size):
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


def _cache_fits(t: Tensor, files: ImageFiles, size: tuple[int, int] | None) -> bool:
    """Whether a cache file's tensor can be the decoded ``files``: uint8 (N, 1 or 3, H, W)
    of their count and size (``size``, else the first file's, from its header), and its first
    image the first file decoded again (a cache of other images of that count and size is
    caught here, at the cost of one image).

    Raises:
        DataError: the first file cannot be read (decoding them all would fail alike).
    """
    if not (t.dtype == torch.uint8 and t.ndim == 4 and len(t) == len(files) and t.shape[1] in (1, 3)):
        return False
    hw = size if size is not None else _header(files.paths[0])[:2]
    if tuple(t.shape[2:]) != tuple(hw):
        return False
    first = decode(files.paths[:1], channels=t.shape[1], shape=hw, resize=size is not None)
    return torch.equal(first[0], t[0])
