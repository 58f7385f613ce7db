"""Malformed and hostile data files (issue 13): IDX files (a gz bomb among them), labels and pixels out of range,
bad subset archives, a re-packed CIFAR copy. Each case is a one-line user error naming what was expected and
what came (exit 2 on the command line), or the correct result, checked against arrays built here. Files are
written by hand from the formats' definitions (IDX: ``00 00 <type> <ndim> <big-endian dims> <data>``; npz: a
zip of ``.npy`` files)."""
from __future__ import annotations

import gzip
import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from eval.data.images import build_dataset, load_idx_pair, load_subset, read_idx
from tests.support.cli import assert_cli_user_error, assert_user_error, run_cli
from tests.support.data import write_cifar10

pytestmark = pytest.mark.usefixtures("one_thread")

PRESET = "sresnet19_narrow_tdbn.fashion_mnist_t2"


# ---------------------------------------------------------------------------------------------- file makers
def idx_bytes(arr: np.ndarray, code: int = 0x08, dims=None) -> bytes:
    dims = arr.shape if dims is None else dims
    return (bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
            + np.ascontiguousarray(arr).tobytes())


def write(path: Path, raw: bytes, gz: bool | None = None) -> Path:
    gz = path.suffix == ".gz" if gz is None else gz
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def images(n: int = 8, size: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def labels(n: int = 8) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.uint8)


def fashion_folder(root: Path, *, test_images=None, test_labels=None, img_code=0x08, lab_code=0x08) -> Path:
    """A Fashion-MNIST folder (train: 16, t10k: 8 images) with the t10k arrays replaceable."""
    folder = root / "fashion-mnist"
    write(folder / "train-images-idx3-ubyte.gz", idx_bytes(images(16, seed=1)))
    write(folder / "train-labels-idx1-ubyte.gz", idx_bytes(labels(16)))
    ti = images() if test_images is None else test_images
    tl = labels() if test_labels is None else test_labels
    write(folder / "t10k-images-idx3-ubyte.gz", idx_bytes(ti, img_code))
    write(folder / "t10k-labels-idx1-ubyte.gz", idx_bytes(tl, lab_code))
    return folder


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    return buf.getvalue()


def npz(path: Path, **members: bytes | np.ndarray) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, value in members.items():
            z.writestr(name + ".npy", value if isinstance(value, bytes) else npy_bytes(value))
    return path


def fake_npy_header(shape, descr="|u1") -> bytes:
    """A .npy v1.0 header promising ``shape`` followed by only 16 bytes of data."""
    header = repr(dict(descr=descr, fortran_order=False, shape=tuple(shape))).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(16)


# ---------------------------------------------------------------------------------------------- IDX reader
IDX_GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))

# name -> (file name, bytes written as-is, needles of the expected error)
IDX_CASES = {
    "bad magic": ("a.gz", gzip.compress(b"\x01\x02\x08\x03" + IDX_GOOD[4:]), ["not an IDX file", "01 02 08 03"]),
    "unknown type code": ("a.gz", gzip.compress(b"\x00\x00\x07\x01" + IDX_GOOD[4:]), ["not an IDX", "00 00 07"]),
    "empty file": ("a", b"", ["not an IDX file", "got nothing"]),
    "zero dimensions": ("a.gz", gzip.compress(b"\x00\x00\x08\x00"), ["0 dimensions", "at least 1"]),
    "header cut in the dims": ("a.gz", gzip.compress(IDX_GOOD[:9]), ["truncated IDX header", "3 dimensions"]),
    "data truncated (gz)": ("a.gz", gzip.compress(IDX_GOOD[:-3]), ["promises shape \\[2, 3, 4\\]", "24 bytes",
                                                                   "holds 21", "truncated"]),
    "data truncated (plain)": ("a", IDX_GOOD[:-3], ["24 bytes", "holds 21", "truncated"]),
    "trailing bytes (plain)": ("a", IDX_GOOD + b"xyz", ["24 bytes", "holds 27"]),
    "trailing bytes (gz)": ("a.gz", gzip.compress(IDX_GOOD + b"xyz"), ["24 bytes", "more bytes follow"]),
    "not gzip under .gz": ("a.gz", IDX_GOOD, ["cannot read IDX", "BadGzipFile"]),
    "gzip stream cut": ("a.gz", gzip.compress(IDX_GOOD)[:-12], ["cannot read IDX", "EOFError"]),
    "absurd dims (78 GB of images)": ("a.gz", gzip.compress(idx_bytes(np.zeros(4, np.uint8),
                                                                      dims=(100_000_000, 28, 28))),
                                      ["78400000000 bytes", "more than the 2147483648"]),
    "absurd 1-D dims (4 GB of labels)": ("a", idx_bytes(np.zeros(4, np.uint8), dims=(2 ** 32 - 1,)),
                                         ["4294967295 bytes", "corrupt or hostile"]),
}


