"""Bad inputs to the event-data paths (readers, layouts, splits, framing, finetune and eval on recordings),
table-driven (make-events' bad inputs: test_make_events.py).

Every case asserts its outcome class (tests/support/cli.py): a one-line exit-2 error (CLI) or a user error
(Python) that names the file and what was expected, or the correct result checked by the case.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from eval.data.events import EVENT_DTYPE, save_event_npz, write_nmnist_file
from eval.data.events.readers import read_recording
from eval.data.events.recordings import scan_recordings, split_recordings, load_recordings
from tests.support.cli import assert_cli_user_error, assert_user_error, run_cli

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "events"
if not REAL.is_dir():
    REAL = Path("/work/shared/data/events")
ARCH = "sresnet19_narrow_tdbn"


def events(n=200, w=34, h=34, span=300_000, seed=0):
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(0, span, n))
    ev["x"], ev["y"], ev["p"] = rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, 2, n)
    return ev


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, np.ndarray) and path.suffix == ".bin":
        write_nmnist_file(path, data)
    elif isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


# --- readers: (name, file maker, sensor_size, needles) ---------------------------------------------------
def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


READER_CASES = [
    ("unknown suffix", lambda d: write(d / "rec.txt", "hello"), None, [r"rec\.txt", r"unknown event file type"]),
    ("truncated N-MNIST", lambda d: write(d / "r.bin", b"\x01" * 12), None, [r"r\.bin", "5 bytes", "truncated"]),
    ("garbage EVT3 raw (no header)", lambda d: write(d / "r.raw", os.urandom(64)), None, [r"r\.raw", "sensor size"]),
    ("garbage aedat4", lambda d: write(d / "r.aedat4", os.urandom(64)), None, [r"r\.aedat4", "AEDAT 4"]),
    ("garbage es", lambda d: write(d / "r.es", os.urandom(64)), None, [r"r\.es", "Event Stream"]),
    ("empty es", lambda d: write(d / "r.es", b""), None, [r"r\.es"]),
    ("csv without sensor size", lambda d: write(d / "r.csv", "t,x,y,p\n0,1,1,1\n5,2,2,0\n"), None,
     [r"r\.csv", "sensor size", "--sensor-size"]),
    ("csv events outside the sensor", lambda d: write(d / "r.csv", "t,x,y,p\n0,1,1,1\n5,20,2,0\n"), (10, 10, 2),
     [r"r\.csv", r"x=20|x \[1, 20\]", "10"]),
    ("csv not numbers", lambda d: write(d / "r.csv", "t,x,y,p\nzero,a,b,c\n"), (10, 10, 2), [r"r\.csv", "CSV"]),
    ("plain npy", lambda d: (np.save(d / "r.npy", np.zeros((4, 4))), d / "r.npy")[1], (10, 10, 2),
     [r"r\.npy", "structured array"]),
    ("pickled npy", lambda d: (np.save(d / "r.npy", np.array([{"x": 1}], dtype=object)), d / "r.npy")[1], (10, 10, 2),
     [r"r\.npy", "pickle|not a readable"]),
    ("npz without events", lambda d: _npz(d / "r.npz", other=np.zeros(3)), (10, 10, 2), [r"r\.npz", "'events'"]),
    ("npz without sensor size", lambda d: _npz(d / "r.npz", events=events()), None, [r"r\.npz", "sensor size"]),
    ("corrupt npz (zip)", lambda d: write(d / "r.npz", b"PK\x03\x04" + os.urandom(40)), (10, 10, 2), [r"r\.npz"]),
    ("bin outside the given sensor", lambda d: write(d / "r.bin", events(w=34)), (10, 10, 2),
     [r"r\.bin", "sensor is 10x10"]),
    ("negative sensor size", lambda d: write(d / "r.bin", events()), (-3, 10, 2), ["sensor_size", "positive"]),
    ("missing file", lambda d: d / "nope.bin", None, [r"nope\.bin", "not found"]),
]


@pytest.mark.parametrize("name,make,sensor,needles", READER_CASES, ids=[c[0] for c in READER_CASES])
def test_reader_refuses_bad_files(tmp_path, name, make, sensor, needles):
    path = make(tmp_path)
    assert_user_error(lambda: read_recording(path, sensor), *needles)


@pytest.mark.skipif(not REAL.is_dir(), reason="real recordings (../shared/data/events) not present")
@pytest.mark.parametrize("name,sensor,needles", [
    ("sample_ncars.dat", None, [r"sample_ncars\.dat", "sensor size"]),  # a 2D-type DAT has no size in its header
    ("sample_aedat_header.aedat", None, [r"sample_aedat_header\.aedat", "no events"]),
])
def test_real_files_without_what_is_needed(name, sensor, needles):
    assert_user_error(lambda: read_recording(REAL / name, sensor), *needles)


# --- layouts and labels ---------------------------------------------------------------------------------
def folder_with_csv(d: Path, rows: str, files=("a.bin", "b.bin", "c.bin", "d.bin")) -> Path:
    for i, f in enumerate(files):
        write(d / f, events(seed=i))
    write(d / "labels.csv", rows)
    return d


LAYOUT_CASES = [
    ("path escapes with ..", "path,label\n../../etc/passwd,x\na.bin,y\n", [r"\.\./\.\./etc/passwd", "outside"]),
    ("absolute path", "path,label\n/etc/hostname,x\na.bin,y\n", ["/etc/hostname", "outside"]),
    ("missing columns", "name,class\na.bin,x\n", ["labels.csv", "path,label"]),
    ("header only", "path,label\n", ["labels.csv", "no recordings"]),
    ("int labels with gaps", "path,label\na.bin,1\nb.bin,5\n", ["labels.csv", r"\[0, 2, 3, 4\]", "unused"]),
    ("negative int label", "path,label\na.bin,-1\nb.bin,0\n", ["labels.csv", "0..K-1"]),
    ("huge int label", "path,label\na.bin,0\nb.bin,999999999\n", ["labels.csv", "0..K-1"]),
    ("missing recording", "path,label\na.bin,x\nzz.bin,y\n", ["line 3", r"zz\.bin", "does not exist"]),
    ("empty label", "path,label\na.bin,\nb.bin,y\n", ["labels.csv", "empty label"]),
]


@pytest.mark.parametrize("name,rows,needles", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_labels_csv_refused(tmp_path, name, rows, needles):
    root = folder_with_csv(tmp_path / "ds", rows)
    assert_user_error(lambda: scan_recordings(root), *needles)


def test_labels_csv_symlink_out_of_the_folder_is_refused(tmp_path):
    outside = write(tmp_path / "secret.bin", events())
    root = folder_with_csv(tmp_path / "ds", "path,label\nlink.bin,x\na.bin,y\n")
    (root / "link.bin").symlink_to(outside)
    assert_user_error(lambda: scan_recordings(root), r"link\.bin", "outside")


def test_labels_csv_binary_garbage(tmp_path):
    root = tmp_path / "ds"
    write(root / "labels.csv", b"\xff\xfe\x00\x81" * 20)
    assert_user_error(lambda: scan_recordings(root), "labels.csv")


def test_labels_csv_names_become_sorted_ids(tmp_path):  # correct result
    root = folder_with_csv(tmp_path / "ds", "path,label\na.bin,zebra\nb.bin,ant\nc.bin,zebra\nd.bin,moth\n")
    recs, names = scan_recordings(root)
    assert names == ["ant", "moth", "zebra"]
    assert [(r.name, r.label) for r in recs] == [("a.bin", 2), ("b.bin", 0), ("c.bin", 2), ("d.bin", 1)]


def test_folder_without_classes_or_csv(tmp_path):
    write(tmp_path / "ds" / "x.bin", events())
    assert_user_error(lambda: scan_recordings(tmp_path / "ds"), "neither labels.csv", "folder per class")


def test_class_folder_without_recordings(tmp_path):
    write(tmp_path / "ds" / "cat" / "a.bin", events())
    write(tmp_path / "ds" / "dog" / "notes.txt", "no events here")
    assert_user_error(lambda: scan_recordings(tmp_path / "ds"), "dog", "no recordings")


# --- splits ---------------------------------------------------------------------------------------------
def class_folder(d: Path, per_class=3, classes=("cat", "dog")) -> Path:
    for c, cls in enumerate(classes):
        for i in range(per_class):
            write(d / cls / f"{i}.bin", events(seed=10 * c + i))
    return d


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, float("nan")])
def test_split_fraction_out_of_range(tmp_path, fraction):
    recs, _ = scan_recordings(class_folder(tmp_path / "ds"))
    assert_user_error(lambda: split_recordings(recs, "by-recording", fraction), "test fraction", r"\(0, 1\)")


def test_split_by_recording_needs_two_recordings_in_a_class(tmp_path):
    recs, _ = scan_recordings(class_folder(tmp_path / "ds", per_class=1))
    assert_user_error(lambda: split_recordings(recs), "at least 2 recordings", "by-time")


def test_split_is_deterministic_stratified_and_leakage_free(tmp_path):  # correct result
    recs, _ = scan_recordings(class_folder(tmp_path / "ds", per_class=5))
    a, b = split_recordings(recs, seed=3), split_recordings(recs, seed=3)
    assert a == b
    test = set(a["test"])
    assert {n.split("/")[0] for n in test} == {"cat", "dog"} and len(test) == 2  # one per class of 5 at 0.2
    from eval.data.events import EventFraming
    from eval.data.events.recordings import EventFolder
    load_recordings(recs)
    f = EventFraming((16, 16, 2), (16, 16), time_window=50_000, T=2)
    parts = {p: EventFolder(tmp_path / "ds", f, recordings=(recs, ["cat", "dog"]), slice_us=100_000, part=p, split=a)
             for p in ("train", "test")}
    names = {p: {ds.recordings[i].name for i, _ in ds.samples} for p, ds in parts.items()}
    assert names["test"] == test and not (names["train"] & test)
    by_time = split_recordings(recs, "by-time", 0.4)
    parts = {p: EventFolder(tmp_path / "ds", f, recordings=(recs, ["cat", "dog"]), slice_us=100_000, part=p,
                            split=by_time) for p in ("train", "test")}
    for i, rec in enumerate(recs):  # no train window reaches past the cut, no test window starts before it
        cut = rec.t_first + int((rec.t_last + 1 - rec.t_first) * 0.6)
        assert all(s + 100_000 <= cut for j, s in parts["train"].samples if j == i)
        assert all(s >= cut for j, s in parts["test"].samples if j == i)


def test_split_by_time_needs_windows(tmp_path):
    from eval.data.events import EventFraming
    from eval.data.events.recordings import EventFolder
    recs, names = scan_recordings(class_folder(tmp_path / "ds"))
    load_recordings(recs)
    f = EventFraming((16, 16, 2), (16, 16), time_window=50_000, T=2)
    split = split_recordings(recs, "by-time", 0.2)
    assert_user_error(lambda: EventFolder(tmp_path / "ds", f, recordings=(recs, names), part="train", split=split),
                      "by-time", "--slice-ms")


# --- the CLI: finetune refuses before any model is built -------------------------------------------------
FT = ["finetune", "--model", f"{ARCH}.fashion_mnist_t2", "--no-progress", "--epochs", "1"]
FINETUNE_CASES = [
    ("slice 0", ["--slice-ms", "0"], ["--slice-ms", "> 0", "'0'"]),
    ("slice nan", ["--slice-ms", "nan"], ["--slice-ms", "finite", "'nan'"]),
    ("overlap >= slice", ["--slice-ms", "50", "--overlap-ms", "50"], ["--overlap-ms 50", "smaller"]),
    ("test fraction 1", ["--slice-ms", "50", "--test-fraction", "1"], ["--test-fraction", r"\(0, 1\)"]),
    ("slice not whole µs per frame", ["--slice-ms", "50", "--T", "3"], ["--slice-ms 50", "T=3"]),
    ("no sample length", [], ["--slice-ms", "--time-window-ms"]),
    ("lr nan", ["--slice-ms", "50", "--lr", "nan"], ["--lr", "finite", "'nan'"]),
    ("negative overlap", ["--slice-ms", "50", "--overlap-ms", "-5"], ["--overlap-ms", ">= 0"]),
    ("bad tag", ["--slice-ms", "50", "--tag", "My/Tag"], ["--tag", "lower-case"]),
    ("epochs 0", ["--slice-ms", "50", "--epochs", "0"], ["--epochs", ">= 1"]),
    ("unknown model", ["--slice-ms", "50", "--model", "resnet50"], ["unknown model", "resnet50"]),
    ("time window disagrees with slice", ["--slice-ms", "50", "--time-window-ms", "10"], ["--time-window-ms", "--slice-ms"]),
    ("by-time without windows", ["--time-window-ms", "25", "--split", "by-time"], ["by-time", "--slice-ms"]),
]


@pytest.mark.parametrize("name,extra,needles", FINETUNE_CASES, ids=[c[0] for c in FINETUNE_CASES])
def test_finetune_refuses_bad_flags_before_the_model(tmp_path, capsys, monkeypatch, name, extra, needles):
    import zoo
    monkeypatch.setattr(zoo, "create", lambda *a, **k: pytest.fail("a model was built before the inputs were checked"))
    root = class_folder(tmp_path / "ds")
    result = run_cli([*FT, "--dataset", root, "--out", tmp_path / "out", *extra], capsys)
    assert_cli_user_error(result, *needles)


def test_finetune_refuses_escaping_labels_csv(tmp_path, capsys):
    root = folder_with_csv(tmp_path / "ds", "path,label\n../../etc/passwd,x\na.bin,y\n")
    result = run_cli([*FT, "--dataset", root, "--out", tmp_path / "o", "--slice-ms", "50"], capsys)
    assert_cli_user_error(result, "etc/passwd", "outside")


def test_finetune_class_without_training_windows(tmp_path, capsys):
    root = class_folder(tmp_path / "ds")
    result = run_cli([*FT, "--dataset", root, "--out", tmp_path / "o", "--slice-ms", "400"], capsys)  # 300 ms recs
    assert_cli_user_error(result, "no samples|no training samples")


def test_finetune_npz_labels_with_gaps(tmp_path, capsys):
    root = tmp_path / "npz"
    root.mkdir()
    for split in ("train", "test"):
        save_event_npz(root / f"{split}.npz", [events(seed=i) for i in range(4)], [1, 5, 1, 5], (34, 34, 2))
    result = run_cli(["finetune", "--dataset", root, "--model", ARCH, "--T", "2", "--time-window-ms", "50",
                      "--out", tmp_path / "o", "--no-progress"], capsys)
    assert_cli_user_error(result, "0..K-1", r"\[0, 2, 3, 4\]")


# --- older event formats ----------------------------------------------------------------------------------
def test_event_npz_negative_labels(tmp_path):
    from eval.data.events import EventNpz
    save_event_npz(tmp_path / "s.npz", [events(), events(seed=1)], [0, -4], (34, 34, 2))
    assert_user_error(lambda: EventNpz(tmp_path / "s.npz"), r"s\.npz", "0..K-1")


def test_event_npz_corrupt_zip(tmp_path):
    from eval.data.events import EventNpz
    save_event_npz(tmp_path / "s.npz", [events()], [0], (34, 34, 2))
    data = (tmp_path / "s.npz").read_bytes()
    (tmp_path / "s.npz").write_bytes(data[: len(data) // 2])
    assert_user_error(lambda: EventNpz(tmp_path / "s.npz"), r"s\.npz", "not a readable")


def test_event_folder_labels_csv_escape(tmp_path):
    from eval.data.events import EventFolder
    write(tmp_path / "ds" / "a.bin", events())
    write(tmp_path / "ds" / "labels.csv", "file,label\n/etc/hostname,0\n")
    assert_user_error(lambda: EventFolder(tmp_path / "ds", sensor_size=(34, 34, 2)), "/etc/hostname", "outside")


def test_truncated_nmnist_in_event_folder_names_the_file(tmp_path):
    from eval.data.events import read_event_file
    write(tmp_path / "a.bin", b"\x00" * 7)
    assert_user_error(lambda: read_event_file(tmp_path / "a.bin"), r"a\.bin", "multiple of 5")


# --- eval of a fine-tuned checkpoint: stored framing, conflicting flags -------------------------------------
@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A checkpoint folder as finetune writes it (tiny, random weights) and its recordings folder."""
    import zoo
    from zoo.checkpoints import save_pretrained
    d = tmp_path_factory.mktemp("tuned")
    root = class_folder(d / "ds")
    recs, names = scan_recordings(root)
    split = split_recordings(recs, seed=0)
    model = zoo.create(ARCH, num_classes=2, in_chans=1, T=2)
    framing = dict(target_size=[16, 16], time_window_us=50_000, T=2, channels=1, slice_us=100_000, overlap_us=0)
    save_pretrained(model, d / "ckpt", tag=f"{ARCH}.mine", cfg=dict(
        dataset="events:ds", input_size=[1, 16, 16], label_names=names, event_framing=framing, split=split))
    return root, d / "ckpt"


