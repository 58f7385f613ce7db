"""Event augmentation for fine-tuning (issue 15, item 8) and the trainer's progress lines without a terminal
(item 11): per-sample seeding from (seed, epoch, index), test split untouched, exact resume, tonic's effect."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from eval.cli import main
from eval.data.events import EVENT_DTYPE, EventFraming
from eval.data.events.augment import EventAugment, augment_training, parse_augment
from eval.data.events.recordings import EventFolder
from tests.support.cli import assert_cli_user_error, run_cli

FRAMING = EventFraming(sensor_size=(34, 34, 2), target_size=(16, 16), time_window=20_000, T=2)


def recording(rng, label: int = 0, n: int = 400) -> np.ndarray:
    ev = np.zeros(n, EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(0, 40_000, n))
    ev["x"], ev["y"], ev["p"] = rng.integers(0, 17, n) + 17 * label, rng.integers(0, 34, n), rng.integers(0, 2, n)
    return ev


class Recs(torch.utils.data.Dataset):
    sensor_size = (34, 34, 2)

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def dataset(items, **kw) -> EventFolder:
    return EventFolder.from_dataset(Recs(items), FRAMING, **kw)


def test_parse_augment_orders_and_refuses_unknown_names():
    assert parse_augment(None) == parse_augment("none") == ()
    assert parse_augment("timejitter, JITTER") == ("jitter", "timejitter")
    with pytest.raises(ValueError, match="jitter, drop, timejitter, flip.*got spin"):
        parse_augment("jitter,spin")


def test_same_seed_epoch_index_same_sample_and_the_callers_rng_untouched():
    ev = recording(np.random.default_rng(0))
    train, _ = augment_training(dataset([(ev, 0), (ev, 0)]), ("jitter", "drop", "timejitter"), seed=7)
    plain = FRAMING.window(ev, (34, 34), int(ev["t"][0]))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a0, a0_again, a1 = train[0][0], train[0][0], train[1][0]
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # restored
    np.testing.assert_array_equal(a0, a0_again)
    assert not np.array_equal(a0, a1)  # the same recording at another index draws another augmentation
    assert not np.array_equal(a0, plain) and a0.sum() < plain.sum()  # drop removed 10%
    train.set_epoch(1)
    assert not np.array_equal(train[0][0], a0)
    train.set_epoch(0)
    np.testing.assert_array_equal(train[0][0], a0)  # a function of (seed, epoch, index) alone
    other, _ = augment_training(dataset([(ev, 0), (ev, 0)]), ("jitter", "drop", "timejitter"), seed=8)
    assert not np.array_equal(other[0][0], a0)


def test_flip_mirrors_and_drop_removes_a_tenth_as_tonic_defines_them():
    ev = recording(np.random.default_rng(1))
    plain = FRAMING.window(ev, (34, 34), int(ev["t"][0]))
    seen = set()
    for seed in range(8):
        train, _ = augment_training(dataset([(ev, 0)]), ("flip",), seed=seed)
        x = train[0][0]
        if np.array_equal(x, plain):
            seen.add("same")
        else:  # x' = W - 1 - x on the 16-px frame
            np.testing.assert_array_equal(x, plain[..., ::-1])
            seen.add("mirrored")
    assert seen == {"same", "mirrored"}  # p = 0.5 over 8 seeds
    aug = EventAugment(("drop",), frame_size=(16, 16, 2), time_window=20_000, duration=40_000)
    small = np.zeros(50, EVENT_DTYPE)
    assert len(aug(small)) == 45  # tonic's DropEvent: int(p * n) events removed


def test_only_the_training_part_is_augmented():
    rng = np.random.default_rng(2)
    items = [(recording(rng, i % 2), i % 2) for i in range(8)]
    split = dict(method="by-recording", test=["6", "7"], test_fraction=0.25, seed=0)
    train = dataset(items, part="train", split=split)
    test = dataset(items, part="test", split=split)
    want = [test[i][0] for i in range(len(test))]
    train_aug, aug = augment_training(train, ("jitter", "drop", "flip", "timejitter"), seed=0)
    assert aug.names == ("jitter", "drop", "timejitter", "flip") and isinstance(test.transform, EventFraming)
    for i in range(len(test)):
        np.testing.assert_array_equal(test[i][0], want[i])
    assert not np.array_equal(train_aug[0][0], dataset(items, part="train", split=split)[0][0])


def test_finetune_with_augmentation_resumes_exactly(tmp_path, make_tiny):
    """A run that crashes mid-epoch 2 and is resumed ends with the uninterrupted run's weights."""
    from eval.train.finetune import finetune
    from eval.train.trainer import TrainConfig

    rng = np.random.default_rng(3)
    items = [(recording(rng, i % 2), i % 2) for i in range(12)]  # 3 steps of 4 per epoch
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.05, seed=0, save_every_steps=1, progress=False)

    class Crash(torch.utils.data.Dataset):  # the process dies while loading a batch
        def __init__(self, base, at):
            self.base, self.calls, self.at = base, 0, at

        def set_epoch(self, e):
            self.base.set_epoch(e)

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            self.calls += 1
            if self.calls > self.at:
                raise KeyboardInterrupt
            return self.base[i]

    def run(out, crash_at=None, resume=False):
        train, _ = augment_training(dataset(items), ("jitter", "drop", "timejitter"), seed=0)
        if crash_at:
            train = Crash(train, crash_at)
        torch.manual_seed(0)
        model = make_tiny(in_chans=2, num_classes=2)
        return finetune(model, train, None, cfg, out, resume=resume)["model"]

    whole = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", crash_at=12 + 4 + 2)  # in epoch 2's 2nd step (its 1st was saved)
    resumed = run(tmp_path / "b", resume=True)
    for (k, v), w in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)