@pytest.mark.parametrize("case", sorted(IDX_CASES))
def test_malformed_idx_is_refused_naming_the_file(tmp_path, case):
    name, raw, needles = IDX_CASES[case]
    path = write(tmp_path / name, raw, gz=False)
    assert_user_error(lambda: read_idx(path), str(path), *needles)


def test_idx_gz_bomb_is_refused_before_decompressing_past_the_header_promise(tmp_path):
    # header + data of 8 images, then 256 MiB of zeros in further gzip members (a 300 KB file)
    promised = idx_bytes(images())
    zeros = gzip.compress(bytes(1 << 20), 9)
    bomb = tmp_path / "t10k-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(promised) + zeros * 256)
    assert bomb.stat().st_size < 400_000
    tracemalloc.start()
    try:
        assert_user_error(lambda: read_idx(bomb, item_shape=(28, 28)), str(bomb), "6272 bytes", "more bytes follow")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"decompressed far past the header's promise: peak {peak} bytes"  # vs 256 MiB


def test_idx_dims_other_than_the_datasets_are_refused_before_reading(tmp_path):
    path = write(tmp_path / "i.gz", idx_bytes(images(4, size=30)))
    labs = write(tmp_path / "l.gz", idx_bytes(labels(4)))
    assert_user_error(lambda: load_idx_pair("fashion-mnist", path, labs), str(path), r"\[N, 28, 28\]",
                      r"\[4, 30, 30\]")
    assert_user_error(lambda: load_idx_pair("fashion-mnist", write(tmp_path / "i2.gz", idx_bytes(images(4))),
                                            write(tmp_path / "l2.gz", idx_bytes(images(4)))),
                      "l2.gz", r"expected shape \[N\]", r"\[4, 28, 28\]")


# name -> (t10k images, t10k labels, image type code, label type code, file, needles)
DATASET_CASES = {
    "label 10 of 10 classes": (None, np.array([0, 1, 2, 3, 4, 5, 6, 10], np.uint8), 8, 8, "labels",
                               ["labels in 0..9", "found 10 at index 7"]),
    "label 255": (None, np.full(8, 255, np.uint8), 8, 8, "labels", ["0..9", "found 255 at index 0",
                                                                      "8 out of range"]),
    "negative label (int8)": (None, np.array([0, 1, 2, -1, 4, 5, 6, 7], np.int8), 8, 0x09, "labels",
                              ["0..9", "found -1 at index 3"]),
    "float labels": (None, labels().astype(">f4"), 8, 0x0D, "labels", ["integer labels", "float32"]),
    "float images": ((images() / 255).astype(">f4"), None, 0x0D, 8, "images", ["uint8", "float32", "ambiguous"]),
    "int32 pixels above 255": ((images().astype(np.int32) + 45).astype(">i4"), None, 0x0C, 8, "images",
                               ["0..255", "found 300"]),
    "7 labels for 8 images": (None, labels(7), 8, 8, "labels", ["one label per image", "8 in", "got 7"]),
    "no images": (images(0), labels(0), 8, 8, "images", ["no images", "at least 1"]),
}


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_bad_idx_dataset_values_are_refused_naming_file_expected_and_found(tmp_path, case):
    imgs, labs, icode, lcode, which, needles = DATASET_CASES[case]
    folder = fashion_folder(tmp_path, test_images=imgs, test_labels=labs, img_code=icode, lab_code=lcode)
    file = folder / f"t10k-{which}-idx{3 if which == 'images' else 1}-ubyte.gz"
    assert_user_error(lambda: build_dataset("fashion-mnist", tmp_path), str(file), *needles)


