"""``tdbn-zoo train --preset`` for the paper's event tags, on fixtures in the datasets' exact on-disk layouts
(tonic's DVSGesture ``.npy`` release, CIFAR10-DVS ``.aedat4`` per class): the command the pretrained error
names works, trains on the paper's framing with the preset's T (overridden to tiny sizes here) and resumes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tonic

from eval.cli import main
from tests.support.cli import assert_cli_user_error, run_cli
from tests.support.data import write_dvsgesture

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(preset, root, out, *extra):
    return main(["train", "--preset", preset, "--data-dir", str(root), "--out", str(out), "--epochs", "1",
                 "--max-steps-per-epoch", "1", "--batch-size", "2", "--T", "2", "--no-progress", "--threads", "1",
                 "--model-kw", "channels=[8, 16]", "--model-kw", "stem_width=8", "--model-kw", "head_hidden=16", *extra])


def test_dvsgesture_preset_trains_from_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tonic.dataset, "download_and_extract_archive", lambda *a, **k: pytest.fail("download"))
    write_dvsgesture(tmp_path, "ibmGestureTrain", ["user01_fluorescent"])
    write_dvsgesture(tmp_path, "ibmGestureTest", ["user24_natural"], seed=1)
    assert _train("sresnet17_tdbn.dvsgesture_t40", tmp_path, tmp_path / "run") == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["preset"] == "sresnet17_tdbn.dvsgesture_t40" and 0 <= line["test_top1"] <= 100
    assert (tmp_path / "run" / "model.safetensors").is_file()
    from zoo.checkpoints import Checkpoint
    args = Checkpoint.from_path(tmp_path / "run" / "model.safetensors").model_args
    assert args["T"] == 2 and args["in_chans"] == 2 and args["num_classes"] == 11


def test_cifar10dvs_preset_trains_from_the_cli(tmp_path, monkeypatch, capsys):
    faery = pytest.importorskip("faery", reason="faery writes the .aedat4 fixtures")
    monkeypatch.setattr(tonic.dataset, "download_and_extract_archive", lambda *a, **k: pytest.fail("download"))
    root = tmp_path / "CIFAR10DVS"
    for c, name in enumerate(tonic.datasets.CIFAR10DVS.classes):
        (root / name).mkdir(parents=True)
        for i in range(10):  # 9 train + 1 test per class (the fixed 90/10 split)
            rng = np.random.default_rng(10 * c + i)
            ev = np.zeros(50, dtype=faery.EVENTS_DTYPE)
            ev["t"] = np.sort(rng.integers(0, 60_000, 50))
            ev["x"], ev["y"], ev["on"] = rng.integers(0, 128, 50), rng.integers(0, 128, 50), rng.integers(0, 2, 50)
            faery.events_stream_from_array(ev, dimensions=(128, 128)).to_file(
                str(root / name / f"cifar10_{name}_{i}.aedat4"), zero_t0=False)
    assert _train("sresnet19_tdbn.cifar10dvs_t10", tmp_path, tmp_path / "run",
                  "--model-kw", "channels=[8, 16, 16]") == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["preset"] == "sresnet19_tdbn.cifar10dvs_t10" and line["epochs"] == 1


def test_event_preset_without_data_names_the_layout(tmp_path, capsys):
    result = run_cli(["train", "--preset", "sresnet17_tdbn.dvsgesture_t40", "--data-dir", tmp_path / "none",
                      "--out", tmp_path / "run"], capsys)
    assert_cli_user_error(result, "dvsgesture", "ibmGestureTrain", "never downloads")
