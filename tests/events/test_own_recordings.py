"""Your own recordings, end to end (issue 15's "done when"): a folder per class of real recordings in mixed
formats and sensor sizes -> ``tdbn-zoo finetune --slice-ms 50 --out OUT`` -> ``tdbn-zoo eval OUT
--data events:DIR`` with no framing flags gives exactly finetune's top-1; the readers against the libraries."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eval.cli import main
from eval.data.events.readers import read_recording

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "events"
if not REAL.is_dir():
    REAL = Path("/work/shared/data/events")
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="real recordings (../shared/data/events) not present")

# format -> sensor (W, H) the file's header says (N-MNIST .bin has none: N-MNIST's 34x34)
FILES = {"evt3.raw": (1280, 720), "dvs.es": (320, 240), "davis346.aedat4": (346, 260), "sample.aedat4": (320, 240),
         "sample_nmnist.bin": (34, 34)}


@pytest.mark.parametrize("name,sensor", FILES.items())
def test_readers_match_the_libraries(name, sensor):
    """Every reader gives the events the format's own library decodes (faery for .raw/.es/.aedat4, tonic
    for N-MNIST), in tonic's layout, with the header's sensor size."""
    events, size = read_recording(REAL / name)
    assert size == sensor
    if name.endswith(".bin"):
        import tonic
        ref = tonic.io.read_mnist_file(str(REAL / name), dtype=tonic.datasets.NMNIST.dtype)
        on = ref["p"] != 0
    else:
        import faery
        ref = faery.events_stream_from_file(REAL / name).to_array()
        on = ref["on"]
    order = np.argsort(ref["t"], kind="stable")
    for field, want in (("t", ref["t"]), ("x", ref["x"]), ("y", ref["y"]), ("p", on)):
        np.testing.assert_array_equal(events[field], np.asarray(want)[order].astype(events[field].dtype))


def test_prophesee_dat_via_expelliarmus_with_the_given_sensor():
    from expelliarmus import Wizard
    events, size = read_recording(REAL / "sample_ncars.dat", (120, 100, 2))
    ref = Wizard(encoding="dat", fpath=str(REAL / "sample_ncars.dat")).read()
    assert size == (120, 100) and len(events) == len(ref)
    np.testing.assert_array_equal(events["x"], ref["x"])


@pytest.fixture(scope="module")
def recordings_folder(tmp_path_factory):
    """Two classes, mixed formats and sensors (1280x720 EVT3, 320x240 ES, 34x34 N-MNIST; 346x260 and
    320x240 AEDAT4, and a CSV cut from a real recording)."""
    root = tmp_path_factory.mktemp("own") / "gestures"
    a, b = root / "wave", root / "clap"
    a.mkdir(parents=True), b.mkdir()
    for name, cls in (("evt3.raw", a), ("dvs.es", a), ("sample_nmnist.bin", a), ("davis346.aedat4", b),
                      ("sample.aedat4", b)):
        (cls / name).symlink_to(REAL / name)
    ev, _ = read_recording(REAL / "dvs.es")
    part = ev[ev["t"] < 400_000]
    lines = ["t,x,y,p"] + [f"{t},{x},{y},{int(p)}" for t, x, y, p in zip(part["t"], part["x"], part["y"], part["p"])]
    (b / "cut.csv").write_text("\n".join(lines) + "\n")
    return root


def test_finetune_then_eval_agree_exactly(recordings_folder, tmp_path, capsys):
    out = tmp_path / "ft"
    model = "sresnet19_narrow_tdbn.fashion_mnist_t2"
    rc = main(["finetune", "--dataset", str(recordings_folder), "--model", model, "--slice-ms", "50", "--out", str(out),
               "--sensor-size", "320", "240", "2",  # the CSV's sensor (the other files' headers say theirs)
               "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "4", "--no-progress"])
    assert rc == 0
    ft = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for f in ("config.json", "model.safetensors", "README.md", "confusion.png"):
        assert (out / f).is_file()
    config = json.loads((out / "config.json").read_text())
    cfg = config["pretrained_cfg"]
    assert config["label_names"] == ["clap", "wave"] and config["num_classes"] == 2
    assert cfg["event_framing"] == dict(target_size=[28, 28], time_window_us=25_000, T=2, channels=1,
                                        slice_us=50_000, overlap_us=0)  # the model's input: 1x28x28, T=2
    assert cfg["split"]["method"] == "by-recording" and cfg["dataset"] == "events:gestures"
    card = (out / "README.md").read_text()
    assert "Per-class accuracy" in card and "tdbn-zoo finetune" in card and "fashion" not in card.split("## Fine")[0].lower()

    rc = main(["eval", str(out), "--data", f"events:{recordings_folder}", "--sensor-size", "320", "240", "2",
               "--json", "--speed-batches", "0"])
    assert rc == 0
    ev = json.loads(capsys.readouterr().out)
    r = ev["results"][0]
    assert r["images"] == ft["test_n"] and r["top1"] == ft["test_top1"]
    assert [row["name"] for row in ev["per_class"][0]] == ["clap", "wave"]
    assert sum(row["samples"] for row in ev["per_class"][0]) == r["images"]

    nir_path = tmp_path / "model.nir"  # the same folder exports with no framing flags (input: the stored 1x28x28)
    assert main(["export-nir", str(out), str(nir_path)]) == 0
    import nir
    graph = nir.read(str(nir_path))
    assert graph.nodes["input"].input_type["input"].tolist()[-3:] == [1, 28, 28]
