"""eval.data.images: IDX / CIFAR / ImageFolder pipelines on files of the exact on-disk formats, the shipped
Fashion-MNIST subset, the search path and its errors. Nothing is downloaded."""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from zoo.errors import InvalidFileError
from eval.data.images import (DATASETS, SUBSET_PATH, build_dataset, build_transform, dataset_spec, find_root,
                              load_subset, parse_data_spec, read_idx, write_subset)
from tests.support.data import tiny_mnist, write_cifar10, write_idx


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (see conftest)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_fmnist = pytest.mark.skipif(not (DATA / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason=f"Fashion-MNIST not present under {DATA} (shared data)")
needs_mnist = pytest.mark.skipif(not (DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
                                 reason=f"MNIST not present under {DATA} (shared data)")


# ---------------------------------------------------------------------------------------------- IDX
def test_read_idx_roundtrip_and_corruption(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", a)), a)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", a, gz=False)), a)
    raw = gzip.open(tmp_path / "a.gz").read()
    gzip.open(tmp_path / "short.gz", "wb").write(raw[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short.gz")
    gzip.open(tmp_path / "bad.gz", "wb").write(b"\x01\x02\x08\x01" + raw[4:])
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad.gz")


def test_idx_dataset_layouts_env_and_normalisation(tmp_path, monkeypatch):
    images, labels = tiny_mnist(tmp_path / "MNIST" / "raw", gz=False)  # torchvision's layout, uncompressed
    ds = build_dataset("mnist", tmp_path)
    assert len(ds) == 6 and ds.classes[3] == "3"
    x, y = ds[2]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == int(labels[2])
    expected = (images[2].astype(np.float32) / 255 - 0.1307) / 0.3081
    assert np.allclose(x[0].numpy(), expected, atol=1e-5)
    # the same files found through the environment variables
    monkeypatch.setenv("TDBN_ZOO_MNIST", str(tmp_path / "MNIST"))
    assert len(build_dataset("mnist")) == 6
    monkeypatch.delenv("TDBN_ZOO_MNIST")
    monkeypatch.setenv("TDBN_ZOO_DATA", str(tmp_path))
    assert build_dataset("mnist")[2][1] == int(labels[2])
    assert build_dataset("mnist", input_size=32)[0][0].shape == (1, 32, 32)


def test_missing_data_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("TDBN_ZOO_DATA", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        build_dataset("fashion-mnist")
    msg = str(e.value)
    for place in (str(tmp_path / "nowhere" / "fashion-mnist"), str(tmp_path / "data" / "fashion-mnist"),
                  "/usr/share/datasets/fashion-mnist", "TDBN_ZOO_FASHION_MNIST", "never downloads"):
        assert place in msg
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        build_dataset("cifar10", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'.*cifar10"):
        build_dataset("svhn")
    with pytest.raises(ValueError, match="split"):
        build_dataset("mnist", tmp_path, split="val")


def test_parse_data_spec_and_specs():
    assert parse_data_spec("cifar10") == ("cifar10", None)
    assert parse_data_spec("cifar10:/data/c") == ("cifar10", "/data/c")
    assert dataset_spec("FashionMNIST").name == "fashion-mnist"
    assert dataset_spec("cifar-100").num_classes == 100
    with pytest.raises(ValueError, match="unknown dataset"):
        parse_data_spec("nope:/x")


def _has(tf, cls) -> bool:
    return any(isinstance(t, cls) for t in tf.transforms)


def test_train_transforms_crop_pad_flip_policy():
    mnist, fmnist, cifar = (build_transform(n, train=True) for n in ("mnist", "fashion-mnist", "cifar10"))
    assert not _has(mnist, v2.RandomHorizontalFlip)  # digits are not mirror-symmetric
    assert _has(fmnist, v2.RandomHorizontalFlip) and _has(cifar, v2.RandomHorizontalFlip)
    for tf, pad in ((mnist, 2), (fmnist, 2), (cifar, 4)):  # 28x28 data: 2 pixels; CIFAR: the usual 4
        crop = next(t for t in tf.transforms if isinstance(t, v2.RandomCrop))
        assert list(crop.padding) == [pad] * 4
    assert not _has(build_transform("cifar10"), v2.RandomCrop)
    assert not _has(build_transform("fashion-mnist", train=True, pad=0), v2.RandomCrop)
    assert not _has(build_transform("fashion-mnist", train=True, hflip=False), v2.RandomHorizontalFlip)
    # a random crop of a 4-pixel zero-padded image: every output is a shifted window of the padded input
    img = torch.arange(28 * 28, dtype=torch.float32).view(1, 28, 28) % 251 + 1
    torch.manual_seed(0)
    tf = build_transform("mnist", train=True, mean=(0.0,), std=(1.0,), pad=4)
    padded = torch.nn.functional.pad(img.to(torch.uint8).float() / 255, (4, 4, 4, 4))
    for _ in range(5):
        out = tf(img.to(torch.uint8))
        windows = [padded[:, i:i + 28, j:j + 28] for i in range(9) for j in range(9)]
        assert any(torch.allclose(out, w) for w in windows)


# ---------------------------------------------------------------------------------------------- CIFAR

def test_cifar10_on_disk_format(tmp_path):
    raw = write_cifar10(tmp_path)
    with pytest.raises(ValueError, match="MD5"):  # not the official files: refused before unpickling
        build_dataset("cifar10", tmp_path)
    test = build_dataset("cifar10", tmp_path, verify=False)
    train = build_dataset("cifar10", tmp_path / "cifar-10-batches-py", "train", verify=False, train_transforms=True)
    assert len(test) == 3 and len(train) == 15 and test.classes[0] == "airplane"
    x, y = test[1]
    assert y == (5 + 1) % 10 and x.shape == (3, 32, 32)  # test_batch is the sixth file written
    mean, std = dataset_spec("cifar10").mean, dataset_spec("cifar10").std
    r_plane = raw["test_batch"][1, :1024].reshape(32, 32).astype(np.float32) / 255
    assert np.allclose(x[0].numpy(), (r_plane - mean[0]) / std[0], atol=1e-5)
    b_plane = raw["test_batch"][1, 2048:].reshape(32, 32).astype(np.float32) / 255
    assert np.allclose(x[2].numpy(), (b_plane - mean[2]) / std[2], atol=1e-5)
    assert train[0][0].shape == (3, 32, 32)


def test_cifar100_on_disk_format(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.random.default_rng(2).integers(0, 256, (4, 3072), dtype=np.uint8)
    for name in ("train", "test"):
        (folder / name).write_bytes(pickle.dumps({"data": data, "fine_labels": [5, 99, 0, 42],
                                                  "coarse_labels": [1, 2, 3, 4]}, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}, protocol=2))
    ds = build_dataset("cifar100", tmp_path, verify=False)
    assert [ds[i][1] for i in range(4)] == [5, 99, 0, 42] and ds.classes[99] == "c99"


# ---------------------------------------------------------------------------------------------- ImageNet folder
def test_imagenet_folder_resize_centre_crop(tmp_path):
    colours = {"n01440764": (255, 0, 0), "n01443537": (0, 128, 255)}
    for k, (wnid, rgb) in enumerate(colours.items()):
        d = tmp_path / "val" / wnid
        d.mkdir(parents=True)
        Image.new("RGB", (48, 40), rgb).save(d / f"ILSVRC2012_val_{k}.JPEG", quality=100)
        Image.new("RGB", (30, 50), rgb).save(d / f"extra_{k}.png")
    with pytest.warns(UserWarning, match="2 class folders"):
        ds = build_dataset("imagenet", tmp_path, input_size=32)
    assert len(ds) == 4 and ds.classes == sorted(colours)
    spec = dataset_spec("imagenet")
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 32, 32)
        rgb = colours[ds.classes[y]]
        want = torch.tensor([(c / 255 - m) / s for c, m, s in zip(rgb, spec.mean, spec.std)])
        assert torch.allclose(x.mean((1, 2)), want, atol=0.05)  # JPEG keeps a flat colour up to rounding
    with pytest.raises(FileNotFoundError, match="train/"):
        build_dataset("imagenet", tmp_path, "train")


# ---------------------------------------------------------------------------------------------- shipped subset
def test_shipped_subset_loads():
    assert SUBSET_PATH.is_file() and SUBSET_PATH.stat().st_size < 400_000
    ds = build_dataset("fashion-mnist-subset")
    assert len(ds) == 500 and ds.spec.num_classes == 10
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and ds.classes[y] == "Ankle boot"  # the first Fashion-MNIST test image
    assert np.bincount(ds.targets, minlength=10).min() >= 30  # every class is represented
    with pytest.raises(ValueError, match="test images only"):
        build_dataset("fashion-mnist-subset", split="train")


@needs_fmnist
def test_subset_is_the_first_test_images_and_regenerates(tmp_path):
    full = build_dataset("fashion-mnist", DATA)
    images, labels = load_subset(SUBSET_PATH)
    assert np.array_equal(images, full.images[:500]) and np.array_equal(labels, full.targets[:500])
    again = write_subset(DATA / "fashion-mnist", tmp_path / "s.npz")
    images2, labels2 = load_subset(again)
    assert np.array_equal(images, images2) and np.array_equal(labels, labels2)


@needs_mnist
def test_real_mnist_test_set():
    ds = build_dataset("mnist", DATA)
    assert len(ds) == 10_000 and ds[0][1] == 7  # the first MNIST test digit is a 7
    assert np.bincount(ds.targets).tolist()[:2] == [980, 1135]
    files = find_root("mnist", DATA / "mnist", "test")
    assert files[0].name == "t10k-images-idx3-ubyte.gz"


def test_every_dataset_has_consistent_spec():
    for spec in DATASETS.values():
        assert len(spec.mean) == len(spec.std) == spec.in_chans
        tf = build_transform(spec.name)
        img = torch.zeros(spec.in_chans, spec.image_size, spec.image_size, dtype=torch.uint8)
        assert tf(img).shape == (spec.in_chans, spec.image_size, spec.image_size)


# ---------------------------------------------------------------------------------------------- malformed files
def _cifar_folder(tmp_path: Path, **change) -> Path:
    """A cifar-10-batches-py copy (write_cifar10) whose test_batch is re-pickled with ``change`` applied."""
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    entry = pickle.loads(path.read_bytes())
    entry.update(change)
    path.write_bytes(pickle.dumps({k: v for k, v in entry.items() if v is not None}, protocol=2))
    return path


def test_cifar_bytes_keys_are_the_same_fields(tmp_path):
    """The CIFAR page's unpickle() (encoding='bytes') gives b'data', b'labels'; a batch pickled again from it
    holds the same images and labels as the original."""
    raw = write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for f in folder.iterdir():  # the released files are Python 2 pickles: their str keys come back as bytes
        entry = pickle.loads(f.read_bytes())
        entry = {k.encode(): [v.encode() for v in val] if k == "label_names" else val for k, val in entry.items()}
        f.write_bytes(pickle.dumps(entry))  # what pickle.dump(unpickle(file)) writes, protocol 4
    ds = build_dataset("cifar10", tmp_path, verify=False)
    assert ds.classes[9] == "truck" and [ds[i][1] for i in range(3)] == [(5 + j) % 10 for j in range(3)]
    r_plane = raw["test_batch"][2, :1024].reshape(32, 32).astype(np.float32) / 255
    mean, std = dataset_spec("cifar10").mean, dataset_spec("cifar10").std
    assert np.allclose(ds[2][0][0].numpy(), (r_plane - mean[0]) / std[0], atol=1e-5)


@pytest.mark.parametrize("change, message", [
    (dict(data=None), r"test_batch: expected a CIFAR batch with keys 'data' and 'labels', found 'batch_label'"),
    (dict(data=np.zeros((3, 1024), np.uint8)), r"test_batch: expected 'data' of uint8 \[N, 3072\].*got uint8 \[3, 1024\]"),
    (dict(labels=[0, 1, 10]), r"test_batch \('labels'\): expected labels in 0..9 .*found 10 at index 2"),
    (dict(labels=[0, 1]), r"test_batch \('labels'\): expected one label per image \(3 in"),
    (dict(data=np.zeros((3, 3072), np.float32)), r"expected 'data' of uint8 \[N, 3072\].*got float32"),
])
def test_cifar_malformed_batch_is_named(tmp_path, change, message):
    _cifar_folder(tmp_path, **change)
    with pytest.raises(InvalidFileError, match=message):
        build_dataset("cifar10", tmp_path, verify=False)


def test_cifar_pickle_naming_code_is_refused(tmp_path):
    """A batch whose pickle would call a function (here os.system) is refused before anything runs."""
    path = _cifar_folder(tmp_path)
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    with pytest.raises(InvalidFileError, match="test_batch: expected a CIFAR python-pickle batch.*os.system"):
        build_dataset("cifar10", tmp_path, verify=False)
    assert not (tmp_path / "pwned").exists()
    path.write_bytes(b"not a pickle")
    with pytest.raises(InvalidFileError, match="test_batch: expected a CIFAR python-pickle batch"):
        build_dataset("cifar10", tmp_path, verify=False)


def test_cli_malformed_data_is_one_line_exit_2(tmp_path, capsys):
    from eval.cli import main

    _cifar_folder(tmp_path, labels=[0, 1, 10])
    code = main(["eval", "sresnet19_tdbn", "--random-weights", "--data", f"cifar10:{tmp_path}", "--no-verify"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "test_batch ('labels'): expected labels in 0..9" in err[0]


def test_image_folder_bad_image_is_named(tmp_path):
    from eval.data.images import image_folder

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / cls / "ok.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    ds = image_folder(tmp_path)
    assert ds.classes == ["a", "b"] and len(ds) == 3
    assert np.asarray(ds[0][0])[0, 0].tolist() == [10, 20, 30]
    with pytest.raises(InvalidFileError, match=r"broken.png: expected an image file PIL can read"):
        ds[[s for s, _ in ds.samples].index(str(tmp_path / "b" / "broken.png"))]
    with pytest.raises(InvalidFileError, match="expected an image folder, one sub-folder per class"):
        image_folder(tmp_path / "a")
    (tmp_path / "b" / "empty.jpg").write_bytes(b"")
    with pytest.raises(InvalidFileError, match=r"empty.jpg: the file is empty \(0 bytes\)"):
        ds = image_folder(tmp_path)
        ds[[s for s, _ in ds.samples].index(str(tmp_path / "b" / "empty.jpg"))]


def test_a_class_folder_name_that_is_not_utf8_is_refused_where_it_enters(tmp_path):
    """A class name becomes a label name in config.json and the card (UTF-8): a folder named by undecodable
    bytes ended `tdbn-zoo ship` in a UnicodeEncodeError after half the checkpoint folder was written."""
    from eval.data.images import build_folder_dataset

    for cls in ("ok", os.fsdecode(b"t\xffshirt")):
        (tmp_path / cls).mkdir()
        Image.new("L", (8, 8), 5).save(tmp_path / cls / "0.png")
    with pytest.raises(InvalidFileError, match=r"class folder name 't\\udcffshirt' is not printable UTF-8"):
        build_folder_dataset(tmp_path, "test", in_chans=1)
