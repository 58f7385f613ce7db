"""Event pipelines: the paper's DVS framing against hand-computed frames, tonic's DVSGesture / CIFAR10DVS
classes on tiny on-disk fixtures of their exact formats, real recordings, generic datasets, bad input."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import tonic
import torch

from eval.data.events import (CIFAR10_DVS, DVS_GESTURE, EVENT_DTYPE, CIFAR10DVS, DVSGesture, EventFolder, EventFraming,
                              EventNpz, check_events, collate_frames, open_event_dataset, read_event_file,
                              save_event_npz, write_event_folder)
from tests.support.cli import assert_user_error, tree_digest
from tests.support.data import expected_frames, make_events, random_events, write_dvsgesture

EVENTS_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "events"
needs_events = pytest.mark.skipif(not EVENTS_DIR.is_dir(),
                                  reason=f"real event recordings not present at {EVENTS_DIR} (shared data)")


# --- the paper's pipelines: hand-computed frames ----------------------------------------------------------
def test_dvs_gesture_frames_by_hand():
    # first event at t0 = 5 s: frames count from it. (x, y, t - t0 in µs, p) -> (frame, p, y//4, x//4)
    t0 = 5_000_000
    ev = make_events(x=[0, 127, 4, 7, 100, 3, 9],
                     y=[0, 127, 8, 11, 64, 3, 9],
                     t=[t0, t0 + 29_999, t0 + 30_000, t0 + 30_001, t0 + 1_199_999, t0 + 1_200_000, t0 + 1_300_000],
                     p=[1, 0, 1, 1, 0, 1, 1])
    frames = DVS_GESTURE(ev)
    assert frames.shape == (40, 2, 32, 32) and frames.dtype == np.float32
    want = np.zeros_like(frames)
    want[0, 1, 0, 0] = 1        # t0
    want[0, 0, 31, 31] = 1      # 29.999 ms, pixel 127 -> 31
    want[1, 1, 2, 1] = 2        # 30.000 and 30.001 ms: frame 1, pixels (4,8) and (7,11) both -> (1,2)
    want[39, 0, 16, 25] = 1     # 1199.999 ms: the last frame
    # 1200 ms and later: beyond T=40 slices of 30 ms, dropped
    np.testing.assert_array_equal(frames, want)


def test_cifar10_dvs_frames_by_hand():
    ev = make_events(x=[127, 0, 64, 3, 50], y=[0, 127, 64, 4, 50], t=[100, 5_099, 5_100, 49_000, 50_100],
                     p=[0, 1, 1, 0, 1])
    frames = CIFAR10_DVS(ev)
    assert frames.shape == (10, 2, 42, 42)
    want = np.zeros_like(frames)
    want[0, 0, 0, 41] = 1       # x 127 * 42/128 = 41.67 -> 41
    want[0, 1, 41, 0] = 1       # 4.999 ms after t0 = 100 µs
    want[1, 1, 21, 21] = 1      # 5.0 ms: frame 1; 64 * 42/128 = 21
    want[9, 0, 1, 0] = 1        # 48.9 ms: frame 9 (3 * 42/128 = 0.98 -> 0, 4 -> 1.31 -> 1)
    np.testing.assert_array_equal(frames, want)     # 50.0 ms: past T * 5 ms, dropped


@pytest.mark.parametrize("framing", [DVS_GESTURE, CIFAR10_DVS], ids=["dvs-gesture", "cifar10-dvs"])
def test_paper_pipelines_match_reference_on_random_streams(framing):
    ev = random_events(5000, seed=1, t0=123_456)
    want = expected_frames(ev, framing.T, framing.time_window, 128, framing.target_size[0])
    np.testing.assert_array_equal(framing(ev), want)
    np.testing.assert_array_equal(framing(ev), framing(ev.copy()))  # deterministic


def test_collate_gives_t_n_c_h_w_batches_a_model_takes():
    from zoo.spiking_resnet import SpikingResNet

    framing = EventFraming((128, 128, 2), (16, 16), time_window=10_000, T=3)
    batch = [(framing(random_events(300, seed=s, duration_us=40_000)), s % 3) for s in range(4)]
    x, y = collate_frames(batch)
    assert x.shape == (3, 4, 2, 16, 16) and x.dtype == torch.float32
    assert y.tolist() == [0, 1, 2, 0] and y.dtype == torch.long
    torch.testing.assert_close(x[:, 2], torch.from_numpy(batch[2][0]))
    model = SpikingResNet(layers=(1,), channels=(8,), strides=(1,), stem_width=8, head_hidden=None,
                          num_classes=3, in_chans=2, T=3)
    assert model(x).shape == (4, 3)
    with pytest.raises(ValueError, match="different shapes"):
        collate_frames([batch[0], (batch[1][0][:2], 1)])


# --- bad input ---------------------------------------------------------------------------------------------
def test_bad_recordings_get_clear_errors():
    ev = random_events(50, duration_us=2_000_000)
    with pytest.raises(ValueError, match="lack the field.*p"):
        DVS_GESTURE(ev[["x", "y", "t"]])
    with pytest.raises(TypeError, match="structured array"):
        DVS_GESTURE(np.zeros((10, 4)))
    with pytest.raises(ValueError, match="empty"):
        DVS_GESTURE(ev[:0])
    with pytest.raises(ValueError, match=r"x coordinates span \[\d+, 200\].*sensor width is 128"):
        DVS_GESTURE(make_events([1, 200], [1, 2], [0, 1_300_000], [0, 1]))
    bad_p = np.zeros(2, dtype=[("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "i1")])
    bad_p["p"], bad_p["t"] = [-1, 1], [0, 1_300_000]
    with pytest.raises(ValueError, match=r"polarities must be 0 \(OFF\) or 1 \(ON\), got values \[-1, 1\]"):
        DVS_GESTURE(bad_p)


def test_too_short_recordings_are_refused_unless_padded():
    short = make_events([1, 2], [1, 2], [0, 1_169_999], [1, 0])  # last frame (39) would start at 1170 ms
    with pytest.raises(ValueError, match=r"lasts 1170 ms, too short for T=40 frames of 30 ms"):
        DVS_GESTURE(short)
    DVS_GESTURE(make_events([1, 2], [1, 2], [0, 1_170_000], [1, 0]))  # reaches the last frame: accepted
    padded = EventFraming((128, 128, 2), (32, 32), 30_000, 40, pad=True)(short)
    assert padded.shape == (40, 2, 32, 32) and padded[39].sum() == 0 and padded.sum() == 2


def test_unsorted_events_frame_like_sorted_ones():
    ev = random_events(500, seed=3)
    shuffled = ev[np.random.default_rng(0).permutation(len(ev))]
    shuffled = np.concatenate([ev[:1], shuffled[shuffled["t"] != ev["t"][0]]])
    np.testing.assert_array_equal(DVS_GESTURE(shuffled), DVS_GESTURE(ev))
    assert (np.diff(check_events(shuffled, (128, 128, 2))["t"]) >= 0).all()


# --- tonic's own dataset classes on tiny fixtures of their on-disk formats --------------------------------

def test_tonic_dvsgesture_class_reads_local_fixture(tmp_path, monkeypatch):
    monkeypatch.setattr(tonic.dataset, "download_and_extract_archive",
                        lambda *a, **k: pytest.fail("tried to download"))
    written = write_dvsgesture(tmp_path, "ibmGestureTrain", ["user02_led", "user01_fluorescent"])
    write_dvsgesture(tmp_path, "ibmGestureTest", ["user24_natural"], seed=1)
    ds = DVSGesture(str(tmp_path), train=True, transform=DVS_GESTURE)
    assert isinstance(ds, tonic.datasets.DVSGesture) and len(ds) == 6
    assert ds.users == [1, 1, 1, 2, 2, 2] and ds.targets == [0, 2, 10, 0, 2, 10]  # path order, not disk order
    assert ds.lighting[0] == "fluorescent"
    frames, label = ds[4]
    arr = written[("user02_led", 2)]
    ev = make_events(arr[:, 0], arr[:, 1], arr[:, 3] * 1000, arr[:, 2])
    assert label == 2
    np.testing.assert_array_equal(frames, expected_frames(ev, 40, 30_000, 128, 32))
    x, y = collate_frames([ds[i] for i in range(3)])
    assert x.shape == (40, 3, 2, 32, 32) and y.tolist() == [0, 2, 10]
    test = open_event_dataset("DVS-Gesture", train=False, data_root=tmp_path, transform=DVS_GESTURE)
    assert len(test) == 3 and test.users == [24, 24, 24]


def test_missing_datasets_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(tonic.dataset, "download_and_extract_archive",
                        lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(FileNotFoundError, match=r"never downloads.*ibmGestureTrain/user01_fluorescent"):
        DVSGesture(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no \.aedat4 files under .*CIFAR10DVS"):
        CIFAR10DVS(str(tmp_path))
    with pytest.raises(ValueError, match="--data-root"):
        open_event_dataset("cifar10dvs", train=True)


def test_tonic_cifar10dvs_class_reads_local_aedat4_fixture(tmp_path, monkeypatch):
    faery = pytest.importorskip("faery", reason="faery (test extra) writes the .aedat4 fixtures")
    monkeypatch.setattr(tonic.dataset, "download_and_extract_archive",
                        lambda *a, **k: pytest.fail("tried to download"))
    root = tmp_path / "CIFAR10DVS"
    classes = list(tonic.datasets.CIFAR10DVS.classes)
    recordings = {}
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in random.Random(c).sample(range(10), 10):  # natural order 0..9 != creation order, != "1" < "10"
            ev = np.zeros(6, dtype=faery.EVENTS_DTYPE)
            ev["t"] = 1_000 + np.array([0, 4_000, 5_000, 20_000, 49_999, 60_000]) + i
            ev["x"], ev["y"], ev["on"] = (c * 12 + i) % 128, [0, 10, 20, 64, 127, 5], [1, 0, 1, 0, 1, 1]
            path = root / name / f"cifar10_{name}_{i}.aedat4"
            if i == 9:
                path = root / name / f"cifar10_{name}_{10 * i}.aedat4"  # "90": sorts after 9 by number
            faery.events_stream_from_array(ev, dimensions=(128, 128)).to_file(str(path), zero_t0=False)
            recordings[str(path)] = ev
    train = CIFAR10DVS(str(tmp_path), train=True, transform=CIFAR10_DVS)
    test = CIFAR10DVS(str(tmp_path), train=False, transform=CIFAR10_DVS)
    assert isinstance(train, tonic.datasets.CIFAR10DVS)
    assert len(train) == 90 and len(test) == 10 and sorted(test.targets) == list(range(10))
    assert [Path(p).name for p in test.data[:2]] == ["cifar10_airplane_90.aedat4", "cifar10_automobile_90.aedat4"]
    assert not set(train.data) & set(test.data)
    assert [Path(p).stem.rsplit("_", 1)[1] for p in train.data[:9]] == [str(i) for i in range(9)]
    frames, label = test[3]
    ev = recordings[test.data[3]]
    ref = make_events(ev["x"], ev["y"], ev["t"], ev["on"])
    assert label == 3
    np.testing.assert_array_equal(frames, expected_frames(ref, 10, 5_000, 128, 42))
    assert frames.sum() == 5  # events at 0, 4, 5, 20 and 49.999 ms (frame 9); 60 ms is past T * 5 ms
    assert CIFAR10DVS(str(tmp_path), train=None).targets.count(0) == 10


# --- real recordings through the same framing code -------------------------------------------------------
def _histogram_reference(ev, sensor_wh, size_wh, T, window):
    """Independent reference with np.histogramdd over (t, p, y, x) bins."""
    t = ev["t"].astype(np.int64) - int(ev["t"].min())
    keep = t < T * window
    sx, sy = size_wh[0] / sensor_wh[0], size_wh[1] / sensor_wh[1]
    coords = np.stack([t[keep] // window, ev["p"][keep].astype(int), np.floor(ev["y"][keep] * sy),
                       np.floor(ev["x"][keep] * sx)], 1)
    hist, _ = np.histogramdd(coords, bins=[np.arange(T + 1), np.arange(3), np.arange(size_wh[1] + 1),
                                           np.arange(size_wh[0] + 1)])
    return hist.astype(np.float32)


@needs_events
def test_real_nmnist_sample_frames():
    ev = tonic.io.read_mnist_file(str(EVENTS_DIR / "sample_nmnist.bin"), dtype=tonic.datasets.NMNIST.dtype)
    assert len(ev) > 4000
    framing = EventFraming((34, 34, 2), (34, 34), time_window=30_000, T=10)
    frames = framing(ev)
    np.testing.assert_array_equal(frames, _histogram_reference(ev, (34, 34), (34, 34), 10, 30_000))
    assert frames.sum() > 0.95 * len(ev)  # ~310 ms recording, 300 ms framed
    np.testing.assert_array_equal(read_event_file(EVENTS_DIR / "sample_nmnist.bin"), ev)
    with pytest.raises(ValueError, match="too short for T=12"):
        EventFraming((34, 34, 2), (34, 34), 30_000, 12)(ev)


@needs_events
@pytest.mark.parametrize("name, reader, sensor", [
    ("sample.aedat4", "tonic", (320, 240)),
    ("davis346.aedat4", "tonic", (346, 260)),
    ("evt3.raw", "expelliarmus-evt3", (1280, 720)),
    ("sample_ncars.dat", "expelliarmus-dat", (304, 240)),
    ("dvs.es", "faery", (320, 240)),
])
def test_real_recordings_frame_like_the_reference(name, reader, sensor):
    path = EVENTS_DIR / name
    if reader == "tonic":
        ev = read_event_file(path)
    elif reader.startswith("expelliarmus"):
        import expelliarmus
        ev = expelliarmus.Wizard(encoding=reader.split("-")[1]).read(str(path))
    else:
        faery = pytest.importorskip("faery", reason="faery (test extra) reads Event Stream files")
        ev = np.concatenate(list(faery.events_stream_from_file(str(path))))
        ev.dtype.names = ("t", "x", "y", "p")
    ev = ev[:200_000]
    framing = EventFraming((*sensor, 2), (32, 32), time_window=5_000, T=4, pad=True)
    frames = framing(ev)
    np.testing.assert_array_equal(frames, _histogram_reference(ev, sensor, (32, 32), 4, 5_000))
    assert frames.sum() > 0
    with pytest.raises(ValueError, match="sensor width is 16"):  # a sensor too small for the recording
        EventFraming((16, 16, 2), (16, 16), 5_000, 4, pad=True)(ev)


# --- generic datasets: folder + labels.csv, npz ---------------------------------------------------------
def test_event_folder_and_npz_round_trip(tmp_path):
    recs = [random_events(200, sensor=34, duration_us=300_000, seed=s) for s in range(5)]
    labels = [3, 1, 4, 1, 0]
    framing = EventFraming((34, 34, 2), (34, 34), 30_000, 10)
    write_event_folder(tmp_path / "ds" / "train", recs, labels, (34, 34, 2))
    save_event_npz(tmp_path / "ds" / "test.npz", recs, labels, (34, 34, 2))
    folder = open_event_dataset(tmp_path / "ds", train=True, transform=framing)
    npz = open_event_dataset(tmp_path / "ds", train=False, transform=framing)
    assert isinstance(folder, EventFolder) and isinstance(npz, EventNpz)
    assert folder.sensor_size == npz.sensor_size == (34, 34, 2) and folder.num_classes == 5
    for i in range(5):
        want = expected_frames(recs[i], 10, 30_000, 34, 34)
        for ds in (folder, npz):
            frames, label = ds[i]
            assert label == labels[i]
            np.testing.assert_array_equal(frames, want)
    raw, _ = EventNpz(tmp_path / "ds" / "test.npz")[2]
    np.testing.assert_array_equal(raw, recs[2])


def test_generic_dataset_errors(tmp_path):
    recs = [random_events(50, sensor=34, duration_us=300_000, seed=s) for s in range(2)]
    write_event_folder(tmp_path / "f", recs, [0, 1], (34, 34, 2))
    with pytest.raises(ValueError, match=r"sensor size mismatch.*\(34, 34, 2\).*\(128, 128, 2\)"):
        EventFolder(tmp_path / "f", sensor_size=(128, 128, 2))
    (tmp_path / "f" / "labels.csv").write_text("file,label\n00000.bin,0\nmissing.bin,1\n")
    with pytest.raises(FileNotFoundError, match="line 3.*missing.bin"):
        EventFolder(tmp_path / "f")
    (tmp_path / "f" / "labels.csv").write_text("name,class\n00000.bin,0\n")
    with pytest.raises(ValueError, match="columns file,label"):
        EventFolder(tmp_path / "f")
    # class names are labels too (one folder dataset): sorted, they become the ids, as in torchvision's ImageFolder
    (tmp_path / "f" / "labels.csv").write_text("file,label\n00000.bin,zebra\n00001.bin,cat\n")
    named = EventFolder(tmp_path / "f")
    assert named.label_names == ["cat", "zebra"] and list(named.targets) == [1, 0]
    # an empty recording inside a dataset: the error names the file
    np.save(tmp_path / "f" / "empty.npy", np.zeros(0, EVENT_DTYPE))
    (tmp_path / "f" / "labels.csv").write_text("file,label\nempty.npy,0\n")
    with pytest.raises(ValueError, match=r"empty.npy: recording is empty"):
        EventFolder(tmp_path / "f", transform=EventFraming((34, 34, 2), (34, 34), 30_000, 2))[0]
    np.savez(tmp_path / "bad.npz", events=recs[0], labels=np.zeros(1))
    with pytest.raises(ValueError, match="lacks the array.*offsets"):
        EventNpz(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="tonic dataset name"):
        open_event_dataset(tmp_path / "nope", train=True)
    with pytest.raises(ValueError, match="unknown event file type"):
        read_event_file(Path(shutil.copy(tmp_path / "f" / "00000.bin", tmp_path / "x.txt")))
    # the same bytes under their own suffix read back as the recording written: the refusal is the suffix's
    back = read_event_file(tmp_path / "f" / "00000.bin")
    assert len(back) == len(recs[0]) and np.array_equal(back["x"], recs[0]["x"])


# --- contradictions and empty files, refused where they enter (nothing on disk changes) -------------------------
LABEL_CONTRADICTIONS = [
    ("same recording, two labels", "path,label\n00000.bin,0\n00001.bin,1\n00000.bin,1\n",
     [r"lines 2 and 4", "00000.bin", "two labels", "'0' and '1'"]),
    ("same recording twice", "path,label\n00000.bin,0\n00001.bin,1\n00000.bin,0\n", [r"lines 2 and 4", "twice"]),
    ("one recording by two spellings", "path,label\n00000.bin,0\n./00000.bin,0\n00001.bin,1\n",
     [r"lines 2 and 3", "twice"]),
    ("the older header, a duplicate", "file,label\n00001.bin,1\n00001.bin,0\n00000.bin,0\n",
     [r"lines 2 and 3", "two labels"]),
    ("same recording, two class names", "path,label\n00000.bin,cat\n00001.bin,dog\n00000.bin,dog\n",
     [r"lines 2 and 4", "two labels", "'cat' and 'dog'"]),
    ("more fields than the header", "path,label\n00000.bin,0\n00001.bin,1,0\n", ["line 3", "3 fields", "has 2"]),
]


@pytest.mark.parametrize("case,text,needles", LABEL_CONTRADICTIONS, ids=[c[0] for c in LABEL_CONTRADICTIONS])
def test_labels_csv_contradictions_are_refused_by_both_readers(tmp_path, case, text, needles):
    from eval.data.events.recordings import scan_recordings
    recs = [random_events(50, sensor=34, duration_us=300_000, seed=s) for s in range(2)]
    folder = write_event_folder(tmp_path / "f", recs, [0, 1], (34, 34, 2))
    (folder / "labels.csv").write_text(text)
    before = tree_digest(tmp_path)
    for reader in (lambda: EventFolder(folder), lambda: scan_recordings(folder)):  # one schema, one check
        assert_user_error(reader, r"labels\.csv", *needles)
    assert tree_digest(tmp_path) == before


def test_event_folder_reads_both_header_names_and_writes_path_label(tmp_path):
    recs = [random_events(50, sensor=34, duration_us=300_000, seed=s) for s in range(2)]
    folder = write_event_folder(tmp_path / "f", recs, [1, 0], (34, 34, 2))
    assert (folder / "labels.csv").read_text().splitlines()[0] == "path,label"
    (folder / "labels.csv").write_text("file,label\n00000.bin,1\n00001.bin,0\n")
    ds = EventFolder(folder)
    assert list(ds.targets) == [1, 0]
    (folder / "labels.csv").write_text("path,label\n00000.bin,0\n00001.bin,1\n", encoding="utf-8-sig")
    assert list(EventFolder(folder).targets) == [0, 1]  # a spreadsheet's "CSV UTF-8" starts with a BOM
    np.testing.assert_array_equal(ds[0][0], np.sort(recs[0], order="t"))


def test_event_folder_names_ids_and_class_folders_give_the_same_samples(tmp_path):
    """One folder read three ways (labels.csv with class names, with their ids, a folder per class): the same
    samples, the ids being the sorted class names' positions (torchvision ImageFolder's rule), whole
    recordings and --slice-ms windows alike, each framed as the hand-written reference frames it."""
    recs = [random_events(300, sensor=34, duration_us=200_000, seed=s) for s in range(4)]
    classes = ["zebra", "ant", "zebra", "moth"]  # sorted: ant 0, moth 1, zebra 2
    ids = write_event_folder(tmp_path / "ids", recs, [2, 0, 2, 1], (34, 34, 2))
    names = write_event_folder(tmp_path / "names", recs, [0] * 4, (34, 34, 2))
    (names / "labels.csv").write_text("path,label\n" + "".join(f"{i:05d}.bin,{c}\n" for i, c in enumerate(classes)))
    for i, c in enumerate(classes):  # the same files in a folder per class
        (tmp_path / "classes" / c).mkdir(parents=True, exist_ok=True)
        shutil.copy(ids / f"{i:05d}.bin", tmp_path / "classes" / c / f"{i:05d}.bin")
    framing = EventFraming((34, 34, 2), (34, 34), time_window=20_000, T=5)
    by_name = EventFolder(names, framing)
    assert by_name.label_names == ["ant", "moth", "zebra"] and list(by_name.targets) == [2, 0, 2, 1]
    by_id = EventFolder(ids, framing)
    assert by_id.label_names == ["0", "1", "2"] and list(by_id.targets) == [2, 0, 2, 1]
    by_folder = EventFolder(tmp_path / "classes", framing, sensor_size=(34, 34, 2))
    order = [1, 3, 0, 2]  # class folders list ant/00001, moth/00003, zebra/00000, zebra/00002
    assert [r.name for r in by_folder.recordings] == ["ant/00001.bin", "moth/00003.bin", "zebra/00000.bin",
                                                      "zebra/00002.bin"]
    for i in range(4):
        want = expected_frames(recs[i], 5, 20_000, 34, 34)
        for ds, j in ((by_name, i), (by_id, i), (by_folder, order.index(i))):
            frames, label = ds[j]
            assert label == by_name.targets[i]
            np.testing.assert_array_equal(frames, want)
    sliced = {k: EventFolder(root, framing, slice_us=100_000, sensor_size=(34, 34, 2))
              for k, root in (("names", names), ("ids", ids))}
    assert len(sliced["names"]) == len(sliced["ids"]) == 4 * 2  # two complete 100 ms windows in each 200 ms
    for j in range(len(sliced["ids"])):
        (a, ya), (b, yb) = sliced["names"][j], sliced["ids"][j]
        np.testing.assert_array_equal(a, b)
        assert ya == yb
    i, start = sliced["ids"].samples[3]  # the second window of recording 1, counted by hand from its start
    assert (i, start) == (1, 100_000)
    want = np.zeros((5, 2, 34, 34), dtype=np.float32)
    for x, y, t, p in zip(recs[1]["x"], recs[1]["y"], recs[1]["t"], recs[1]["p"]):
        if start <= t < start + 100_000:
            want[(int(t) - start) // 20_000, int(p), int(y), int(x)] += 1
    np.testing.assert_array_equal(sliced["ids"][3][0], want)


ESCAPES = [("parent folder", "../outside.bin", ["line 3", r"'\.\./outside\.bin'", "outside the dataset folder"]),
           ("absolute path", "{abs}", ["line 3", "outside.bin", "outside the dataset folder"]),
           ("link out of the folder", "link.bin", ["line 3", r"'link\.bin'", "outside the dataset folder"])]


@pytest.mark.parametrize("case,row,needles", ESCAPES, ids=[c[0] for c in ESCAPES])
def test_event_folder_refuses_a_path_leaving_the_folder_naming_the_row(tmp_path, case, row, needles):
    from tests.support.cli import assert_user_error

    recs = [random_events(50, sensor=34, duration_us=300_000, seed=s) for s in range(2)]
    folder = write_event_folder(tmp_path / "f", recs, [0, 1], (34, 34, 2))
    outside = Path(shutil.copy(folder / "00001.bin", tmp_path / "outside.bin"))  # a readable recording, outside
    (folder / "link.bin").symlink_to(outside)
    (folder / "labels.csv").write_text(f"path,label\n00000.bin,cat\n{row.format(abs=outside)},dog\n")
    assert_user_error(lambda: EventFolder(folder), r"labels\.csv", *needles)
    (folder / "labels.csv").write_text("path,label\n00000.bin,cat\nlink.bin,dog\n00001.bin,dog\n")
    (folder / "link.bin").unlink()
    (folder / "link.bin").symlink_to(folder / "00001.bin")  # a link inside the folder is the file it names
    assert_user_error(lambda: EventFolder(folder), r"lines 3 and 4", "twice")


def test_event_folder_whole_recording_too_short_is_refused_unless_pad(tmp_path):
    ev = random_events(100, sensor=34, duration_us=50_000, seed=1)  # 50 ms, frames start up to 80 ms
    folder = write_event_folder(tmp_path / "f", [ev], [0], (34, 34, 2))
    with pytest.raises(ValueError, match=r"00000\.bin lasts 50 ms, too short for T=5 frames of 20 ms"):
        EventFolder(folder, EventFraming((34, 34, 2), (34, 34), 20_000, 5))[0]
    frames, _ = EventFolder(folder, EventFraming((34, 34, 2), (34, 34), 20_000, 5, pad=True))[0]
    np.testing.assert_array_equal(frames, expected_frames(ev, 5, 20_000, 34, 34))
    assert frames[3:].sum() == 0 and frames[:3].sum() == len(ev)


@pytest.mark.parametrize("labels,needle", [([0, 1.7], r"label 1 is 1\.7"), ([0, float("nan")], "label 1 is nan")])
def test_event_npz_refuses_a_label_that_is_not_a_whole_number(tmp_path, labels, needle):
    recs = [random_events(50, sensor=34, duration_us=300_000, seed=s) for s in range(2)]
    save_event_npz(tmp_path / "s.npz", recs, [0, 1], (34, 34, 2))
    with np.load(tmp_path / "s.npz") as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(tmp_path / "s.npz", **{**arrays, "labels": np.asarray(labels, dtype=np.float64)})
    assert_user_error(lambda: EventNpz(tmp_path / "s.npz"), r"s\.npz", "integer class ids", needle)
    np.savez(tmp_path / "s.npz", **{**arrays, "labels": np.asarray([0.0, 1.0])})  # whole numbers as floats
    assert list(EventNpz(tmp_path / "s.npz").targets) == [0, 1]


@pytest.mark.parametrize("suffix", [".raw", ".bin", ".npz", ".aedat4", ".csv"])
def test_an_empty_event_file_is_called_empty(tmp_path, suffix):
    (tmp_path / f"rec{suffix}").write_bytes(b"")
    assert_user_error(lambda: read_event_file(tmp_path / f"rec{suffix}", (34, 34, 2)), f"rec\\{suffix}", "empty")


# --- large recordings in bounded memory ----------------------------------------------------------------------
def _long_recording(n=2_000_000, span_us=8_000_000):
    """``n`` events over ``span_us`` µs on a 34x34 sensor, in time order (N-MNIST's timestamp range)."""
    rng = np.random.default_rng(0)
    return make_events(rng.integers(0, 34, n), rng.integers(0, 34, n), np.linspace(0, span_us, n).astype(np.int64),
                       rng.integers(0, 2, n))


def _peak_bytes(fn):
    import tracemalloc  # numpy reports its array buffers to tracemalloc

    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_long_recording_is_framed_in_memory_bounded_by_the_window(tmp_path):
    from eval.data.events.datasets import write_nmnist_file
    from eval.data.events.readers import read_recording

    ev = _long_recording()
    write_nmnist_file(tmp_path / "long.bin", ev)  # 10 MB on disk, 26 MB decoded whole
    np.save(tmp_path / "long.npy", ev)
    np.savez(tmp_path / "long.npz", events=ev, sensor_size=np.array([34, 34, 2]))
    framing = EventFraming((34, 34, 2), (34, 34), time_window=30_000, T=10)
    for name in ("long.bin", "long.npy", "long.npz"):
        (got, _), peak = _peak_bytes(lambda: read_recording(tmp_path / name, (34, 34, 2), until_us=framing.duration))
        inside = int(np.searchsorted(ev["t"], framing.duration))
        np.testing.assert_array_equal(got, ev[:inside + 1].astype(got.dtype))  # the window and one event past it
        assert peak < 8 << 20, f"{name}: {peak / 2**20:.1f} MiB to read {framing.duration} µs"
        np.testing.assert_array_equal(framing(got), framing(ev))  # the same frames as the whole recording
    (whole, _), peak_whole = _peak_bytes(lambda: read_recording(tmp_path / "long.bin", (34, 34, 2)))
    assert len(whole) == len(ev) and peak_whole > 26e6  # reading it all costs the whole file


def test_an_event_npz_split_is_memory_mapped(tmp_path):
    ev = _long_recording()
    cut = len(ev) // 2
    save_event_npz(tmp_path / "split.npz", [ev[:cut], ev[cut:]], [0, 1], (34, 34, 2))
    ds, peak = _peak_bytes(lambda: EventNpz(tmp_path / "split.npz"))
    assert peak < 1 << 20 and len(ds) == 2 and list(ds.targets) == [0, 1]  # the 26 MB of events stay on disk
    raw, label = ds[1]
    np.testing.assert_array_equal(raw, ev[cut:])
    assert label == 1


def test_a_recordings_folder_is_scanned_and_framed_in_bounded_memory(tmp_path):
    from eval.data.events.datasets import write_nmnist_file
    from eval.data.events.recordings import load_recordings, scan_recordings

    ev = _long_recording()
    write_nmnist_file(tmp_path / "ds" / "cat" / "long.bin", ev)
    recs, names = scan_recordings(tmp_path / "ds")
    _, peak = _peak_bytes(lambda: load_recordings(recs, (34, 34, 2)))  # the span, streamed
    assert (recs[0].sensor, recs[0].t_first, recs[0].t_last) == ((34, 34), 0, int(ev["t"][-1]))
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB to scan"
    framing = EventFraming((34, 34, 2), (34, 34), time_window=30_000, T=10)
    (frames, label), peak = _peak_bytes(lambda: EventFolder(tmp_path / "ds", framing, recordings=(recs, names))[0])
    np.testing.assert_array_equal(frames, framing(ev))
    assert label == 0 and peak < 8 << 20, f"{peak / 2**20:.1f} MiB to frame"
