"""Static-image datasets for evaluation and training, read from local files only (nothing is downloaded).

``build_dataset(name, root=None, split='test', *, train_transforms=False, ...)`` returns a map-style
``torch.utils.data.Dataset`` of ``(image [C, H, W] float32, normalised, label int)``; ``DATASETS`` holds each
dataset's facts (classes, channels, size, mean/std, flip policy) as data, ``dataset_spec(name)`` returns one.

Names: ``mnist``, ``fashion-mnist`` (the original gzipped IDX files, read directly), ``cifar10``,
``cifar100`` (torchvision's loaders on the standard ``cifar-10-batches-py`` / ``cifar-100-python`` folders),
``imagenet`` (torchvision ``ImageFolder`` on ``train/`` and ``val/``), and ``fashion-mnist-subset`` (the first
500 Fashion-MNIST test images shipped in ``weights/data/``, for the demo).

Where data is looked for, in order: ``root`` (when given, only there), the dataset's own environment
variable (``TDBN_ZOO_MNIST``, ``TDBN_ZOO_FASHION_MNIST``, ``TDBN_ZOO_CIFAR10``, ``TDBN_ZOO_CIFAR100``,
``TDBN_ZOO_IMAGENET``), ``$TDBN_ZOO_DATA/<folder>``, ``./data/<folder>``, and system folders where a package
manager puts the data (Debian's ``dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist``). A dataset
that is found nowhere raises ``FileNotFoundError`` listing every place tried.

Transforms (the paper's, Appendix C): evaluation = per-channel normalisation (ImageNet: resize to
``input_size / crop_pct`` and centre crop); training adds a random crop with zero padding (``train_pad``:
4 pixels for 32x32 CIFAR, 2 for 28x28 MNIST / Fashion-MNIST; ImageNet: ``RandomResizedCrop``) and a
horizontal flip -- except for MNIST, whose digits are not mirror-symmetric (a flipped 2 or 5 is not a
digit), so MNIST gets no flip. Fashion-MNIST garments keep their class when mirrored, so it is flipped like
CIFAR.

CIFAR note: the batch files are pickles (the official python layout, which torchvision also reads). They are read
with a restricted unpickler that builds only dicts, lists, strings and numpy arrays, and only because
these are local files the user put there; by default their MD5 sums must match the official release
(``verify=True``) before anything is unpickled.
"""
from __future__ import annotations

import functools
import gzip
import os
import pickle
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from adapters import settings
from eval.cli import main as cli_main
from zoo.errors import InvalidArgumentError, InvalidFileError, MissingFileError
from zoo.fileio import atomic_path
from zoo.tags import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DATASETS", "DatasetSpec", "ArrayImageDataset", "build_dataset", "build_folder_dataset", "build_transform",
           "check_images_labels", "folder_transform",
           "dataset_spec", "find_root", "load_idx_pair", "load_subset", "parse_data_spec", "read_idx",
           "read_npz_arrays", "write_subset", "SUBSET_PATH"]

SPLITS = ("train", "test")
REPO_ROOT = Path(__file__).resolve().parents[2]
SUBSET_PATH = REPO_ROOT / "weights" / "data" / "fashion_mnist_test_subset.npz"
SUBSET_SIZE = 500

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


