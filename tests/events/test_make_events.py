"""The simulated event camera (``eval.data.events.SaccadeSensor``) and ``tdbn-zoo make-events``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tonic

from eval.cli import main
from eval.data.events import EVENT_DTYPE, EventFraming, EventNpz, SaccadeSensor, open_event_dataset
from tests.support.cli import assert_cli_user_error, run_cli
from zoo.errors import InvalidFileError

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_mnist = pytest.mark.skipif(not (DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
                                 reason=f"MNIST not present under {DATA} (shared data)")


def edge_image():
    """28x28: left half black, right half white (a vertical edge at column 14)."""
    img = np.zeros((28, 28), dtype=np.uint8)
    img[:, 14:] = 255
    return img


def pixel_events(ev, x, y):
    return ev[(ev["x"] == x) & (ev["y"] == y)]


def test_one_pixel_matches_hand_computed_crossings():
    """Pixel (15, 15) while the edge image moves by x(t) = 0.03 px/ms in saccade 1 and back by 0.06 px/ms in
    saccade 3: its intensity ramps I = 2 - x (bilinear) for 1 <= x <= 2, black after. With threshold C = 0.5
    on log(I + 0.1) and no mismatch, OFF events fire at log(I + 0.1) = log(1.1) - 0.5 k (k = 1..4) and ON
    events on the way back at the same levels, reached from below (k = 3, 2, 1, 0)."""
    sensor = SaccadeSensor(threshold=0.5, threshold_sigma=0.0, eps=0.1)
    ev = pixel_events(sensor(edge_image()), 15, 15)
    intensity = lambda k: 1.1 * np.exp(-0.5 * k) - 0.1  # noqa: E731
    off_ms = [(2 - intensity(k)) / 0.03 for k in (1, 2, 3, 4)]         # x = 0.03 t, I = 2 - x
    on_ms = [200 + (intensity(k) + 4) / 0.06 for k in (3, 2, 1, 0)]    # x = 6 - 0.06 (t - 200), I = 2 - x
    assert ev["p"].tolist() == [False] * 4 + [True] * 4
    # 20 µs: log intensity is linearised within each 1 ms step. The last ON event reaches the start level
    # exactly where the ramp ends (283.33 ms), a kink inside a step: it is placed at that step's end.
    np.testing.assert_allclose(ev["t"][:7] / 1000, (off_ms + on_ms)[:7], atol=0.02)
    assert on_ms[-1] <= ev["t"][7] / 1000 <= np.ceil(on_ms[-1])


def test_invariants_on_a_synthetic_image():
    img = np.zeros((28, 28))
    img[6:22, 8:20] = np.linspace(0.2, 1.0, 12)  # a graded block
    sensor = SaccadeSensor()
    ev = sensor(img, seed=7)
    assert ev.dtype == EVENT_DTYPE and len(ev) > 100
    assert (np.diff(ev["t"]) >= 0).all() and ev["t"].min() >= 0 and ev["t"].max() <= sensor.duration_us
    on = np.zeros((34, 34), int)
    off = np.zeros((34, 34), int)
    np.add.at(on, (ev["y"][ev["p"]], ev["x"][ev["p"]]), 1)
    np.add.at(off, (ev["y"][~ev["p"]], ev["x"][~ev["p"]]), 1)
    # a closed path brings every pixel back to its start intensity: as many ON as OFF events at each pixel
    np.testing.assert_array_equal(on, off)
    # only pixels the block passes over can fire: rows 6..22+6, columns 8..20+6
    fired = np.argwhere(on + off)
    assert fired[:, 0].min() >= 6 and fired[:, 0].max() <= 27 and fired[:, 1].min() >= 8 and fired[:, 1].max() <= 25
    np.testing.assert_array_equal(sensor(img, seed=7), ev)              # deterministic
    assert not np.array_equal(sensor(img, seed=8)["t"], ev["t"])        # the seed draws the mismatch
    frames = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), time_window=50_000)(ev)  # tonic frames it
    t = ev["t"] - ev["t"][0]
    n = int((t[-1] - 50_000) // 50_000) + 1  # tonic's number of complete windows
    assert frames.shape == (n, 2, 34, 34) and frames.sum() == (t < n * 50_000).sum()


def test_sensor_rejects_bad_images():
    sensor = SaccadeSensor()
    with pytest.raises(ValueError, match="grey image"):
        sensor(np.zeros((28, 28, 3), np.uint8))
    with pytest.raises(ValueError, match="does not fit a 34x34 sensor"):
        sensor(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        sensor(np.full((28, 28), 2.0))
    with pytest.raises(ValueError, match="closed"):
        SaccadeSensor(path=((0, 0), (3, 6)))


@needs_mnist
@pytest.mark.parametrize("fmt", ["npz", "nmnist"])
def test_make_events_on_mnist(tmp_path, fmt, capsys):
    out = tmp_path / "ev"
    args = ["make-events", "--data", f"mnist:{DATA}", "--out", str(out), "--train", "6", "--test", "3",
            "--format", fmt, "--seed", "1"]
    assert main(args) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["simulated"] is True and meta["counts"] == {"train": 6, "test": 3}
    train = open_event_dataset(out, train=True)
    test = open_event_dataset(out, train=False)
    assert len(train) == 6 and len(test) == 3 and train.sensor_size == (34, 34, 2)
    from eval.data.images import build_dataset
    assert [train[i][1] for i in range(6)] == build_dataset("mnist", DATA, "train").targets[:6].tolist()
    for i in range(3):
        ev, _ = test[i]
        assert len(ev) > 500
        assert (np.diff(ev["t"]) >= 0).all() and 0 <= ev["t"].min() and ev["t"].max() <= 300_000
        assert ev["x"].max() < 34 and ev["y"].max() < 34
        assert abs(int(ev["p"].sum()) * 2 - len(ev)) == 0  # closed saccade path: ON count == OFF count
        frames = EventFraming((34, 34, 2), (34, 34), 30_000, 9)(ev)
        assert frames.shape == (9, 2, 34, 34) and frames.sum() > 0.8 * len(ev)
    # what was written is what the sensor makes of that image with its seed (seed, split stream 1, index)
    image = build_dataset("mnist", DATA, "test").images[1]
    direct = SaccadeSensor()(image, seed=[1, 1, 1])
    if fmt == "nmnist":  # tonic's own N-MNIST reader reads the files
        written = tonic.io.read_mnist_file(str(out / "test" / "00001.bin"), dtype=tonic.datasets.NMNIST.dtype)
    else:
        written = test[1][0]
    for field in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(written[field], direct[field].astype(written[field].dtype))
    if fmt == "npz":
        again = tmp_path / "again"
        assert main(args[:4] + [str(again)] + args[5:]) == 0
        a, b = EventNpz(out / "train.npz"), EventNpz(again / "train.npz")
        np.testing.assert_array_equal(a.events, b.events)       # same seed -> same dataset
        np.testing.assert_array_equal(a.offsets, b.offsets)


@needs_mnist
def test_make_events_errors(tmp_path, capsys):
    assert main(["make-events", "--data", "cifar10", "--out", str(tmp_path)]) == 2
    assert "grey image datasets" in capsys.readouterr().err
    assert main(["make-events", "--data", f"mnist:{tmp_path}", "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["make-events", "--data", f"mnist:{DATA}", "--out", str(tmp_path / "o"), "--train", "0"]) == 2
    assert "--train must be at least 1" in capsys.readouterr().err


@needs_mnist
def test_make_events_refuses_more_images_than_the_split_has(tmp_path, capsys):
    for flag, most in (("--train", 60000), ("--test", 10000)):
        r = run_cli(["make-events", "--data", f"mnist:{DATA}", "--out", tmp_path / "o", flag, "1000000000000"], capsys)
        assert_cli_user_error(r, flag, "1000000000000", f"at most {flag} {most}")
    assert not (tmp_path / "o").exists() and list(tmp_path.iterdir()) == []


# --- bad input: the folder it writes and the flags it reads ---------------------------------------------------
def test_make_events_threshold_nan(tmp_path, capsys):
    result = run_cli(["make-events", "--data", "mnist:/nonexistent", "--out", tmp_path / "o", "--threshold", "nan"],
                     capsys)
    assert_cli_user_error(result, "--threshold", "finite")


def test_make_events_refuses_to_replace_a_foreign_folder(tmp_path, capsys):
    keep = tmp_path / "mine" / "thesis.tex"
    keep.parent.mkdir()
    keep.write_text("precious")
    result = run_cli(["make-events", "--data", "mnist:/nonexistent", "--out", tmp_path / "mine"], capsys)
    assert_cli_user_error(result, "meta.json", "new or empty folder")
    assert keep.read_text() == "precious"


def test_make_events_failure_keeps_the_old_dataset_whole(tmp_path, capsys, monkeypatch):
    """A failure while converting the test split leaves the earlier output untouched (never new train + old test)."""
    from eval.data.events import simulate
    images = tmp_path / "mnist"
    images.mkdir()
    import gzip
    for split, n in (("train", 3), ("t10k", 2)):
        with gzip.open(images / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\x00\x00\x08\x03" + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
                    + np.random.default_rng(0).integers(0, 255, n * 784, dtype=np.uint8).tobytes())
        with gzip.open(images / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\x00\x00\x08\x01" + n.to_bytes(4, "big") + bytes(range(n)))
    out = tmp_path / "ev"
    args = ["make-events", "--data", f"mnist:{images}", "--out", out, "--saccade-ms", "10"]
    assert run_cli(args, capsys).rc == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = simulate.events_from_images

    def fail_on_test(images, sensor, seed=0, stream=0):
        if stream == 1:  # a user error (a bad input found late): one line, and the old output stays whole
            raise InvalidFileError("simulated failure in the test split")
        return real(images, sensor, seed=seed, stream=stream)
    monkeypatch.setattr(simulate, "events_from_images", fail_on_test)
    result = run_cli([*args, "--seed", "7"], capsys)
    assert result.rc == 2 and "Traceback" not in result.err  # after the train split's progress line, one error line
    assert result.err.strip().splitlines()[-1] == "tdbn-zoo make-events: error: simulated failure in the test split"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ev.")]  # no temporary folder left
@pytest.mark.parametrize("flag,value,expected", [
    ("--saccade-ms", "1e300", r"\(0, 10000\]"),  # overflowed into a TypeError traceback
    ("--threshold", "-1", "> 0"), ("--threshold-sigma", "-1", ">= 0"), ("--seed", "-1", r"\[0, 4294967295\]")])
def test_make_events_numbers_are_refused_at_parse_time(tmp_path, capsys, flag, value, expected):
    from tests.support.cli import assert_cli_user_error, run_cli

    r = run_cli(["make-events", "--data", f"mnist:{tmp_path}", "--out", tmp_path / "o", flag, value], capsys)
    assert_cli_user_error(r, f"argument {flag}", expected, value)
    assert not (tmp_path / "o").exists()