def test_finetune_cli_records_the_augmentation_and_refuses_unknown_names(tmp_path, capsys):
    from eval.data.events import save_event_npz

    rng = np.random.default_rng(4)
    for split, n in (("train", 8), ("test", 4)):
        labels = [i % 2 for i in range(n)]
        save_event_npz(tmp_path / f"{split}.npz", [recording(rng, y) for y in labels], labels, (34, 34, 2))
    args = ["finetune", "--dataset", str(tmp_path), "--model", "sresnet19_narrow_tdbn", "--no-pretrained", "--T", "2",
            "--time-window-ms", "20", "--size", "16", "16", "--epochs", "1", "--batch-size", "4", "--no-progress"]
    assert_cli_user_error(run_cli([*args, "--out", str(tmp_path / "bad"), "--augment", "jitter,rotate"], capsys),
                          "--augment", "rotate", "timejitter")
    assert main([*args, "--out", str(tmp_path / "ok"), "--augment", "drop,jitter"]) == 0
    results = json.loads((tmp_path / "ok" / "results.json").read_text())
    assert results["augment"]["names"] == ["jitter", "drop"] and results["augment"]["drop_p"] == 0.1


def test_progress_prints_plain_lines_with_eta_without_a_terminal():
    from eval.train.trainer import _Progress

    now = [0.0]
    stream = io.StringIO()  # not a terminal
    bar = _Progress(100, 20, "epoch 2/3", enabled=True, interval_s=5, clock=lambda: now[0], stream=stream)
    assert bar.bar is None
    for step in range(21, 101):
        now[0] += 0.5  # 2 steps/s after the 20 resumed steps
        bar.tick(step, 16.0)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 8  # every 5 s over 40 s
    assert lines[0] == "epoch 2/3: step 30/100, 16.0 images/s, ETA 35s"  # 70 steps at 2/s
    assert lines[-1].startswith("epoch 2/3: step 100/100") and lines[-1].endswith("ETA 0s")
    quiet = io.StringIO()
    off = _Progress(10, 0, "e", enabled=False, interval_s=0, clock=lambda: now[0], stream=quiet)
    off.tick(5, 1.0)
    assert quiet.getvalue() == ""


def test_trainer_prints_progress_lines_into_a_log(tmp_path, capsys, monkeypatch, make_tiny):
    """Inside an epoch, with stderr captured (not a terminal), the trainer prints the plain lines."""
    from eval.train.finetune import finetune
    from eval.train.trainer import TrainConfig, _Progress

    monkeypatch.setattr(_Progress, "interval_s", 0.0)  # a line after every step
    rng = np.random.default_rng(5)
    data = dataset([(recording(rng, i % 2), i % 2) for i in range(8)])
    model = make_tiny(in_chans=2, num_classes=2)
    finetune(model, data, None, TrainConfig(epochs=1, batch_size=4, progress=True), tmp_path)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("epoch 1/1: step")]
    assert [ln.split(",")[0] for ln in lines] == ["epoch 1/1: step 1/2", "epoch 1/1: step 2/2"]
    assert "images/s, ETA" in lines[0] and lines[1].endswith("ETA 0s")