def test_integer_images_in_range_are_read_exactly_as_uint8(tmp_path):
    pixels = images()
    fashion_folder(tmp_path, test_images=pixels.astype(">i2"), img_code=0x0B)
    ds = build_dataset("fashion-mnist", tmp_path)
    assert ds.images.dtype == np.uint8 and np.array_equal(ds.images, pixels)
    x, y = ds[3]
    np.testing.assert_allclose(x[0].numpy(), (pixels[3] / 255 - 0.2860) / 0.3530, atol=1e-5)
    assert y == 3


# ---------------------------------------------------------------------------------------------- subset npz
SUBSET_CASES = {
    "label out of range": (dict(images=images(), labels=np.array([0, 1, 2, 3, 4, 5, 6, 12])),
                           ["labels in 0..9", "found 12 at index 7"]),
    "float images": (dict(images=images().astype(np.float32), labels=labels()), ["uint8", "float32"]),
    "float images in 0..1": (dict(images=images().astype(np.float64) / 255, labels=labels()), ["float64"]),
    "labels missing": (dict(images=images()), ["expected arrays 'images', 'labels'", "found 'images'"]),
    "pickled object array": (dict(images=images(), labels=np.array([1, "x"], dtype=object)),
                             ["labels", "Python objects", "unpickle"]),
    "header promises 300 GB": (dict(images=fake_npy_header((400_000_000, 28, 28), "<i8"), labels=labels()),
                               ["images", "2508800000000 bytes", "more than"]),
    "32x32 images": (dict(images=images(size=32), labels=labels()), [r"\[N, 28, 28\]", r"\[8, 32, 32\]"]),
    "counts differ": (dict(images=images(), labels=labels(5)), ["one label per image", "got 5"]),
    "empty": (dict(images=images(0), labels=labels(0)), ["no images"]),
    "bool labels": (dict(images=images(), labels=np.ones(8, bool)), ["integer labels", "bool"]),
}


@pytest.mark.parametrize("case", sorted(SUBSET_CASES))
def test_bad_subset_npz_is_refused(tmp_path, case):
    members, needles = SUBSET_CASES[case]
    path = npz(tmp_path / "subset.npz", **members)
    assert_user_error(lambda: build_dataset("fashion-mnist-subset", path), str(path), *needles)


def test_subset_that_is_not_an_archive_is_refused(tmp_path):
    path = write(tmp_path / "subset.npz", b"PK\x03\x04 not really a zip", gz=False)
    assert_user_error(lambda: load_subset(path), str(path), "not a readable .npz", "BadZipFile")


def test_good_subset_with_int16_pixels_loads_exactly(tmp_path):
    pixels = images()
    path = npz(tmp_path / "s.npz", images=pixels.astype(np.int16), labels=labels().astype(np.int64))
    ds = build_dataset("fashion-mnist-subset", path)
    assert np.array_equal(ds.images, pixels) and ds.targets.tolist() == labels().tolist()


def test_train_with_labels_out_of_range_stops_before_training(tmp_path, capsys):
    folder = fashion_folder(tmp_path)
    write(folder / "train-labels-idx1-ubyte.gz", idx_bytes(np.array([0, 1, 2, 3, 4, 5, 6, 200] * 2, np.uint8)))
    out = tmp_path / "run"
    result = run_cli(["train", "--preset", PRESET, "--data-dir", tmp_path, "--out", out, "--epochs", "1",
                      "--batch-size", "8", "--no-progress"], capsys)
    assert_cli_user_error(result, "train-labels-idx1-ubyte.gz", "0..9", "found 200")
    assert not (out / "last.safetensors").exists()


def test_train_on_a_repacked_cifar_names_a_flag_that_exists(tmp_path, capsys):
    """The MD5 error's advice, --no-verify, is a train flag: with it the same folder builds its datasets."""
    from eval.train.datasets import build_datasets
    from eval.train.presets import get_preset

    write_cifar10(tmp_path)
    res = run_cli(["train", "--preset", "sresnet19_tdbn.cifar10_t2", "--data-dir", tmp_path, "--out",
                   tmp_path / "run"], capsys)
    assert_cli_user_error(res, "MD5", "--no-verify")
    from eval.cli import build_parser
    args = build_parser()[0].parse_args(["train", "--preset", "sresnet19_tdbn.cifar10_t2", "--out", "o", "--no-verify"])
    assert args.no_verify
    train, test = build_datasets(get_preset("sresnet19_tdbn.cifar10_t2"), str(tmp_path), 0, verify=not args.no_verify)
    assert len(train) == 15 and len(test) == 3
