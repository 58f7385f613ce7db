"""Bad ``tdbn-zoo train`` numbers (refused at parse time, and by ``TrainConfig`` from Python), and the faults
that used to lose data: a diverged step, non-finite weights at a save step, temp files of a kill,
``metrics.jsonl`` after a resume, a crafted training checkpoint. Each outcome is a one-line user error or the
correct result, checked against a reference run."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from eval.train.trainer import TrainConfig, Trainer
from eval.train.checkpoint import DivergedError, read_training_checkpoint, save_training_checkpoint
from tests.support.cli import assert_cli_user_error, assert_user_error, run_cli
from tests.support.data import tiny_data
from tests.support.models import TINY_GREY
from zoo import SpikingResNet

pytestmark = pytest.mark.usefixtures("one_thread")

PRESET = "sresnet19_narrow_tdbn.fashion_mnist_t2"


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


def test_train_refuses_to_start_a_new_run_over_an_old_one(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, progress=False, max_steps_per_epoch=1)
    torch.manual_seed(0)
    Trainer(SpikingResNet(**TINY_GREY), tiny_data(16), None, cfg, out_dir=out).fit()
    before = _sha(out / "last.safetensors")
    result = run_cli(["train", "--preset", PRESET, "--data-dir", tmp_path / "no-data", "--out", out], capsys)
    assert_cli_user_error(result, "already holds a run", "--resume")
    assert_user_error(lambda: Trainer(SpikingResNet(**TINY_GREY), tiny_data(16), None, cfg, out_dir=out).fit(),
                      "already holds a run")
    assert _sha(out / "last.safetensors") == before


# ---------------------------------------------------------------------------------------------- training faults
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CFG = dict(epochs=2, batch_size=8, lr=0.2, schedule="cosine", weight_decay=1e-3, save_every_steps=3,
           log_every_steps=2, progress=False)  # 6 steps per epoch on 48 images; saves at steps 3, 6, 9, 12


def _trainer(out: Path, **over) -> Trainer:
    torch.manual_seed(0)
    return Trainer(SpikingResNet(**TINY_GREY), tiny_data(), tiny_data(12, seed=1), TrainConfig(**{**CFG, **over}),
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
    Trainer(SpikingResNet(**TINY_GREY), tiny_data(16), None, cfg, out_dir=tmp_path).fit()
    assert_user_error(lambda: Trainer(SpikingResNet(**TINY_GREY), tiny_data(24), None, cfg, out_dir=tmp_path)
                      .fit(resume=True), "cannot resume", "train_samples: 16 -> 24")
    assert_user_error(lambda: Trainer(SpikingResNet(**{**TINY_GREY, "T": 3}), tiny_data(16), None, cfg,
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
    Trainer(SpikingResNet(**TINY_GREY), tiny_data(16), None, cfg, out_dir=tmp_path).fit()
    _rewrite(tmp_path / "last.safetensors", edit_meta, edit_tensors)
    before = _sha(tmp_path / "last.safetensors")
    assert_user_error(lambda: Trainer(SpikingResNet(**TINY_GREY), tiny_data(16), None, cfg, out_dir=tmp_path)
                      .fit(resume=True), "last.safetensors", *needles)
    assert _sha(tmp_path / "last.safetensors") == before