EVAL_CASES = [
    ("T conflicts", ["-T", "4"], ["-T|--T", "4", "stored", "T=2"]),
    ("input size conflicts", ["--input-size", "28"], ["--size", "28", "stored", r"\(16, 16\)"]),
    ("time window conflicts", ["--time-window-ms", "10"], ["--time-window-ms", "stored", "50"]),
]


@pytest.mark.parametrize("name,extra,needles", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_eval_refuses_flags_that_conflict_with_the_stored_framing(tuned, capsys, name, extra, needles):
    root, ckpt = tuned
    assert_cli_user_error(run_cli(["eval", ckpt, "--data", f"events:{root}", *extra], capsys), *needles)


def test_eval_on_other_classes(tuned, tmp_path, capsys):
    _, ckpt = tuned
    other = class_folder(tmp_path / "other", classes=("ant", "bee"))
    assert_cli_user_error(run_cli(["eval", ckpt, "--data", f"events:{other}"], capsys), "ant", "cat", "fine-tuned on")


def test_eval_on_a_folder_without_the_stored_test_recordings(tuned, tmp_path, capsys):
    _, ckpt = tuned
    other = class_folder(tmp_path / "other", per_class=1)
    for cls in ("cat", "dog"):
        os.rename(other / cls / "0.bin", other / cls / "9.bin")
    assert_cli_user_error(run_cli(["eval", ckpt, "--data", f"events:{other}"], capsys), "lacks the test recordings")


def test_save_pretrained_own_tag_copies_no_other_dataset(tuned):  # correct result
    _, ckpt = tuned
    cfg = json.loads((ckpt / "config.json").read_text())["pretrained_cfg"]
    assert cfg["tag"] == "mine" and cfg["dataset"] == "events:ds" and cfg["input_size"] == [1, 16, 16]
    assert "recipe" not in cfg and "train_command" not in cfg and cfg.get("mean") != [0.1307]
    card = (ckpt / "README.md").read_text()
    assert "mnist" not in card.lower()


def test_zoo_create_from_the_folder_gets_the_stored_framing(tuned):  # correct result
    import zoo
    root, ckpt = tuned
    model = zoo.create(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(ckpt)))
    assert model.num_classes == 2 and model.T == 2 and model.in_chans == 1
    assert model.pretrained_cfg["event_framing"]["time_window_us"] == 50_000
    assert model.pretrained_cfg["label_names"] == ["cat", "dog"]
