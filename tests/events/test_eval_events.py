"""``tdbn-zoo eval`` / ``eval.measure.harness.evaluate`` on event data: DVS-Gesture in tonic's on-disk format and
npz / folder datasets (as ``make-events`` writes them). Accuracy is checked against running the model by hand
on frames from the hand-written reference of tests/events/test_events.py, the operation counts against the static
path's counter (``OpCounter`` on the same frames), and the user errors for their wording."""
from __future__ import annotations

import json

import pytest
import tonic
import torch

import zoo
from eval.cli import main
from eval.data.events import build_event_dataset, save_event_npz, write_event_folder
from eval.measure.harness import calibrate_norms, evaluate, evaluate_over_T
from eval.measure.metrics import SpikeRecorder, topk_correct
from eval.measure.synops import OpCounter
from tests.support.data import write_dvsgesture, expected_frames, make_events, random_events
from zoo.checkpoints import save_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(arch, **kw):
    small = dict(sresnet17_tdbn=dict(channels=(8, 8)), sresnet19_narrow_tdbn=dict(channels=(8, 8, 8)))[arch]
    torch.manual_seed(0)
    model = zoo.create(arch, stem_width=8, **small, **kw)
    frames = torch.rand(model.T, 4, model.in_chans, 16, 16).lt(0.2).float()  # spike-like statistics
    return calibrate_norms(model, [frames, frames.flip(1)])


def reference(model, frames, labels, batch_size=None):
    """Run the model by hand on time-first frames (at their T) in batches of ``batch_size`` (the counter
    classifies each call's input as spikes when it is binary: batches matter): top-1/top-5, per-image ops,
    the mean firing rate."""
    n = len(labels)
    batch_size = batch_size or n
    old_T, model.T = model.T, frames.shape[0]
    correct = {1: 0, 5: 0}
    try:
        with torch.no_grad(), OpCounter(model) as ops, SpikeRecorder(model) as rec:
            for i in range(0, n, batch_size):
                logits = model(frames[:, i:i + batch_size])
                for k, c in topk_correct(logits, labels[i:i + batch_size], (1, 5)).items():
                    correct[k] += c
    finally:
        model.T = old_T
    return dict(top1=100.0 * correct[1] / n, top5=100.0 * correct[5] / n, rate=rec.mean_firing_rate(),
                **ops.per_image())


def check_against(result: dict, ref: dict, n: int):
    assert result["images"] == n
    assert result["top1"] == pytest.approx(ref["top1"])
    if result["top5"] is not None:
        assert result["top5"] == pytest.approx(ref["top5"])
    assert result["mean_firing_rate"] == pytest.approx(ref["rate"])
    assert result["acs"] == pytest.approx(ref["acs"]) and result["acs"] > 0
    assert result["macs"] == pytest.approx(ref["macs"]) and result["ann_macs"] == pytest.approx(ref["ann_macs"])


def gesture_frames(written, split_sessions, T, window=30_000):
    """Frames of the fixture's recordings in the dataset's order (session path, then label number)."""
    keys = sorted(((s, label) for s, label in written if s in split_sessions), key=lambda k: (k[0], k[1]))
    frames, labels = [], []
    for key in keys:
        arr = written[key]
        ev = make_events(arr[:, 0], arr[:, 1], arr[:, 3] * 1000, arr[:, 2])
        frames.append(torch.from_numpy(expected_frames(ev, T, window, 128, 32)))
        labels.append(key[1])
    return torch.stack(frames, 1), torch.tensor(labels)


@pytest.fixture
def gesture(tmp_path, monkeypatch):
    monkeypatch.setattr(tonic.dataset, "download_and_extract_archive",
                        lambda *a, **k: pytest.fail("tried to download"))
    written = write_dvsgesture(tmp_path, "ibmGestureTrain", ["user02_led", "user01_fluorescent"])
    written.update(write_dvsgesture(tmp_path, "ibmGestureTest", ["user24_natural"], seed=1))
    return tmp_path, written


