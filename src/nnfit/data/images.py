"""The image layout: image folders, image files, arrays and tables of pixel columns as one
tensor of images, per-channel normalisation fitted on the training split, and the source the
loop trains a CNN from.

Forms read (for training, evaluation and prediction alike):

* a class-folder tree ``root/<label>/*.png|jpg|jpeg|bmp`` (the folder names are the labels);
* image files (a path or a list; labels from each file's folder name when needed);
* a CSV/Parquet table with a ``path`` column (paths relative to the table's folder; labels in
  a ``label`` column, or the column ``target`` names) -- a run's ``test.csv`` for a folder;
* a NumPy array or tensor (N, C, H, W) or (N, H, W), with ``y``;
* a table of pixel columns, all numeric: k*k columns are (1, k, k) images, 3*k*k are three
  (k, k) planes (the bundled ``digits``: 64 columns, 8x8).

Files are decoded once into one uint8 tensor (:mod:`.image_files`); batches are normalised on
the device and augmented for training (:mod:`.augment`).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..errors import ConfigError, DataError, printable
from ..tasks import Task
from .augment import ImageData, ImageNormalize
from .columns import CSV_SUFFIXES, Columns, columns_from_frame, feature_matrix, is_frame
from .image_files import (
    FOLDERS,
    GREY_TOLERANCE,
    MAX_IMAGE_VALUES,
    ImageFiles,
    cached,
    check_classes,
    decode,
    files_from_list,
    list_folder,
)
from .layouts import IMAGE_SUFFIXES, is_image_path
from .prepare import Prepared, _fitted_task, target_array
from .preprocess import InputSchema, Preprocessor
from .read import read_table
from .split import holdout, holds_out, split_indices, stratify_labels

LABEL = "label"  # the label column of a table of image paths, unless --target names another
PATH = "path"


@dataclass
class Images:
    """Images read from one of the forms, before any fitting.

    Attributes:
        pixels: uint8 for decoded files, float32 for arrays and pixel tables.
        labels: one label (or target value) per image, or None.
        labels_source: the labels' name in messages.
        source: the data's name in messages.
        paths: the image files as given, for files (a prediction file's ``path`` column).
        columns: the pixel columns of a pixel table, in order.
        folder_labels: the labels are the files' class folders.
    """

    pixels: Tensor
    labels: np.ndarray | None
    source: str
    paths: list[str] | None = None
    columns: list[str] | None = None
    labels_source: str = "labels"
    folder_labels: bool = False


@dataclass
class ImageLayout:
    """The fitted image layout saved with a model (``preprocess.layout``).

    Attributes:
        channels, height, width: the images the model reads (1 or 3 channels).
        resize: images of another size are resized to (height, width) (``image_size`` was
            set); otherwise they are refused.
        mean, std: per-channel statistics of the training split's pixels.
        augment: the training augmentation: "none", "crop", "flip" or "crop,flip".
        columns: the pixel columns, for a model trained on a table of them.
    """

    kind: ClassVar[str] = "image"
    channels: int
    height: int
    width: int
    resize: bool
    mean: list[float]
    std: list[float]
    augment: str = "none"
    columns: list[str] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "channels": self.channels, "height": self.height, "width": self.width,
                "resize": self.resize, "mean": list(self.mean), "std": list(self.std),
                "augment": self.augment, "columns": self.columns}

    def model_defaults(self, name: str | None) -> dict[str, Any]:
        """``in_channels`` for a CNN, and ``channels`` by the images' size
        (:func:`default_channels`: a spec that gives its own keeps them).

        Raises:
            ConfigError: a built-in family that cannot read images.
        """
        if name == "cnn":
            return {"in_channels": self.channels, "channels": default_channels(self.height, self.width)}
        raise ConfigError(f"model {name!r} cannot read images: use --model cnn (model='cnn'), or pass "
                          "a module of your own that takes (N, C, H, W) float32 images")

    def source(self, pixels: Tensor, target: Tensor | None = None, *, train: bool = False) -> ImageData:
        """A source of these images; augmented (training batches only) when ``train``."""
        ops = tuple(self.augment.split(",")) if train and self.augment != "none" else ()
        return ImageData(pixels, target, mean=self.mean, std=self.std, augment=ops)

    def inputs(self, pre: Preprocessor, x: Any, source: str,
               target: str | None) -> tuple[ImageData, str, dict[str, np.ndarray]]:
        """Unlabelled images as a source, their name, and the ``path`` of each for files."""
        imgs = read_images(x, None, target, source, self, labelled=False)
        keys = {} if imgs.paths is None else {PATH: np.asarray(imgs.paths, dtype=object)}
        return self.source(imgs.pixels), imgs.source, keys

    def labelled(self, pre: Preprocessor, task: Task, x: Any, y: Any, target: str | None,
                 source: str) -> tuple[ImageData, str]:
        """Labelled images as a source (labels from class folders, a label column or ``y``)."""
        imgs = read_images(x, y, target, source, self, labelled=True, text_labels=_text_classes(task))
        assert imgs.labels is not None
        if imgs.folder_labels:
            _check_folders(imgs.labels, task, imgs.source)
        return self.source(imgs.pixels, task.encode_target(imgs.labels, imgs.labels_source)), imgs.source

    def as_module(self) -> nn.Module:
        """The normalisation as a module, to put in front of the model (``Learner.as_module``):
        it takes (N, C, H, W) images of the trained size, uint8 or float, unnormalised."""
        return ImageNormalize(self.mean, self.std)


def default_channels(height: int, width: int) -> list[int]:
    """A CNN's channels for images of this size when none are given: 32, 64, 128, 256 for
    as many stages as halve the shorter side ``s`` down to about 4 pixels, 2 to 4 of them
    (``ceil(log2(s / 4))``: [32, 64] up to 16 px, [32, 64, 128] up to 32 px, four stages
    above). On 1,400 digits upscaled to 32x32, 10 epochs of [32, 64] reached 0.90 validation
    accuracy (0.88 held out), [32, 64, 128] 0.98 (0.99).

    Example:
        >>> default_channels(8, 8), default_channels(32, 32), default_channels(256, 64)
        ([32, 64], [32, 64, 128], [32, 64, 128, 256])
    """
    s, stages = min(height, width), 0
    while 4 << stages < s:
        stages += 1
    return [32, 64, 128, 256][:min(max(stages, 2), 4)]


def _text_classes(task: Task) -> bool:
    """Whether ``task`` is a classifier whose labels are all text (class folders' names)."""
    known = getattr(getattr(task, "labels", None), "classes", None)
    return bool(known) and all(isinstance(c, str) for c in known)


def _check_folders(labels: np.ndarray, task: Task, source: str) -> None:
    """Class folders must be labels the model knows; one that is not is named as a folder.

    Raises:
        DataError: naming the folder tree and the first unknown class folders.
    """
    known = getattr(getattr(task, "labels", None), "classes", None)
    if known is None:  # not a classifier: its own encode_target says what is wrong
        return
    names = {str(c) for c in known}
    unknown = [v for v in dict.fromkeys(labels.tolist()) if str(v) not in names]
    if unknown:
        shown = ", ".join(printable(repr(v)) for v in unknown[:5])
        what = f"class folder {shown} is not a label" if len(unknown) == 1 else \
            f"class folders {shown} are not labels"
        raise DataError(f"{printable(source)}: {what} the model knows (known: "
                        f"{', '.join(printable(repr(c)) for c in known[:10])})")


def from_dict(d: dict[str, Any]) -> ImageLayout:
    """A saved image layout (checked against ``nnfit.io.validate.LAYOUT`` already)."""
    return ImageLayout(d["channels"], d["height"], d["width"], d["resize"], list(d["mean"]),
                       list(d["std"]), d["augment"], d["columns"])


# ------------------------------------------------------------------------------ reading
def read_images(x: Any, y: Any, target: str | None, source: str, layout: ImageLayout | None, *,
                labelled: bool, config: TrainConfig | None = None, text_labels: bool = False) -> Images:
    """Read any image form (see the module docs) into one tensor.

    Args:
        x: the data; y: labels for arrays (or to replace folder labels), else None.
        target: a table's label column (default ``label`` for a table of paths).
        source: the data's name in messages, when it has none of its own.
        layout: a trained model's layout (channels, size, pixel columns), or None to take
            them from the data (training).
        labelled: labels are needed (training, evaluation).
        config: the training settings (``image_size``, ``image_cache``); None after training.
        text_labels: the model's labels are text: a table's label column is read as the
            text it holds (a class folder "007" stays "007", not the number 7).

    Raises:
        DataError: unreadable or inconsistent data, in one line naming the file or column.
    """
    x = _table_file(x, target, text_labels)
    files = image_files(x, target, source, labelled=labelled)
    if files is not None:
        if not len(files):
            raise DataError(f"{printable(files.source)}: no images")
        where = f"{files.source}: {files.labels_from}" if y is None else f"{files.source} labels"
        labels = files.labels if y is None else target_array(y, where)
        if labels is not None and len(labels) != len(files):
            raise DataError(f"{printable(files.source)}: {len(files)} images but {len(labels)} labels")
        pixels = _decode_files(files, layout, config)
        return Images(pixels, labels, files.source, [str(p) for p in files.paths], labels_source=where,
                      folder_labels=y is None and files.labels_from == FOLDERS)
    cols = _columns(x, source, target)
    if cols is not None:
        return _pixel_table(cols, y, target, layout, labelled)
    return _array(x, y, source, layout, labelled)


def image_files(x: Any, target: str | None, source: str, *, labelled: bool) -> ImageFiles | None:
    """``x`` as image files when it is a folder, image files or a table of paths; else None."""
    if isinstance(x, ImageFiles):
        return x
    if isinstance(x, (str, Path)) and Path(x).is_dir():
        return list_folder(x, labelled=labelled)
    if is_image_path(x):
        items = [x] if isinstance(x, (str, Path)) else list(x)
        name = str(x) if isinstance(x, (str, Path)) else "image files"
        return files_from_list(items, name, labelled=labelled)
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, (str, Path)) for v in x):
        odd = next(v for v in x if Path(v).suffix.lower() not in IMAGE_SUFFIXES)
        raise DataError(f"{printable(odd)}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
    cols = _columns(x, source, target)
    if cols is None or PATH not in cols.arrays:
        return None
    return _path_table(cols, target, labelled)


def _table_file(x: Any, target: str | None, text_labels: bool = False) -> Any:
    """A path that is neither a folder nor an image file read as a table (CSV, Parquet)
    once (a table of paths with ``text_labels``: see :func:`_text_path_table`); anything
    else as it is."""
    if isinstance(x, (str, Path)) and not is_image_path(x):
        text = _text_path_table(Path(x), target or LABEL) if text_labels else None
        return text if text is not None else read_table(x, exclude=target or LABEL)
    return x


def _text_path_table(p: Path, name: str) -> Columns | None:
    """The ``path`` and label column ``name`` of a CSV table of image paths as the text the
    file holds, for a model whose labels are text (class folders' names); None when ``p``
    is not such a table (or cannot be read: :func:`read_table` then says why).

    A CSV reader infers a column of "00001" or "1.0" as numbers, and 1 no longer tells apart
    the class folders "1", "01" and "1.0"; it reads "NA" as a missing value. A Parquet file's
    types are stored, not inferred: it is read as it is.
    """
    if p.suffix.lower() not in CSV_SUFFIXES or not p.is_file():
        return None
    import pyarrow as pa
    import pyarrow.csv as pacsv

    # the parse options read_table's readers use, so the rows are the same rows
    parse = pacsv.ParseOptions(delimiter="\t" if p.suffix.lower() == ".tsv" else ",", newlines_in_values=True)
    columns = [PATH, name]
    convert = pacsv.ConvertOptions(include_columns=columns, column_types=dict.fromkeys(columns, pa.string()),
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    try:  # a table without either column fails here, before its rows are parsed
        table = pacsv.read_csv(p, parse_options=parse, convert_options=convert)
    except (pa.ArrowException, OSError):
        return None
    if table.num_rows == 0:
        return None
    arrays = {c: np.asarray(table.column(c).to_pylist(), dtype=object) for c in (PATH, name)}
    return Columns(str(p), arrays, kinds=dict.fromkeys(arrays, "text"))


def _columns(x: Any, source: str, target: str | None) -> Columns | None:
    """A table (file, DataFrame or Columns) as Columns, None for arrays."""
    if isinstance(x, (str, Path)):
        return read_table(x, exclude=target or LABEL)
    if isinstance(x, Columns):
        return x.copy()
    if is_frame(x):
        return columns_from_frame(x, source, exclude=target or LABEL)
    return None


def _path_table(cols: Columns, target: str | None, labelled: bool) -> ImageFiles:
    """A table's ``path`` column as files (relative paths from the table's folder) and its
    label column (``target``, or ``label``) as their labels when ``labelled``."""
    src = Path(cols.source)
    base = src.parent if src.is_file() else Path.cwd()
    paths = []
    for i, v in enumerate(cols.arrays[PATH].tolist()):
        if not isinstance(v, str) or not v:
            raise DataError(f"{printable(cols.source)}: column 'path' row {cols.row(i)} is not a file "
                            f"path: {printable(repr(v))}")
        p = Path(v)
        paths.append(p if p.is_absolute() else base / p)
    labels = None
    if labelled:
        name = target or LABEL
        if name not in cols.arrays:
            raise DataError(f"{printable(cols.source)}: no label column {name!r} beside 'path' (name it with "
                            "--target)")
        labels = cols.arrays[name]
    files = files_from_list(paths, cols.source, labelled=False)
    files.labels, files.labels_from = labels, f"column {target or LABEL!r}"
    return files


def _decode_files(files: ImageFiles, layout: ImageLayout | None, config: TrainConfig | None) -> Tensor:
    """Decode the files: as the trained ``layout`` reads them, or taking channels and size
    from the images (``config.image_size`` resizes), through the cache when asked."""
    if layout is not None:
        return decode(files.paths, channels=layout.channels, shape=(layout.height, layout.width),
                      resize=layout.resize)
    size = tuple(config.image_size) if config is not None and config.image_size else None
    make = lambda: decode(files.paths, shape=size, resize=size is not None)  # noqa: E731
    if config is not None and config.image_cache:
        return cached(files, size, make)
    return make()


def _planes(n: int, source: str) -> tuple[int, int, int]:
    """The (C, H, W) of ``n`` pixel columns: k*k greyscale or 3*k*k RGB planes."""
    for c in (1, 3):
        k = math.isqrt(n // c)
        if n % c == 0 and k * k * c == n and k > 0:
            return c, k, k
    raise DataError(f"{printable(source)}: {n} pixel columns are not k*k (greyscale) or 3*k*k (RGB planes) "
                    "for any k: pass the images as an (N, C, H, W) array")


def _pixel_table(cols: Columns, y: Any, target: str | None, layout: ImageLayout | None,
                 labelled: bool) -> Images:
    """A table of pixel columns: its label column (``target``) or ``y`` as labels, the rest
    (a trained model's own columns, by name) as float32 images."""
    labels, where = None, f"{cols.source} labels"
    if y is not None:
        labels = target_array(y, where)
    elif target is not None and target in cols.arrays:
        labels, where = cols.pop(target), f"{cols.source}: column {target!r}"
    elif labelled:
        raise DataError(f"{printable(cols.source)}: name the label column of the pixel table (--target, "
                        "target=...)")
    elif target is not None:
        pass  # prediction: the label column may be absent
    names = layout.columns if layout is not None and layout.columns else cols.names
    x = feature_matrix(cols, names)  # every column numeric and finite, or named with its row
    shape = _planes(len(names), cols.source) if layout is None else layout.shape
    if math.prod(shape) != len(names):
        raise DataError(f"{printable(cols.source)}: {len(names)} pixel columns, but the model reads "
                        f"{'x'.join(map(str, shape))} images ({math.prod(shape)} columns)")
    pixels = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(len(x), *shape)
    _check_size(pixels, layout, cols.source)
    return Images(pixels, labels, cols.source, None, list(names), where)


def _array(x: Any, y: Any, source: str, layout: ImageLayout | None, labelled: bool) -> Images:
    """An (N, C, H, W) or (N, H, W) array or tensor: uint8 stays uint8 (also integers within
    0..255), anything else becomes float32."""
    if isinstance(x, Tensor):
        t = x.detach().cpu()
    elif isinstance(x, np.ndarray):
        if x.dtype.kind not in "iufb":
            raise DataError(f"{source}: images must be numeric, got an array of {x.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise DataError(f"{source}: images must be a folder, image files, a table or an (N, C, H, W) "
                        f"array, got {type(x).__name__}")
    if t.ndim == 3:
        t = t.unsqueeze(1)
    if t.ndim != 4 or t.shape[1] not in (1, 3):
        raise DataError(f"{source}: images must be (N, C, H, W) with C 1 or 3, or (N, H, W); got shape "
                        f"{tuple(x.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        t = t.float()
        if not bool(torch.isfinite(t).all()):
            raise DataError(f"{source}: images hold NaN or infinite values")
    elif t.dtype != torch.uint8:
        small = len(t) == 0 or (int(t.min()) >= 0 and int(t.max()) <= 255)
        t = t.to(torch.uint8) if small else t.float()
    _check_size(t, layout, source)
    if layout is not None and layout.channels == 3 and t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1).contiguous()  # greyscale for an RGB model: every channel
    labels = None if y is None else target_array(y, f"{source} labels")
    if labelled and labels is None:
        raise DataError(f"{source}: labels are missing (pass y)")
    if labels is not None and len(labels) != len(t):
        raise DataError(f"{source}: {len(t)} images but {len(labels)} labels")
    return Images(t, labels, source, labels_source=f"{source} labels")


def _check_size(t: Tensor, layout: ImageLayout | None, source: str) -> None:
    """Images in memory must have the trained size (they are never resized)."""
    if layout is None:
        return
    c, h, w = t.shape[1:]
    if (h, w) != (layout.height, layout.width) or c not in (1, layout.channels):
        raise DataError(f"{printable(source)}: images of shape {tuple(t.shape[1:])} (C, H, W), but the model "
                        f"reads {layout.shape}")


# ------------------------------------------------------------------------------ training
def channel_stats(pixels: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of images, in float64: exact from a histogram
    for uint8 (no float copy of the images), chunked for float. A constant channel gets std 1.

    Shape:
        pixels: (N, C, H, W).
    """
    from .preprocess import column_stats

    means, stds = [], []
    for c in range(pixels.shape[1]):
        plane = pixels[:, c].reshape(-1)
        if plane.dtype == torch.uint8:
            counts = torch.bincount(plane, minlength=256).double()
            values = torch.arange(256, dtype=torch.float64)
            n = counts.sum()
            mean = (counts * values).sum() / n
            std = ((counts * (values - mean).square()).sum() / n).sqrt()
            means.append(float(mean))
            stds.append(float(std) if std > 0 else 1.0)
        else:
            m, s = column_stats(plane.reshape(-1, 1))
            means.append(m[0])
            stds.append(s[0])
    return means, stds


def resolve_augment(setting: str, pixels: Tensor) -> str:
    """The training augmentation for ``setting``. "auto": random crops and horizontal flips
    for colour images, none for greyscale ones (one channel, or three that agree within
    ``GREY_TOLERANCE`` of 255 at every pixel: an array of grey images as RGB): digits and text
    must never be mirrored, and a crop's shift of an eighth of the image cost the bundled
    digits accuracy (test accuracy over four seeds 0.9868 with crops, 0.9909 without).

    Shape:
        pixels: (N, C, H, W), uint8 or float.
    """
    if setting != "auto":
        return setting
    return "none" if pixels.shape[1] == 1 or _grey(pixels) else "crop,flip"


def _grey(pixels: Tensor) -> bool:
    """Whether every pixel's channels agree within ``GREY_TOLERANCE`` (in 0..255; a float
    array's values scaled to its own range), a few thousand images at a time."""
    tolerance = float(GREY_TOLERANCE)
    if pixels.dtype != torch.uint8:
        tolerance *= (float(pixels.max()) - float(pixels.min())) / 255
    for chunk in pixels.split(4096):
        c = chunk.float()
        if float((c.amax(dim=1) - c.amin(dim=1)).max()) > tolerance:
            return False
    return True


def prepare(x: Any, y: Any = None, *, target: str | None, val: Any, task: str | Task,
            config: TrainConfig, resumed: dict[str, Any] | None) -> Prepared:
    """Read images, split off validation (stratified), fit the task and the normalisation on
    the training split (or keep a resumed run's), and build the sources.

    Raises:
        DataError: bad images or labels (see :func:`read_images`), or a folder of one class.
        ConfigError: ``image_size`` for images in memory of another size.
    """
    pre = None if resumed is None else Preprocessor.from_dict(resumed["preprocess"])
    layout = None if pre is None else pre.layout
    if is_image_path(x) and y is None and layout is None:  # the folders are the labels
        check_classes(image_files(x, target, "training data", labelled=True))
    # read as the first run read it (a resumed run too: same decoding, same cache file), so the
    # data fingerprint tells whether the files changed
    imgs = read_images(x, y, target, "training data", None, labelled=True, config=config)
    if config.image_size and tuple(imgs.pixels.shape[2:]) != tuple(config.image_size):
        raise ConfigError(f"image_size {tuple(config.image_size)}: images in memory are never resized, "
                          f"and these are {tuple(imgs.pixels.shape[2:])}: resize them yourself, or drop "
                          "image_size")
    if layout is not None and tuple(imgs.pixels.shape[1:]) != layout.shape:
        raise DataError(f"{printable(imgs.source)}: images of shape {tuple(imgs.pixels.shape[1:])} "
                        f"(C, H, W), but the run resumed trained on {layout.shape}")
    if math.prod(imgs.pixels.shape[1:]) > MAX_IMAGE_VALUES:  # a saved layout could not be loaded
        raise DataError(f"{printable(imgs.source)}: images of shape {tuple(imgs.pixels.shape[1:])} (C, H, W) "
                        f"hold more values than a model reads (at most {MAX_IMAGE_VALUES:,}): resize them "
                        "(--image-size H,W for files)")
    assert imgs.labels is not None
    pixels, labels = imgs.pixels, imgs.labels
    va_pixels = va_labels = None
    y_source = imgs.labels_source
    keys: dict[str, np.ndarray] = {}
    if val is None and holds_out(config):
        tr, va = holdout(len(labels), config, stratify_labels(labels, task), source=y_source)
        va_pixels, va_labels, pixels, labels = pixels[va], labels[va], pixels[tr], labels[tr]
        keys["row"] = np.asarray(va)
        if imgs.paths is not None:  # the worst examples name their files
            keys["path"] = np.asarray(imgs.paths, dtype=object)[va]
    fitted = _fitted_task(task, labels, config, resumed, y_source)
    if layout is None:
        mean, std = channel_stats(pixels)
        c, h, w = pixels.shape[1:]
        layout = ImageLayout(c, h, w, bool(config.image_size), mean, std,
                             resolve_augment(config.augment, pixels), imgs.columns)
        pre = Preprocessor("single", [InputSchema("x", None, [c, h, w], "float32")], None, layout)
    assert pre is not None
    train = layout.source(pixels, fitted.encode_target(labels, y_source), train=True)
    val_src = None
    if val is not None:
        vx, vy = val if isinstance(val, tuple) and len(val) == 2 else (val, None)
        val_src, _ = layout.labelled(pre, fitted, vx, vy, target, "validation data")
    elif va_pixels is not None:
        val_src = layout.source(va_pixels, fitted.encode_target(va_labels, y_source))
    return Prepared(fitted, pre, train, val_src, target, keys)


def hold_out(data: Any, fraction: float, config: TrainConfig, target: str | None,
             task: str) -> tuple[Any, Any, int]:
    """The training part and the test part (``--test-split``) of image data and the test
    size: files (stratified by label), or rows of a table of paths or pixels.

    Returns:
        (training part, test part, number of test images); the training part is image files
        with their labels (a class folder's subfolders are not labels) or a table, as
        :func:`prepare` reads them.

    Raises:
        DataError: a folder with no images, images outside class folders, one class only.
    """
    data = _table_file(data, target)
    if is_frame(data):
        data = columns_from_frame(data, "training data", exclude=target or LABEL)
    if isinstance(data, Columns):
        name = target or LABEL
        if name not in data.arrays:
            raise DataError(f"{printable(data.source)}: no label column {name!r} (name it with --target)")
        if fraction <= 0:
            return data, None, 0
        tr, te = split_indices(len(data), fraction, config.seed, stratify_labels(data.arrays[name], task))
        return data.take(tr), data.take(te), len(te)
    files = image_files(data, target, "training data", labelled=True)
    if files is None:
        raise DataError("images must be a folder, image files or a table to hold out a test split")
    assert files.labels is not None
    check_classes(files)
    if fraction <= 0:
        return data, None, 0
    tr, te = split_indices(len(files), fraction, config.seed, stratify_labels(files.labels, task))
    return files.take(tr), files.take(te), len(te)


def write_test(path: Path, test_part: Any, config: TrainConfig, target: str | None) -> Path:
    """Write the run's ``test.csv``: absolute paths and labels for files, the rows of a
    table of pixels as they were; ``nnfit evaluate RUN RUN/test.csv`` reads it back."""
    from ..checkpoint import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if isinstance(test_part, Columns) and PATH not in test_part.arrays:
        w.writerow(test_part.names)
        w.writerows(zip(*[a.tolist() for a in test_part.arrays.values()], strict=True))
    else:
        files = image_files(test_part, target, "test data", labelled=True)
        assert files is not None and files.labels is not None
        w.writerow([PATH, target or LABEL])
        rows = zip(files.paths, files.labels.tolist(), strict=True)
        w.writerows([str(p.resolve()), label] for p, label in rows)
    atomic_write_text(path, buf.getvalue())
    return path