@dataclass(frozen=True)
class DatasetSpec:
    """What a pipeline needs to know about a dataset. ``folders`` are the sub-folder names tried under
    ``$TDBN_ZOO_DATA`` and ``./data``; ``system_dirs`` are absolute places a package manager installs to."""
    name: str
    kind: str  # 'idx' | 'cifar' | 'imagefolder' | 'npz'
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool
    env: str | None
    folders: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()
    crop_pct: float = 1.0
    train_pad: int = 4  # zero padding of the training random crop (28x28 digits and garments: 2)
    classes: tuple[str, ...] | None = None
    extra: dict = field(default_factory=dict)
    sizes: tuple[int, int] | None = None  # (train, test) images of the official release: a complete copy has them


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("mnist", "idx", 10, 1, 28, (0.1307,), (0.3081,), hflip=False, env="TDBN_ZOO_MNIST",
                train_pad=2, folders=("mnist", "MNIST"), classes=tuple(str(i) for i in range(10)),
                extra=dict(torchvision_folder="MNIST"), sizes=(60000, 10000)),
    DatasetSpec("fashion-mnist", "idx", 10, 1, 28, (0.2860,), (0.3530,), hflip=True, env="TDBN_ZOO_FASHION_MNIST",
                train_pad=2, folders=("fashion-mnist", "FashionMNIST", "fashion_mnist"),
                system_dirs=("/usr/share/datasets/fashion-mnist",), classes=FASHION_CLASSES,
                extra=dict(torchvision_folder="FashionMNIST"), sizes=(60000, 10000)),
    DatasetSpec("fashion-mnist-subset", "npz", 10, 1, 28, (0.2860,), (0.3530,), hflip=True, env=None,
                train_pad=2, classes=FASHION_CLASSES),
    DatasetSpec("cifar10", "cifar", 10, 3, 32, CIFAR10_MEAN, CIFAR10_STD, hflip=True, env="TDBN_ZOO_CIFAR10",
                folders=("cifar10", "cifar-10", "CIFAR10", ""), extra=dict(folder="cifar-10-batches-py"),
                sizes=(50000, 10000)),
    DatasetSpec("cifar100", "cifar", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), hflip=True,
                env="TDBN_ZOO_CIFAR100", folders=("cifar100", "cifar-100", "CIFAR100", ""),
                extra=dict(folder="cifar-100-python"), sizes=(50000, 10000)),
    DatasetSpec("imagenet", "imagefolder", 1000, 3, 224, IMAGENET_MEAN, IMAGENET_STD, hflip=True,
                env="TDBN_ZOO_IMAGENET", folders=("imagenet", "ImageNet", "imagenet-1k", "ILSVRC2012"),
                crop_pct=0.875, sizes=(1281167, 50000)),
)}


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; a clear ValueError listing the known names otherwise."""
    key = str(name).lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100",
           "imagenet-1k": "imagenet", "in1k": "imagenet"}.get(key, key)
    if key not in DATASETS:
        raise InvalidArgumentError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[key]


def parse_data_spec(spec: str) -> tuple[str, str | None]:
    """``'name'`` or ``'name:root'`` (the command line's ``--data``) -> ``(name, root or None)``; ``'folder:PATH'``
    is a folder of your own images (:func:`build_folder_dataset`) and needs its PATH."""
    name, sep, root = str(spec).partition(":")
    if name == FOLDER:
        if not root:
            raise InvalidArgumentError("--data folder:PATH needs the folder: one sub-folder per class (or train/ and "
                                       "test/ folders of them)")
        return name, root
    dataset_spec(name)  # fail early on a bad name
    return name, (root if sep and root else None)


# ----------------------------------------------------------------------------------------------- locating data
def env_data_dir(env: str | None) -> list[Path]:
    """``[$env]`` when that variable (a dataset's own folder, e.g. ``TDBN_ZOO_MNIST``) is set, else ``[]``."""
    path = settings.get(env) if env else None
    return [path] if path else []


def shared_data_dirs() -> list[Path]:
    """The folders holding datasets when no root is given, in search order: ``$TDBN_ZOO_DATA`` (if set), then
    ``./data``. The one data-root search of the project (images here, events in ``eval.data.events.loading``)."""
    return env_data_dir("TDBN_ZOO_DATA") + [Path("data")]


def _candidates(spec: DatasetSpec, root: str | os.PathLike | None) -> list[Path]:
    if root is not None:  # the folder itself, or a parent holding the dataset's usual folder
        root = Path(root).expanduser()
        return list(dict.fromkeys([root] + [root / f for f in spec.folders if f]))
    out = env_data_dir(spec.env)
    out += [base / f if f else base for base in shared_data_dirs() for f in spec.folders]
    out += [Path(d) for d in spec.system_dirs]
    return list(dict.fromkeys(out))


def _idx_files(d: Path, split: str) -> tuple[Path, Path] | None:
    prefix = "train" if split == "train" else "t10k"
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        for suffix in (".gz", ""):
            p = d / f"{prefix}-{kind}{suffix}"
            if p.is_file():
                found.append(p)
                break
    return (found[0], found[1]) if len(found) == 2 else None


def _match(spec: DatasetSpec, c: Path, split: str):
    """The dataset's location under candidate ``c`` (files, a torchvision root or a folder), or None."""
    if spec.kind == "idx":
        for d in (c, c / "raw", c / spec.extra["torchvision_folder"] / "raw"):
            files = _idx_files(d, split)
            if files:
                return files
    elif spec.kind == "cifar":
        folder = spec.extra["folder"]
        if (c / folder).is_dir():
            return c
        if c.name == folder and c.is_dir():
            return c.parent
    elif spec.kind == "imagefolder":
        sub = "train" if split == "train" else "val"
        if (c / sub).is_dir():
            return c / sub
    elif spec.kind == "npz":
        if c.is_file():
            return c
        if (c / SUBSET_PATH.name).is_file():
            return c / SUBSET_PATH.name
    return None


def find_root(name: str, root: str | os.PathLike | None = None, split: str = "test"):
    """Where ``name``'s ``split`` lies: the IDX file pair, the torchvision root, the ImageFolder split
    folder, or the npz file. Raises FileNotFoundError listing every place looked in."""
    spec = dataset_spec(name)
    _check_split(split)
    cands = [SUBSET_PATH] if (spec.kind == "npz" and root is None) else _candidates(spec, root)
    for c in cands:
        hit = _match(spec, c, split)
        if hit is not None:
            return hit
    what = {"idx": f"{'train' if split == 'train' else 't10k'}-images-idx3-ubyte[.gz] and -labels-idx1-ubyte[.gz]",
            "cifar": f"a folder containing {spec.extra.get('folder')}/",
            "imagefolder": f"a folder containing {'train' if split == 'train' else 'val'}/<class>/<images>",
            "npz": SUBSET_PATH.name}[spec.kind]
    how = (f"Pass root=... (tdbn-zoo eval: --data {spec.name}:PATH; train, reproduce: --data-dir PATH)"
           + (f", or set {spec.env} or TDBN_ZOO_DATA" if spec.env else ""))
    if spec.kind == "npz":
        how = f"Regenerate it with: tdbn-zoo make-subset --src <fashion-mnist folder>"
    raise MissingFileError(f"{spec.name} ({split} split) not found: looked for {what} in "
                            f"{', '.join(str(c.absolute()) for c in cands)}. {how}. tdbn-zoo never downloads data.")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InvalidArgumentError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


# ----------------------------------------------------------------------------------------------- readers
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# The most data one array may hold (2 GiB; MNIST's training images are 47 MB). A header that promises more is
# corrupt or hostile and is refused before anything is allocated or decompressed.
MAX_ARRAY_BYTES = 1 << 31
_CHUNK = 1 << 20


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_promise(path: Path, shape: tuple[int, ...], dtype: np.dtype, item_shape: tuple[int, ...] | None) -> int:
    """The number of data bytes a header's ``shape`` and ``dtype`` promise, after refusing absurd ones."""
    if item_shape is not None and tuple(shape[1:]) != tuple(item_shape):
        raise InvalidFileError(f"{path}: expected shape {_shape_text(('N', *item_shape))}, the header says "
                               f"{_shape_text(shape)}")
    n_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if n_bytes > MAX_ARRAY_BYTES:
        raise InvalidFileError(f"{path}: the header promises shape {_shape_text(shape)} of {dtype} ({n_bytes} "
                               f"bytes), more than the {MAX_ARRAY_BYTES} bytes this reader accepts; the file is "
                               f"corrupt or hostile")
    return n_bytes


def _read_at_most(f, n_bytes: int) -> bytearray:
    """Up to ``n_bytes`` from ``f`` in 1 MiB chunks: a (decompressing) stream never yields more than that."""
    buf = bytearray()
    while len(buf) < n_bytes:
        chunk = f.read(min(_CHUNK, n_bytes - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def read_idx(path: str | os.PathLike, *, item_shape: Sequence[int] | None = None) -> np.ndarray:
    """Read an IDX file (MNIST's format; ``.gz`` or plain) into a numpy array of the header's shape.

    The header (magic number, type code, dimensions) is checked before any data is read, and no more bytes
    than it promises are ever decompressed, so a small hostile ``.gz`` cannot expand into memory (a gz bomb).

    Args:
        path: the file (``.gz``: gzip-compressed).
        item_shape: when given, the dimensions after the first that the file must have, e.g. ``(28, 28)`` for
            MNIST images and ``()`` for labels; other shapes are refused before reading the data.

    Returns:
        ``np.ndarray`` of the header's shape and type (uint8 for MNIST's files), writable.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file, what was expected and what came: a bad magic number or type code, no
            dimensions, an unexpected ``item_shape``, more than ``MAX_ARRAY_BYTES`` promised, truncated data,
            bytes after the promised data, a corrupt gzip stream.
    """
    path = Path(path)
    gz = path.suffix == ".gz"
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                types = "|".join(f"{c:02x}" for c in _IDX_DTYPES)
                raise InvalidFileError(f"{path}: not an IDX file (expected the magic number 00 00 <type {types}> "
                                       f"<ndim>, got {head.hex(' ') or 'nothing'})")
            ndim, dtype = head[3], np.dtype(_IDX_DTYPES[head[2]])
            if ndim == 0:
                raise InvalidFileError(f"{path}: the IDX header declares 0 dimensions (expected at least 1)")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise InvalidFileError(f"{path}: truncated IDX header (expected {ndim} dimensions of 4 bytes, got "
                                       f"{len(raw_dims)} bytes)")
            shape = tuple(int.from_bytes(raw_dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
            n_bytes = _check_promise(path, shape, dtype, None if item_shape is None else tuple(item_shape))
            if not gz:  # a plain file's size is known before reading it
                held = path.stat().st_size - 4 - 4 * ndim
                if held != n_bytes:
                    raise _size_error(path, shape, n_bytes, held)
            data = _read_at_most(f, n_bytes)
            if len(data) < n_bytes:
                raise _size_error(path, shape, n_bytes, len(data))
            if f.read(1):
                raise InvalidFileError(f"{path}: the IDX header promises shape {_shape_text(shape)} ({n_bytes} "
                                       f"bytes of data) but more bytes follow them; corrupt or hostile (read no "
                                       f"further)")
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise InvalidFileError(f"{path}: cannot read IDX file ({type(e).__name__}: {e})") from e
    return np.frombuffer(data, dtype).reshape(shape)  # bytearray-backed: writable, owns its memory


def _size_error(path: Path, shape: tuple[int, ...], expected: int, got) -> InvalidFileError:
    return InvalidFileError(f"{path}: the IDX header promises shape {_shape_text(shape)} ({expected} bytes of data) "
                            f"but the file holds {got}; truncated or corrupt")


def read_npz_arrays(path: str | os.PathLike, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of an ``.npz`` archive, each ``.npy`` header checked before its data is read.

    Nothing is unpickled (object arrays are refused) and an array whose header promises more than
    ``MAX_ARRAY_BYTES`` is refused before anything is allocated or decompressed. Raises ValueError naming the
    file, the array and what was wrong; FileNotFoundError when there is no such file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file")
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            members = {m[:-4] for m in zf.namelist() if m.endswith(".npy")}
            missing = [n for n in names if n not in members]
            if missing:
                raise InvalidFileError(f"{path}: expected arrays {', '.join(map(repr, names))}, found "
                                       f"{', '.join(sorted(map(repr, members))) or 'none'}")
            for name in names:
                with zf.open(name + ".npy") as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                if dtype.hasobject:
                    raise InvalidFileError(f"{path}: array {name!r} holds Python objects ({dtype}); refusing to "
                                           f"unpickle")
                _check_promise(Path(f"{path}[{name}]"), shape, dtype, None)
                with zf.open(name + ".npy") as f:
                    out[name] = np.lib.format.read_array(f, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise InvalidFileError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e})") from e
    return out


def check_images_labels(spec: DatasetSpec, images: np.ndarray, labels: np.ndarray, images_src,
                        labels_src=None) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, H, W], labels int64 [N])`` of ``spec`` from arrays read from ``images_src`` and
    ``labels_src`` (the files named in errors; default the same), after checking them.

    Images must be ``[N, S, S]`` (``S = spec.image_size``) with N >= 1, of an integer type with values in
    0..255 (converted to uint8 exactly). Floating-point images are refused rather than converted: their scale
    (0..1 or 0..255) cannot be told from the values, and a guess would train on wrong pixels. Labels must be
    integers in ``0..num_classes - 1``, one per image. Raises ValueError naming the file, the expected and the
    found value."""
    labels_src = images_src if labels_src is None else labels_src
    size = spec.image_size
    if images.ndim != 3 or images.shape[1:] != (size, size):
        raise InvalidFileError(f"{images_src}: expected {spec.name} images of shape [N, {size}, {size}], got "
                               f"{_shape_text(images.shape)}")
    if len(images) == 0:
        raise InvalidFileError(f"{images_src}: holds no images (expected at least 1 {spec.name} image)")
    if images.dtype != np.uint8:
        if images.dtype.kind not in "iu":
            raise InvalidFileError(f"{images_src}: expected uint8 images (0..255), got {images.dtype.name}; a "
                                   f"floating-point image's scale (0..1 or 0..255) is ambiguous, so it is not "
                                   f"converted: convert the images to uint8 yourself")
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi > 255:
            raise InvalidFileError(f"{images_src}: expected pixel values in 0..255, found {lo if lo < 0 else hi}")
        images = images.astype(np.uint8)
    check_labels(labels, len(images), spec.num_classes, labels_src, f"{images_src}", spec.name)
    return images, labels.astype(np.int64)


def check_labels(labels: np.ndarray, n: int, num_classes: int, labels_src, images_src, name: str) -> None:
    """Refuse (InvalidFileError naming ``labels_src``) labels that are not ``n`` integers in
    ``0..num_classes - 1``, one per image of ``images_src``."""
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InvalidFileError(f"{labels_src}: expected integer labels of shape [N], got {labels.dtype.name} "
                               f"{_shape_text(labels.shape)}")
    if len(labels) != n:
        raise InvalidFileError(f"{labels_src}: expected one label per image ({n} in {images_src}), got "
                               f"{len(labels)} labels")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise InvalidFileError(f"{labels_src}: expected labels in 0..{num_classes - 1} ({name} has "
                               f"{num_classes} classes), found {int(labels[bad[0]])} at index {int(bad[0])} "
                               f"({len(bad)} out of range)")


def load_idx_pair(name: str, images_path: str | os.PathLike, labels_path: str | os.PathLike
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, S, S], labels int64 [N])`` of the IDX dataset ``name`` from its two files, every
    header, size and value checked (:func:`read_idx`, :func:`check_images_labels`)."""
    spec = dataset_spec(name)
    size = spec.image_size
    images = read_idx(images_path, item_shape=(size, size))
    labels = read_idx(labels_path, item_shape=())
    return check_images_labels(spec, images, labels, images_path, labels_path)


class ArrayImageDataset(Dataset):
    """Images held in memory as uint8 ``[N, H, W]`` or ``[N, H, W, C]`` with integer labels; items are
    ``(transform(image [C, H, W] uint8), int(label))``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None,
                 classes: Sequence[str] | None = None):
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise InvalidArgumentError(f"images must be uint8 [N, H, W] or [N, H, W, C], got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise InvalidArgumentError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.targets = np.asarray(labels).astype(np.int64)
        self.transform = transform
        self.classes = list(classes) if classes is not None else None

    @property
    def data(self) -> np.ndarray:
        """The images, under torchvision's name (``CIFAR10.data``)."""
        return self.images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = torch.from_numpy(np.ascontiguousarray(self.images[i]))
        img = img.unsqueeze(0) if img.dim() == 2 else img.permute(2, 0, 1)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR batch holds (dicts, lists, strings, numpy arrays) and nothing else: any other
    global a pickle names (a function it would call) is refused, so a hostile file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"a CIFAR batch holds only dicts, lists and numpy arrays, this one names "
                                         f"{module}.{name}")
        return super().find_class(module, name)


def _str_keys(entry: dict) -> dict:
    """Keys as ``str``: ``b'data'`` (a batch unpickled with ``encoding='bytes'``, as the CIFAR page's
    ``unpickle()`` does, and pickled again) and ``'data'`` are the same field."""
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _unpickle_cifar(path: Path) -> dict:
    """The dict a CIFAR batch or meta file holds (restricted unpickling, :class:`_CifarUnpickler`), with str
    keys. Raises InvalidFileError naming the file and what was expected."""
    try:
        with open(path, "rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, OverflowError) as e:
        raise InvalidFileError(f"{path}: expected a CIFAR python-pickle batch (a pickled dict), could not read it "
                               f"({type(e).__name__}: {e})") from None
    if not isinstance(entry, dict):
        raise InvalidFileError(f"{path}: expected a CIFAR python-pickle batch (a pickled dict), got "
                               f"{type(entry).__name__}")
    return _str_keys(entry)


def read_cifar_batch(path: str | os.PathLike, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 32, 32, 3], labels int64 [N])`` of one CIFAR batch file in the python layout
    (a pickled dict: ``data`` uint8 ``[N, 3072]``, the R, G, B planes of each 32x32 image row-major, and
    ``label_key`` (``labels``; CIFAR-100: ``fine_labels``), N integers in ``0..num_classes - 1``). Keys may be
    ``str`` or ``bytes``. Raises InvalidFileError naming the file, the field, what was expected and what came."""
    path = Path(path)
    entry = _unpickle_cifar(path)
    if "data" not in entry or label_key not in entry:
        raise InvalidFileError(f"{path}: expected a CIFAR batch with keys 'data' and {label_key!r}, found "
                               f"{', '.join(map(repr, sorted(map(str, entry)))) or 'none'}")
    data, labels = entry["data"], entry[label_key]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.dtype.kind not in "iu":
        what = (f"{data.dtype.name} {_shape_text(data.shape)}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise InvalidFileError(f"{path}: expected 'data' of uint8 [N, 3072] (3 x 32 x 32 pixels per row), got {what}")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError):
        labels = np.asarray([], dtype=object)
    if len(data) == 0:
        raise InvalidFileError(f"{path}: 'data' holds no images (expected at least 1)")
    if data.dtype != np.uint8 and (int(data.min()) < 0 or int(data.max()) > 255):
        raise InvalidFileError(f"{path}: expected 'data' pixel values in 0..255, found {int(data.min())}.."
                               f"{int(data.max())}")
    check_labels(labels, len(data), num_classes, f"{path} ({label_key!r})", path, f"CIFAR-{num_classes}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # R, G, B planes -> [N, H, W, C]
    return np.ascontiguousarray(images, dtype=np.uint8), labels.astype(np.int64)


def _cifar_files(spec: DatasetSpec):
    """``(batches {split: [(name, md5)]}, meta {'filename', 'key', 'md5'}, label key)`` of a CIFAR dataset, from
    torchvision's class attributes (the official release's names and MD5 sums)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if spec.name == "cifar10" else CIFAR100
    label_key = "labels" if spec.name == "cifar10" else "fine_labels"
    return dict(train=base.train_list, test=base.test_list), base.meta, label_key


def load_cifar(spec: DatasetSpec, root: str | os.PathLike, split: str, verify: bool = True,
               transform: Callable | None = None) -> ArrayImageDataset:
    """CIFAR-10/100 from the python-pickle folder under ``root`` (``cifar-10-batches-py``, ``cifar-100-python``),
    never downloaded. ``verify``: every file's MD5 must match the official release before anything is unpickled;
    ``verify=False`` accepts a re-packed copy (files need only exist and be well formed). Each batch is read by
    :func:`read_cifar_batch` (restricted unpickling, every field checked)."""
    from torchvision.datasets.utils import check_integrity

    batches, meta, label_key = _cifar_files(spec)
    folder = Path(root) / spec.extra["folder"]
    files = [f for f, _ in batches["train"] + batches["test"]] + [meta["filename"]]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise MissingFileError(f"{spec.name}: {folder} lacks {', '.join(missing)} (the standard python-pickle "
                                f"batches); tdbn-zoo never downloads data")
    if verify:
        sums = dict(batches["train"] + batches["test"], **{meta["filename"]: meta["md5"]})
        bad = [f for f in files if not check_integrity(str(folder / f), sums[f])]
        if bad:
            raise InvalidFileError(f"{spec.name}: {', '.join(bad)} in {folder} do not match the official release's "
                                   f"MD5 sums; refusing to unpickle them. If this is a deliberate re-packing you "
                                   f"trust, pass verify=False (command line: --no-verify)")
    parts = [read_cifar_batch(folder / f, label_key, spec.num_classes) for f, _ in batches[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    names = _unpickle_cifar(folder / meta["filename"]).get(meta["key"])
    if names is not None and (not isinstance(names, (list, tuple)) or len(names) != spec.num_classes):
        raise InvalidFileError(f"{folder / meta['filename']}: expected {meta['key']!r} to list "
                               f"{spec.num_classes} class names, got {type(names).__name__} of "
                               f"{len(names) if hasattr(names, '__len__') else '?'}")
    classes = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names] if names else None
    return ArrayImageDataset(images, labels, transform, classes)


def _open_image(path: str, mode: str = "RGB"):
    """torchvision's default image loader (PIL, converted to ``mode``), turning an unreadable or non-image file
    into InvalidFileError naming it (a bad file met mid-run ends in one line, not a traceback)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise InvalidFileError(f"{path}: the file is empty (0 bytes); expected an image (PNG, JPEG, ...)")
            return Image.open(f).convert(mode)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise InvalidFileError(f"{path}: expected an image file PIL can read (PNG, JPEG, ...), could not "
                               f"decode it ({type(e).__name__}: {e})") from None


def image_folder(root: str | os.PathLike, transform: Callable | None = None, mode: str = "RGB"):
    """torchvision's ``ImageFolder`` on ``root`` (one sub-folder per class, sorted names = label order), its
    files read by ``_open_image`` as ``mode`` (``'RGB'``, ``'L'``); an empty folder or one without class
    folders raises InvalidFileError."""
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root), transform=transform, loader=functools.partial(_open_image, mode=mode))
    except FileNotFoundError as e:  # torchvision: no class folder, or a class folder without an image
        raise InvalidFileError(f"{root}: expected an image folder, one sub-folder per class holding images "
                               f"(torchvision ImageFolder layout): {e}") from None


# ----------------------------------------------------------------------------------------------- your own images
FOLDER = "folder"  # --data folder:PATH


def folder_split(root: str | os.PathLike, split: str) -> Path:
    """The class folders of ``split`` in an image folder ``root``: ``root/train`` for training, ``root/test`` (or
    ``root/val``) for testing; a ``root`` holding only class folders is one set, for evaluation (testing)."""
    _check_split(split)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"folder:{root}: no such folder (expected one sub-folder per class, or train/ and "
                                f"test/ folders of them)")
    names = ("train",) if split == "train" else ("test", "val")
    for name in names:
        if (root / name).is_dir():
            return root / name
    if split == "test" and not (root / "train").is_dir():
        return root
    raise MissingFileError(f"folder:{root}: expected a {' or '.join(n + '/' for n in names)} folder of class folders "
                            f"for the {split} split")


def folder_transform(size: int, mean: Sequence[float], std: Sequence[float], *, train: bool = False, pad: int = 0,
                     hflip: bool = False) -> Callable:
    """Images of any size -> float32 ``[C, size, size]`` normalised by ``mean``/``std``: resized (both sides)
    to ``size``; ``train`` adds a random crop after ``pad`` pixels of zero padding and, with ``hflip``, a
    horizontal flip."""
    from torchvision.transforms import v2

    ops: list = [v2.ToImage(), v2.Resize((size, size), antialias=True)]
    if train and pad:
        ops.append(v2.RandomCrop(size, padding=pad))
    if train and hflip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(tuple(mean), tuple(std))])


def build_folder_dataset(root: str | os.PathLike, split: str = "test", *, in_chans: int = 3,
                         transform: Callable | None = None):
    """Your own images in torchvision's ``ImageFolder`` layout (``--data folder:PATH``): one sub-folder per
    class (sorted names = label order; see :func:`folder_split` for train/test), read as ``in_chans`` 1
    (grey) or 3 (RGB) channels. ``.classes`` names the classes; ``.spec`` is None (no fixed facts)."""
    if in_chans not in (1, 3):
        raise InvalidArgumentError(f"an image folder is read as 1 (grey) or 3 (RGB) channels, the model takes "
                                   f"{in_chans}")
    ds = image_folder(folder_split(root, split), transform, mode="L" if in_chans == 1 else "RGB")
    for name in ds.classes:  # class names go into cards and config.json (UTF-8): an undecodable name fails there
        if not name.isprintable() or name != name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"):
            raise InvalidFileError(f"folder:{root}: the class folder name {name!r} is not printable UTF-8 text; "
                                   f"rename it (class names become the model's label names)")
    ds.spec = None
    return ds


# ----------------------------------------------------------------------------------------------- transforms
def build_transform(name: str, *, train: bool = False, input_size: int | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    crop_pct: float | None = None, pad: int | None = None, hflip: bool | None = None) -> Callable:
    """The paper's pipeline for ``name`` on a uint8 tensor ``[C, H, W]`` or a PIL image ->
    float32 ``[C, input_size, input_size]`` normalised by ``mean``/``std`` (the dataset's by default).

    ``train``: add the random crop (after ``pad`` pixels of zero padding; default the dataset's
    ``train_pad``, 0 = no crop) and the horizontal flip (``hflip``; default the dataset's policy). The
    random draws come from torch's global RNG: :class:`eval.train.sampling.SeededAugment` seeds them per image."""
    from torchvision.transforms import v2

    spec = dataset_spec(name)
    size = int(input_size or spec.image_size)
    mean = tuple(mean if mean is not None else spec.mean)
    std = tuple(std if std is not None else spec.std)
    if len(mean) != spec.in_chans or len(std) != spec.in_chans:
        raise InvalidArgumentError(f"{spec.name} has {spec.in_chans} channel(s); got mean {mean} and std {std}")
    ops: list = [v2.ToImage()]
    if spec.kind == "imagefolder":
        crop_pct = float(crop_pct or spec.crop_pct)
        ops += ([v2.RandomResizedCrop(size, antialias=True)] if train else
                [v2.Resize(int(round(size / crop_pct)), antialias=True), v2.CenterCrop(size)])
    else:
        if size != spec.image_size:
            ops.append(v2.Resize(size, antialias=True))
        pad = spec.train_pad if pad is None else int(pad)
        if train and pad:
            ops.append(v2.RandomCrop(size, padding=pad))
    if train and (spec.hflip if hflip is None else hflip):
        ops.append(v2.RandomHorizontalFlip())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


# ----------------------------------------------------------------------------------------------- datasets
def build_dataset(name: str, root: str | os.PathLike | None = None, split: str = "test", *,
                  train_transforms: bool = False, input_size: int | None = None,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  crop_pct: float | None = None, verify: bool = True) -> Dataset:
    """A dataset of ``(image [C, H, W] float32, label)`` from local files.

    Args:
        name: one of ``DATASETS`` (``mnist``, ``fashion-mnist``, ``fashion-mnist-subset``, ``cifar10``,
            ``cifar100``, ``imagenet``).
        root: where the data lies (see the module docstring for what is searched when None).
        split: ``'train'`` or ``'test'`` (ImageNet: ``train/`` or ``val/``).
        train_transforms: random crop (+ flip where label-preserving) before normalising; else eval transforms.
        input_size: output side in pixels (default: the dataset's own, 28 / 32 / 224).
        mean, std: normalisation (default: the dataset's per-channel statistics, ``dataset_spec(name)``).
        crop_pct: ImageNet eval centre-crop fraction (default 0.875).
        verify: CIFAR only: require the official MD5 sums before unpickling the batch files.

    The returned dataset has ``.classes`` (names, where known) and ``.spec`` (the :class:`DatasetSpec`).
    """
    spec = dataset_spec(name)
    _check_split(split)
    where = find_root(spec.name, root, split)
    tf = build_transform(spec.name, train=train_transforms, input_size=input_size, mean=mean, std=std,
                         crop_pct=crop_pct)
    if spec.kind == "idx":
        ds = ArrayImageDataset(*load_idx_pair(spec.name, *where), tf, spec.classes)
    elif spec.kind == "npz":
        if split != "test":
            raise InvalidArgumentError(f"{spec.name} holds test images only; use split='test'")
        ds = ArrayImageDataset(*load_subset(where, spec.name), tf, spec.classes)
    elif spec.kind == "cifar":
        ds = load_cifar(spec, where, split, verify, tf)
    else:
        ds = image_folder(where, tf)
        if len(ds.classes) != spec.num_classes:
            import warnings
            warnings.warn(f"{where} has {len(ds.classes)} class folders, {spec.name} has {spec.num_classes}")
    ds.spec = spec
    return ds


# ----------------------------------------------------------------------------------------------- shipped subset
def load_subset(path: str | os.PathLike = SUBSET_PATH, name: str = "fashion-mnist-subset"
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [n, 28, 28], labels int64 [n])`` from a subset npz (arrays ``images`` and ``labels``;
    nothing unpickled), checked as :func:`check_images_labels` checks any dataset's arrays."""
    arrays = read_npz_arrays(path, ("images", "labels"))
    return check_images_labels(dataset_spec(name), arrays["images"], arrays["labels"], path)


def write_subset(src: str | os.PathLike | None = None, out: str | os.PathLike = SUBSET_PATH,
                 n: int = SUBSET_SIZE) -> Path:
    """Write the first ``n`` Fashion-MNIST test images and labels (uint8) to ``out`` (npz, compressed,
    atomically), with the index range and the source file names recorded. Returns ``out``."""
    images_path, labels_path = find_root("fashion-mnist", src, "test")
    images, labels = load_idx_pair("fashion-mnist", images_path, labels_path)
    if not 0 < n <= len(images):
        raise InvalidArgumentError(f"n must lie in 1..{len(images)}, got {n}")
    out = Path(out)
    with atomic_path(out, suffix=".tmp.npz") as tmp:  # numpy appends .npz to a name without it
        np.savez_compressed(tmp, images=images[:n].copy(), labels=labels[:n].astype(np.uint8),
                            indices=np.arange(n, dtype=np.int32),
                            source=np.array(f"{images_path.name} + {labels_path.name}, test images 0..{n - 1}"))
    return out


def _main(argv: list[str] | None = None) -> int:
    """``python -m eval.data.images make-subset ...``: the same as ``tdbn-zoo make-subset ...``."""
    return cli_main(sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    raise SystemExit(_main())