def test_dvsgesture_command_matches_hand_run(gesture, tmp_path, capsys):
    """``--data dvsgesture:ROOT`` (ROOT = the DVSGesture folder or its parent): the paper's 32x32 / 30 ms
    pipeline at the model's T=40, batched [T, N, 2, H, W]; accuracy and ops as computed by hand."""
    root, written = gesture
    model = tiny("sresnet17_tdbn", num_classes=11, in_chans=2, T=40)
    save_pretrained(model, tmp_path / "ckpt")
    loaded = zoo.create(f"local-dir:{tmp_path / 'ckpt'}", pretrained=True).eval()
    frames, labels = gesture_frames(written, ("user01_fluorescent", "user02_led"), 40)
    ref = reference(loaded, frames, labels, 4)
    out = tmp_path / "r.json"
    assert main(["eval", str(tmp_path / "ckpt"), "--data", f"dvsgesture:{root / 'DVSGesture'}", "--split", "train",
                 "--batch-size", "4", "--speed-batches", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert capsys.readouterr().out == f"wrote {out}\n"
    (r,) = doc["results"]
    assert r["T"] == 40 and "32x32 frames of 30 ms" in r["data"]
    check_against(r, ref, 6)
    assert frames.max() > 1 and r["synaptic_layers"][0]["input"] == "real"  # event counts: MACs, as in the paper
    assert r["speed"]["batch_size"] == 4 and r["speed"]["latency_ms"] > 0
    assert r["energy"]["snn_pj"] == pytest.approx(0.9 * ref["acs"] + 4.6 * ref["macs"])
    # -T 3: the first 3 slices (90 ms) at T=3, through the Python API and the command line alike
    frames3, _ = gesture_frames(written, ("user24_natural",), 3)
    ref3 = reference(loaded, frames3, torch.tensor([0, 2, 10]))
    data = build_event_dataset(f"dvsgesture:{root}", "test", model=loaded, T=3)
    with pytest.raises(ValueError, match=r"runs T=40 time steps but the event frames have T=3.*pass T=3"):
        evaluate(loaded, data)
    check_against(evaluate(loaded, data, T=3, speed_batches=0).to_dict(), ref3, 3)
    assert loaded.T == 40  # restored
    assert main(["eval", str(tmp_path / "ckpt"), "--data", f"dvsgesture:{root}", "-T", "3", "--speed-batches", "0",
                 "--json"]) == 0
    check_against(json.loads(capsys.readouterr().out)["results"][0], ref3, 3)


@pytest.mark.parametrize("layout", ["npz", "folder"])
def test_make_events_dataset_command_and_api(layout, tmp_path, capsys):
    """``events:ROOT`` with train/test splits as ``make-events`` writes them (npz or N-MNIST folders):
    frames at the sensor's size, the model's T, ``--time-window-ms``; several -T reframe the data."""
    recs = [random_events(300, sensor=34, duration_us=300_000, seed=s) for s in range(10)]
    labels = [s % 4 for s in range(10)]
    if layout == "npz":
        save_event_npz(tmp_path / "ev" / "test.npz", recs, labels, (34, 34, 2))
    else:
        write_event_folder(tmp_path / "ev" / "test", recs, labels, (34, 34, 2))
    model = tiny("sresnet19_narrow_tdbn", num_classes=4, in_chans=2, T=3)
    save_pretrained(model, tmp_path / "ckpt")
    loaded = zoo.create(f"local-dir:{tmp_path / 'ckpt'}", pretrained=True).eval()
    refs = {T: reference(loaded, torch.stack([torch.from_numpy(expected_frames(r, T, 40_000, 34, 34))
                                                         for r in recs], 1), torch.tensor(labels), 3) for T in (2, 3)}
    assert main(["eval", str(tmp_path / "ckpt"), "--data", f"events:{tmp_path / 'ev'}", "--time-window-ms", "40",
                 "--batch-size", "3", "--speed-batches", "0", "--json"]) == 0
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert r["T"] == 3 and "34x34 frames of 40 ms" in r["data"]
    check_against(r, refs[3], 10)
    data = build_event_dataset(f"events:{tmp_path / 'ev'}", model=loaded, time_window_ms=40)
    results = evaluate_over_T(loaded, data, [2, 3], batch_size=3, speed_batches=0)
    for res, T in zip(results, (2, 3)):
        assert res.T == T
        check_against(res.to_dict(), refs[T], 10)
    assert data.transform.T == 3 and loaded.T == 3  # neither the dataset nor the model was changed


def test_event_eval_errors(gesture, tmp_path, monkeypatch, capsys):
    root, _ = gesture

    def error(*argv):
        assert main(["eval", *argv, "--speed-batches", "0"]) == 2
        return capsys.readouterr().err

    # missing data: every place looked in is named
    err = error("sresnet17_tdbn", "--random-weights", "--data", f"dvsgesture:{tmp_path / 'nowhere'}")
    assert "dvsgesture (test split) not found" in err and str(tmp_path / "nowhere" / "DVSGesture") in err
    monkeypatch.chdir(tmp_path / "DVSGesture")
    monkeypatch.setenv("TDBN_ZOO_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("TDBN_ZOO_CIFAR10DVS", raising=False)
    err = error("sresnet19_tdbn", "--random-weights", "--data", "cifar10dvs")
    assert str(tmp_path / "elsewhere" / "CIFAR10DVS") in err
    assert str(tmp_path / "DVSGesture" / "data" / "CIFAR10DVS") in err  # ./data
    assert "TDBN_ZOO_CIFAR10DVS" in err and "never downloads" in err
    assert "events:PATH" in error("sresnet19_tdbn", "--data", "svhn")
    assert "events:PATH needs a path" in error("sresnet19_tdbn", "--data", "events")
    # a model that does not fit the data: what to pass
    save_pretrained(tiny("sresnet17_tdbn", num_classes=11, in_chans=2, T=3), tmp_path / "t3")
    err = error(str(tmp_path / "t3"), "--data", f"dvsgesture:{root}")
    assert "runs T=3 time steps but the event frames have T=40" in err and "-T 40" in err and "-T 3" in err
    save_pretrained(tiny("sresnet17_tdbn", num_classes=11, in_chans=3, T=40), tmp_path / "rgb")
    err = error(str(tmp_path / "rgb"), "--data", f"dvsgesture:{root}")
    assert "takes 3-channel input but the event frames have 2" in err and "in_chans=2" in err
    save_pretrained(tiny("sresnet17_tdbn", num_classes=10, in_chans=2, T=40), tmp_path / "k10")
    assert "predicts 10 classes but dvsgesture" in error(str(tmp_path / "k10"), "--data", f"dvsgesture:{root}")
    # generic events: no paper framing to fall back on
    save_event_npz(tmp_path / "one.npz", [random_events(50, sensor=34, duration_us=300_000)], [0], (34, 34, 2))
    save_pretrained(tiny("sresnet19_narrow_tdbn", num_classes=4, in_chans=2, T=3), tmp_path / "narrow")
    err = error(str(tmp_path / "narrow"), "--data", f"events:{tmp_path / 'one.npz'}")
    assert "has no default framing" in err and "--time-window-ms" in err and "--T" not in err
    err = error(str(tmp_path / "narrow"), "--data", f"events:{tmp_path / 'one.npz'}", "--time-window-ms", "200")
    assert "too short for T=3" in err and "--pad" in err
