"""Hostile and broken inputs for the data readers and the trainer (issue 13): malformed IDX files (a gz bomb
among them), labels and pixels out of range, bad subset archives, every bad ``tdbn-zoo train`` number, and the
faults that used to lose data (a diverged step, temp files of a kill, ``metrics.jsonl`` after a resume).

Every case asserts its outcome class (``tests/hostile.py``): a one-line user error naming what was expected
and what came (exit 2 on the command line), or the correct result, checked against arrays and runs built
here independently of the code under test. Files are written by hand from the formats' definitions (IDX:
``00 00 <type> <ndim> <big-endian dims> <data>``; npz: a zip of ``.npy`` files)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.data.images import build_dataset, load_idx_pair, load_subset, read_idx
from eval.train.trainer import TrainConfig, Trainer
from eval.train.checkpoint import DivergedError, read_training_checkpoint, save_training_checkpoint
from hostile import assert_cli_user_error, assert_user_error, run_cli
from test_train import TINY, tiny_data
from zoo import SpikingResNet

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


# ---------------------------------------------------------------------------------------------- train arguments
BAD_TRAIN_ARGS = {  # flag, value, needles of the one error line
    "steps 0": ("--max-steps-per-epoch", "0", ">= 1"), "steps -3": ("--max-steps-per-epoch", "-3", ">= 1"),
    "subset 0": ("--train-subset", "0", ">= 1"), "subset -5": ("--train-subset", "-5", ">= 1"),
    "grad clip -1": ("--grad-clip", "-1", "> 0"), "grad clip 0": ("--grad-clip", "0", "> 0"),
    "grad clip nan": ("--grad-clip", "nan", "finite"),
    "lr nan": ("--lr", "nan", "finite number > 0"), "lr inf": ("--lr", "inf", "finite"),
    "lr 0": ("--lr", "0", "> 0"), "lr -0.1": ("--lr", "-0.1", "> 0"), "lr word": ("--lr", "fast", "> 0"),
    "epochs 0": ("--epochs", "0", ">= 1"), "epochs -1": ("--epochs", "-1", ">= 1"),
    "epochs 1.5": ("--epochs", "1.5", "integer"), "batch 0": ("--batch-size", "0", ">= 1"),
    "save every -1": ("--save-every-steps", "-1", ">= 0"), "log every 0": ("--log-every-steps", "0", ">= 1"),
    "threads 0": ("--threads", "0", r"\[1, \d+\]"), "threads -2": ("--threads", "-2", r"\[1, \d+\]"),
    "seed -1": ("--seed", "-1", r"\[0, 4294967295\]"), "seed 2^32": ("--seed", str(2 ** 32), "4294967295"),
    "momentum 1.5": ("--momentum", "1.5", r"\[0, 1\)"), "momentum nan": ("--momentum", "nan", "finite"),
    "weight decay -1": ("--weight-decay", "-1", ">= 0"), "lr gamma 0": ("--lr-gamma", "0", r"\(0, 1\]"),
    "lr gamma 2": ("--lr-gamma", "2", r"\(0, 1\]"), "lr step epochs 0": ("--lr-step-epochs", "0", ">= 1"),
    "workers -1": ("--workers", "-1", r"\[0, \d+\]"), "T 0": ("--T", "0", ">= 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAIN_ARGS))
def test_bad_train_numbers_stop_at_parse_time(tmp_path, capsys, case):
    flag, value, needle = BAD_TRAIN_ARGS[case]
    out = tmp_path / "run"
    result = run_cli(["train", "--preset", PRESET, "--data-dir", tmp_path / "no-data", "--out", out,
                      f"{flag}={value}"], capsys)
    assert_cli_user_error(result, flag, needle, f"got '{value}'")
    assert not out.exists()  # nothing was started


def test_train_config_api_refuses_the_same_values():
    for field, value in (("lr", float("nan")), ("lr", float("inf")), ("grad_clip", -1.0), ("epochs", 0),
                         ("max_steps_per_epoch", 0), ("save_every_steps", -1), ("batch_size", True),
                         ("log_every_steps", 0), ("momentum", 1.0), ("seed", -1)):
        assert_user_error(lambda: TrainConfig(**{field: value}), field, "must be", repr(value))


def test_train_refuses_bad_device_before_data(tmp_path, capsys):
    result = run_cli(["train", "--preset", PRESET, "--data-dir", tmp_path / "no-data", "--out", tmp_path / "r",
                      "--device", "gpu7"], capsys)
    assert_cli_user_error(result, "device", "gpu7")
    assert "not found" not in result.err


def test_train_with_labels_out_of_range_stops_before_training(tmp_path, capsys):
    folder = fashion_folder(tmp_path)
    write(folder / "train-labels-idx1-ubyte.gz", idx_bytes(np.array([0, 1, 2, 3, 4, 5, 6, 200] * 2, np.uint8)))
    out = tmp_path / "run"
    result = run_cli(["train", "--preset", PRESET, "--data-dir", tmp_path, "--out", out, "--epochs", "1",
                      "--batch-size", "8", "--no-progress"], capsys)
    assert_cli_user_error(result, "train-labels-idx1-ubyte.gz", "0..9", "found 200")
    assert not (out / "last.safetensors").exists()


def test_train_refuses_to_start_a_new_run_over_an_old_one(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, progress=False, max_steps_per_epoch=1)
    torch.manual_seed(0)
    Trainer(SpikingResNet(**TINY), tiny_data(16), None, cfg, out_dir=out).fit()
    before = _sha(out / "last.safetensors")
    result = run_cli(["train", "--preset", PRESET, "--data-dir", tmp_path / "no-data", "--out", out], capsys)
    assert_cli_user_error(result, "already holds a run", "--resume")
    assert_user_error(lambda: Trainer(SpikingResNet(**TINY), tiny_data(16), None, cfg, out_dir=out).fit(),
                      "already holds a run")
    assert _sha(out / "last.safetensors") == before


# ---------------------------------------------------------------------------------------------- training faults
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CFG = dict(epochs=2, batch_size=8, lr=0.2, schedule="cosine", weight_decay=1e-3, save_every_steps=3,
           log_every_steps=2, progress=False)  # 6 steps per epoch on 48 images; saves at steps 3, 6, 9, 12


def _trainer(out: Path, **over) -> Trainer:
    torch.manual_seed(0)
    return Trainer(SpikingResNet(**TINY), tiny_data(), tiny_data(12, seed=1), TrainConfig(**{**CFG, **over}),
                   out_dir=out)


def _after_step(trainer: Trainer, step: int, action) -> None:
    count = [0]

    def hook(opt, args, kwargs):
        count[0] += 1
        if count[0] == step:
            action(trainer)
    trainer.optimizer.register_step_post_hook(hook)


def _poison(trainer: Trainer) -> None:
    with torch.no_grad():
        trainer.model.conv1.weight[0, 0, 0, 0] = float("nan")


class Killed(Exception):
    pass


def _kill(trainer: Trainer) -> None:
    raise Killed  # the files are left as a SIGKILL at this point leaves them (every write is atomic)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    # module-scoped, so set up before the function-scoped one_thread fixture: fix the thread count here too
    # (bit-exact comparisons need the same intra-op thread count on both sides)
    out, n = tmp_path_factory.mktemp("reference"), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _trainer(out).fit()
    finally:
        torch.set_num_threads(n)
    return out


def _assert_same_weights(a: Path, b: Path) -> None:
    from zoo.checkpoints import read_safetensors
    wa, wb = read_safetensors(a / "model.safetensors"), read_safetensors(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_diverged_step_keeps_the_last_good_checkpoint_and_resume_completes_the_run(tmp_path, reference):
    trainer = _trainer(tmp_path)
    _after_step(trainer, 8, _poison)  # NaN weights after step 8; checkpoints were written at steps 3 and 6
    good = None

    def remember(t):
        nonlocal good
        good = _sha(tmp_path / "last.safetensors")
    _after_step(trainer, 7, remember)
    assert_user_error(trainer.fit, "diverged", "NaN", "global step 6", "last.safetensors", types=(DivergedError,))
    assert _sha(tmp_path / "last.safetensors") == good
    _, meta = read_training_checkpoint(tmp_path / "last.safetensors")
    assert meta["global_step"] == 6
    _trainer(tmp_path).fit(resume=True)  # the fault is gone: the run finishes as if nothing had happened
    _assert_same_weights(tmp_path, reference)


def test_nonfinite_weights_at_a_save_step_are_never_written(tmp_path):
    trainer = _trainer(tmp_path, save_every_steps=0, epochs=1, lr=0.1)
    trainer.save()
    good = _sha(tmp_path / "last.safetensors")
    _poison(trainer)
    assert_user_error(trainer.save, "diverged", "conv1.weight", "global step 0")
    assert_user_error(lambda: save_training_checkpoint(tmp_path / "last.safetensors", trainer.model,
                                                       trainer.optimizer),
                      "not written", "finite", "conv1.weight")
    assert_user_error(lambda: trainer.save_model(tmp_path / "model.safetensors"), "conv1.weight")
    assert _sha(tmp_path / "last.safetensors") == good and not (tmp_path / "model.safetensors").exists()


def test_divergence_before_any_checkpoint_says_so(tmp_path):
    trainer = _trainer(tmp_path)

    def poison_classifier(t):  # after the last norm: the loss is the first thing to turn NaN
        with torch.no_grad():
            t.model.fc.weight.fill_(float("inf"))
    _after_step(trainer, 1, poison_classifier)
    assert_user_error(trainer.fit, "diverged", "finite training loss", "no checkpoint was written")
    assert not (tmp_path / "last.safetensors").exists()


def test_stale_temp_files_of_a_kill_are_removed_on_the_next_start(tmp_path):
    trainer = _trainer(tmp_path, epochs=1)
    _after_step(trainer, 4, _kill)
    with pytest.raises(Killed):
        trainer.fit()
    ours = [tmp_path / n for n in (".last.safetensors.a1b2c3.tmp", ".model.safetensors.x9.tmp",
                                   ".metrics.jsonl.q.tmp")]
    theirs = [tmp_path / n for n in (".notes.txt.tmp", "last.safetensors.tmp", "data.tmp")]
    for p in ours + theirs:
        p.write_bytes(b"partial")
    _trainer(tmp_path, epochs=1).fit(resume=True)
    assert not any(p.exists() for p in ours)
    assert all(p.read_bytes() == b"partial" for p in theirs)  # not the trainer's own files: left alone


def test_metrics_after_resume_log_every_step_once(tmp_path, reference):
    trainer = _trainer(tmp_path)
    _after_step(trainer, 11, _kill)  # checkpoint at step 9; steps 10 logged, then re-run after the resume
    with pytest.raises(Killed):
        trainer.fit()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train_step", "glo')  # a line cut by the kill
    _trainer(tmp_path).fit(resume=True)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["global_step"] for r in records if r["kind"] == "train_step"]
    ref = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert steps == [r["global_step"] for r in ref if r["kind"] == "train_step"] == [2, 4, 6, 8, 10, 12]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    assert [r["global_step"] for r in records if r["kind"] == "resume"] == [9]
    resumed = [r for r in records if r["kind"] == "train_step" and r["global_step"] > 9]
    expected = [r for r in ref if r["kind"] == "train_step" and r["global_step"] > 9]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in expected], rel=1e-6)
    _assert_same_weights(tmp_path, reference)


def test_resume_refuses_another_training_set_or_model(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, progress=False, max_steps_per_epoch=1)
    torch.manual_seed(0)
    Trainer(SpikingResNet(**TINY), tiny_data(16), None, cfg, out_dir=tmp_path).fit()
    assert_user_error(lambda: Trainer(SpikingResNet(**TINY), tiny_data(24), None, cfg, out_dir=tmp_path)
                      .fit(resume=True), "cannot resume", "train_samples: 16 -> 24")
    assert_user_error(lambda: Trainer(SpikingResNet(**{**TINY, "T": 3}), tiny_data(16), None, cfg,
                                      out_dir=tmp_path).fit(resume=True), "cannot resume", "model_args")


def _rewrite(path: Path, edit_meta=None, edit_tensors=None) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file
    from zoo.checkpoints import read_safetensors
    tensors = read_safetensors(path)
    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata())
    meta = json.loads(header["tdbn_zoo_train"])
    if edit_meta:
        meta = edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    header["tdbn_zoo_train"] = meta if isinstance(meta, str) else json.dumps(meta)
    save_file(tensors, str(path), metadata=header)


def _nan_weight(tensors):
    tensors["model.conv1.weight"][0, 0, 0, 0] = float("nan")


CRAFTED_CHECKPOINTS = {  # how a good last.safetensors is altered -> needles of the error
    "metadata not JSON": (lambda m: "{not json", None, ["expected JSON"]),
    "negative epoch": (lambda m: {**m, "epoch": -1}, None, ["non-negative integer 'epoch'", "got -1"]),
    "step is a string": (lambda m: {**m, "global_step": "9"}, None, ["'global_step'", "got '9'"]),
    "optimizer missing": (lambda m: {k: v for k, v in m.items() if k != "optimizer"}, None,
                          ["cannot restore", "KeyError"]),
    "python random garbage": (lambda m: {**m, "python_random": [1, 2]}, None, ["cannot restore"]),
    "NaN weights": (None, _nan_weight, ["expected finite weights", "conv1.weight"]),
    "rng state missing": (None, lambda t: t.pop("rng.torch"), ["cannot restore", "rng.torch"]),
}


@pytest.mark.parametrize("case", sorted(CRAFTED_CHECKPOINTS))
def test_crafted_training_checkpoint_is_refused_on_resume(tmp_path, capsys, case):
    edit_meta, edit_tensors, needles = CRAFTED_CHECKPOINTS[case]
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, progress=False, max_steps_per_epoch=1)
    torch.manual_seed(0)
    Trainer(SpikingResNet(**TINY), tiny_data(16), None, cfg, out_dir=tmp_path).fit()
    _rewrite(tmp_path / "last.safetensors", edit_meta, edit_tensors)
    before = _sha(tmp_path / "last.safetensors")
    assert_user_error(lambda: Trainer(SpikingResNet(**TINY), tiny_data(16), None, cfg, out_dir=tmp_path)
                      .fit(resume=True), "last.safetensors", *needles)
    assert _sha(tmp_path / "last.safetensors") == before
