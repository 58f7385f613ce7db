"""Trainer: the paper's recipes as presets, exact resume after SIGKILL, atomic checkpoints, 2-process tdBN."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from eval.train.presets import get_preset
from eval.train.trainer import TrainConfig, Trainer
from eval.train.checkpoint import atomic_save_safetensors, read_training_checkpoint
from eval.train.sampling import ResumableBatchSampler, SeededAugment
from tests.support.cli import assert_cli_user_error, run_cli, tree_digest
from tests.support.data import tiny_data, write_cifar10
from tests.support.models import TINY_GREY
from zoo import SpikingResNet, TAGS
from zoo.errors import CheckpointError
from zoo.checkpoints import read_safetensors

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------- presets
# Appendix C / Table 5 of the paper, written out here independently of zoo.tags
PAPER_RECIPES = {  # tag: (global batch, lr step epochs)
    "sresnet19_tdbn.cifar10_t6": (36, 35), "sresnet19_tdbn.cifar10_t2": (36, 35),
    "sresnet19_tdbn.cifar10dvs_t10": (36, 35), "sresnet17_tdbn.dvsgesture_t40": (40, 1000),
    "sresnet34_tdbn.in1k_t6": (24 * 8, 35), "sresnet34_large_tdbn.in1k_t6": (10 * 8, 35),
    "sresnet50_tdbn.in1k_t6": (10 * 8, 45),
}


@pytest.mark.parametrize("tag", sorted(PAPER_RECIPES))
def test_presets_follow_the_papers_recipe(tag):
    p = get_preset(tag)
    cfg = p["train"]
    batch, step = PAPER_RECIPES[tag]
    assert (cfg.lr, cfg.momentum, cfg.lr_gamma, cfg.schedule) == (0.1, 0.9, 0.1, "step")
    assert (cfg.batch_size, cfg.lr_step_epochs, cfg.amp) == (batch, step, True)
    assert cfg.epochs > 0 and cfg.weight_decay is not None  # the unstated fields are filled
    assert cfg.lr_at(step - 1, 0, 10) == pytest.approx(0.1) and cfg.lr_at(step, 0, 10) == pytest.approx(0.01)


def test_every_tag_has_a_preset_and_cosine_schedule_values():
    for tag in TAGS:
        assert isinstance(get_preset(tag)["train"], TrainConfig)
    fm = get_preset("sresnet19_narrow_tdbn.fashion_mnist_t2")
    assert fm["hflip"] and fm["pad"] == 0 and fm["T"] == 2 and fm["input_size"] == (1, 28, 28)
    digits = get_preset("sresnet19_narrow_tdbn.mnist_t2")
    assert not digits["hflip"] and digits["pad"] == 2  # digits are not mirror-symmetric
    assert get_preset("sresnet19_tdbn.cifar10_t2")["pad"] == 4 and get_preset("sresnet19_tdbn.cifar10_t2")["hflip"]
    cfg = TrainConfig(epochs=4, schedule="cosine", lr=0.1)
    assert cfg.lr_at(0, 0, 10) == pytest.approx(0.1)
    assert cfg.lr_at(2, 0, 10) == pytest.approx(0.05)  # half way: cos(pi/2) = 0
    assert cfg.lr_at(3, 5, 10) == pytest.approx(0.05 * (1 + torch.cos(torch.tensor(torch.pi * 35 / 40)).item()))
    with pytest.raises(Exception, match="unknown preset"):
        get_preset("sresnet19_tdbn.cifar10_t5")


# --------------------------------------------------------------------------------------------------- data order
def test_sampler_order_depends_on_seed_and_epoch_only_and_shards_the_global_batch():
    one = ResumableBatchSampler(20, 4, seed=3)
    one.set_epoch(2)
    batches = list(one)
    again = ResumableBatchSampler(20, 4, seed=3)
    again.set_epoch(2)
    again.start_batch = 3
    assert list(again) == batches[3:]
    r0, r1 = (ResumableBatchSampler(20, 4, seed=3, rank=r, world_size=2) for r in (0, 1))
    for s in (r0, r1):
        s.set_epoch(2)
    assert [a + b for a, b in zip(r0, r1)] == batches
    assert sorted(sum(batches, [])) == list(range(20))
    one.set_epoch(3)
    assert list(one) != batches
    with pytest.raises(ValueError, match="divisible"):
        ResumableBatchSampler(20, 5, world_size=2)


def test_seeded_augment_is_a_pure_function_of_seed_epoch_index():
    from eval.data.images import build_transform
    imgs = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    base = list(zip(imgs, range(6)))
    tf = build_transform("fashion-mnist", train=True, mean=(0.5,), std=(0.25,))  # pad 2 + flip
    aug = SeededAugment(base, tf, seed=1)
    a = [aug[i][0] for i in range(6)]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert all(torch.equal(x, aug[i][0]) for i, x in reversed(list(enumerate(a))))  # any order, same draws
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    aug.set_epoch(1)
    assert any(not torch.equal(x, aug[i][0]) for i, x in enumerate(a))
    # each output is a (possibly mirrored) window of the 2-pixel zero-padded image, normalised
    for img, out in zip(imgs, a):
        padded = torch.nn.functional.pad(img.float() / 255, (2, 2, 2, 2))
        windows = [padded[:, i:i + 28, j:j + 28] for i in range(5) for j in range(5)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.allclose(out * 0.25 + 0.5, w, atol=1e-6) for w in windows)
    plain = SeededAugment(base, build_transform("fashion-mnist", mean=(0.5,), std=(0.25,)), train=False)
    assert type(plain[0][0]) is torch.Tensor
    torch.testing.assert_close(plain[0][0], (imgs[0].float() / 255 - 0.5) / 0.25)


# --------------------------------------------------------------------------------------------------- checkpoints
_CHILD = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {repo!r})
    from tests.support.data import tiny_data
    from tests.support.models import TINY_GREY
    from eval.train.trainer import Trainer, TrainConfig
    from zoo import SpikingResNet
    out, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    torch.manual_seed(0)
    model = SpikingResNet(**TINY_GREY)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.2, schedule="cosine", weight_decay=1e-3, save_every_steps=3,
                      log_every_steps=2, progress=False)
    trainer = Trainer(model, tiny_data(), tiny_data(12, seed=1), cfg, out_dir=out)
    if kill_at:  # a real SIGKILL after the optimizer's kill_at-th step of this process, between checkpoints
        count = [0]
        def hook(opt, args, kwargs):
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        trainer.optimizer.register_step_post_hook(hook)
    trainer.fit(resume=resume)
""")


def _child(out: Path, kill_at: int, resume: bool) -> int:
    code = _CHILD.format(repo=str(REPO))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, str(out), str(kill_at), "1" if resume else "0"],
                          cwd=REPO, env=env, timeout=120).returncode


def test_resume_after_sigkill_mid_epoch_ends_with_the_same_weights(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert _child(ref, 0, False) == 0
    # 6 steps per epoch; checkpoints after steps 3, 6 (epoch end), 9; killed after step 11 (mid-epoch 2)
    assert _child(killed, 11, False) == -signal.SIGKILL
    tensors, meta = read_training_checkpoint(killed / "last.safetensors")
    assert (meta["epoch"], meta["step_in_epoch"], meta["global_step"]) == (1, 3, 9)
    assert not (killed / "model.safetensors").exists()
    assert _child(killed, 0, True) == 0
    a, b = read_safetensors(ref / "model.safetensors"), read_safetensors(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the run really trained, and the log has what the progress bar shows
    assert not torch.equal(a["conv1.weight"], _init_conv1())
    lines = [json.loads(l) for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "resume" and r["global_step"] == 9 for r in lines)
    epochs = [r for r in lines if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for r in epochs:
        assert 0.0 <= r["train"]["firing_rate"] <= 1.0 and r["train"]["images_per_s"] > 0
        assert set(r["train"]["grad_norm"]) >= {"conv1.weight", "fc.weight"}
        assert r["val"]["n"] == 12


def _init_conv1():
    torch.manual_seed(0)
    return SpikingResNet(**TINY_GREY).conv1.weight.detach()


def test_resume_refuses_changed_settings_and_foreign_files(tmp_path):
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, progress=False, max_steps_per_epoch=1)
    Trainer(SpikingResNet(**TINY_GREY), tiny_data(16), None, cfg, out_dir=tmp_path).fit()
    other = TrainConfig(epochs=1, batch_size=8, lr=0.05, progress=False, max_steps_per_epoch=1)
    with pytest.raises(ValueError, match=r"lr: 0\.1 -> 0\.05"):
        Trainer(SpikingResNet(**TINY_GREY), tiny_data(16), None, other, out_dir=tmp_path).fit(resume=True)
    with pytest.raises(CheckpointError, match="not a tdbn-zoo training checkpoint"):
        Trainer(SpikingResNet(**TINY_GREY), tiny_data(16), None, cfg).resume(tmp_path / "model.safetensors")


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    atomic_save_safetensors({"w": torch.ones(3)}, path)
    import zoo.manifest

    def broken_fsync(fd):  # the new file is (partly) written, then the disk fails before the rename
        raise OSError("disk full")
    monkeypatch.setattr(zoo.manifest.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_save_safetensors({"w": torch.zeros(3)}, path)
    assert torch.equal(read_safetensors(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temp file left behind


# --------------------------------------------------------------------------------------------------- distributed
def _ddp_worker(rank: int, world: int, init_method: str, out: str, sync: bool) -> None:
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = SpikingResNet(**TINY_GREY)
        cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, weight_decay=1e-3, schedule="constant", progress=False,
                          max_steps_per_epoch=3)
        trainer = Trainer(model, tiny_data(), None, cfg)
        if not sync:  # what torch's converter alone would give: per-process statistics
            for m in model.modules():
                if hasattr(m, "sync"):
                    m.sync = False
        trainer.fit()
        if rank == 0:
            atomic_save_safetensors(model.state_dict(), out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two worker processes twice
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    import torch.multiprocessing as mp
    torch.manual_seed(0)
    single = SpikingResNet(**TINY_GREY)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, weight_decay=1e-3, schedule="constant", progress=False,
                      max_steps_per_epoch=3)
    Trainer(single, tiny_data(), None, cfg).fit()
    ref = single.state_dict()
    results = {}
    for sync in (True, False):
        out = tmp_path / f"ddp_{sync}.safetensors"
        # rendezvous through a fresh file: no TCP port to pick, free and then lose to another process
        init = f"file://{tmp_path / f'rendezvous_{sync}'}"
        mp.spawn(_ddp_worker, args=(2, init, str(out), sync), nprocs=2, join=True)
        results[sync] = read_safetensors(out)
    for k, v in ref.items():
        if v.is_floating_point():
            torch.testing.assert_close(results[True][k], v, rtol=1e-4, atol=1e-5, msg=k)
        else:
            assert torch.equal(results[True][k], v), k
    # without synchronised statistics the 2-process run is a different computation
    assert any(not torch.allclose(results[False][k], v, rtol=1e-4, atol=1e-5)
               for k, v in ref.items() if v.is_floating_point())


# --------------------------------------------------------------------------------------------------- command line
def _write_idx(path: Path, arr) -> None:
    import gzip

    import numpy as np
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def test_train_command_trains_ships_and_loads_a_preset_and_names_missing_data(tmp_path, capsys, monkeypatch):
    from eval.cli import main
    data = tmp_path / "fashion-mnist"
    data.mkdir()
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 16), ("t10k", 8)):
        _write_idx(data / f"{prefix}-images-idx3-ubyte.gz", torch.randint(0, 256, (n, 28, 28), generator=g))
        _write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", torch.arange(n) % 10)
    out = tmp_path / "run"
    args = ["train", "--preset", "sresnet19_narrow_tdbn.fashion_mnist_t2", "--data-dir", str(tmp_path),
            "--out", str(out), "--epochs", "1", "--batch-size", "8", "--no-progress"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["epochs"] == 1 and 0.0 <= result["test_top1"] <= 100.0  # percent
    tensors, meta = read_training_checkpoint(out / "last.safetensors")
    assert meta["preset"] == "sresnet19_narrow_tdbn.fashion_mnist_t2" and meta["config"]["batch_size"] == 8
    assert meta["config"]["schedule"] == "cosine" and meta["model_args"]["T"] == 2
    # ship it (fused, harness-measured, manifest entry) and load it back the way users do
    import zoo
    from eval.release.ship import ship
    weights = tmp_path / "weights"
    monkeypatch.setenv("TDBN_ZOO_WEIGHTS", str(weights))
    shipped = ship(out, str(tmp_path), out_weights=weights)
    assert shipped["fused_top1"] == pytest.approx(shipped["unfused_top1"])
    loaded = zoo.create("sresnet19_narrow_tdbn.fashion_mnist_t2", pretrained=True).eval()
    assert loaded.fused
    trained = zoo.create("sresnet19_narrow_tdbn.fashion_mnist_t2").eval()
    trained.load_state_dict(read_safetensors(out / "model.safetensors"))
    x = (torch.rand(4, 1, 28, 28, generator=g) - 0.286) / 0.353
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained(x), rtol=1e-4, atol=1e-4)
    card = (weights / "sresnet19_narrow_tdbn.fashion_mnist_t2" / "README.md").read_text()
    assert "tdbn-zoo ship" in card
    # the card's command reproduces the run: the preset plus the flags by which the run departed from it
    assert "--preset sresnet19_narrow_tdbn.fashion_mnist_t2 --data-dir '<data root>' " in card
    assert " --epochs 1 --batch-size 8`" in card and "--lr " not in card
    # the recipe as run: this CPU run trained in float32 in one process, whatever the tag's GPU recipe says
    assert meta["device"] == "cpu" and meta["amp"] is False
    config = json.loads((weights / "sresnet19_narrow_tdbn.fashion_mnist_t2" / "config.json").read_text())
    assert config["pretrained_cfg"]["recipe"]["as_run"] == {"device": "cpu", "processes": 1, "amp": False}
    assert "## Training (as run: cpu x1, mixed precision off)" in card
    assert main(args[:-1] + ["--lr", "0.3", "--resume"]) == 2  # another lr cannot continue this run
    assert "cannot resume" in capsys.readouterr().err
    # a run at another T than its tag's cannot be shipped under that tag (its card and cfg would lie)
    assert main(args[:5] + ["--out", str(tmp_path / "t3"), "--T", "3"] + args[7:]) == 0
    with pytest.raises(ValueError, match="T=3 but the tag .* is T=2"):
        ship(tmp_path / "t3", str(tmp_path), out_weights=weights)
    from eval.release.ship import main as ship_main
    capsys.readouterr()
    assert ship_main([str(tmp_path / "t3"), "--data-dir", str(tmp_path), "--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tdbn-zoo ship: error: ") and "T=3" in err and "Traceback" not in err
    assert main(["train", "--preset", "sresnet19_narrow_tdbn.mnist_t2", "--data-dir", str(tmp_path / "none"),
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and str(tmp_path / "none") in err


def test_train_preset_returns_what_the_train_command_prints(tmp_path, capsys):
    """``train_preset`` (the library function behind ``tdbn-zoo train``), called directly with the same options,
    returns the command's JSON line (held-out part, test set at the end) and trains the same weights."""
    from eval.cli import main
    from eval.train.run import TrainOptions, train_preset

    (tmp_path / "fashion-mnist").mkdir()
    g = torch.Generator().manual_seed(1)
    for prefix, n in (("train", 20), ("t10k", 6)):
        _write_idx(tmp_path / "fashion-mnist" / f"{prefix}-images-idx3-ubyte.gz", torch.randint(0, 256, (n, 28, 28), generator=g))
        _write_idx(tmp_path / "fashion-mnist" / f"{prefix}-labels-idx1-ubyte.gz", (torch.arange(n) * 7) % 10)
    preset, kw = "sresnet19_narrow_tdbn.fashion_mnist_t2", dict(stem_width=4, channels=[4, 4, 8], head_hidden=8)
    assert main(["train", "--preset", preset, "--data-dir", str(tmp_path), "--out", str(tmp_path / "cli"),
                 "--epochs", "2", "--batch-size", "4", "--val-fraction", "0.5", "--no-progress",
                 *(w for k, v in kw.items() for w in ("--model-kw", f"{k}={json.dumps(v)}"))]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    result = train_preset(TrainOptions(preset, str(tmp_path / "lib"), data_dir=str(tmp_path), epochs=2, batch_size=4,
                                       val_fraction=0.5, no_progress=True, model_kw=kw))
    assert result == {**printed, "out": str(tmp_path / "lib")}
    assert set(result) == {"preset", "epochs", "val_top1", "val_firing_rate", "test_top1", "test_firing_rate", "out"}
    cli, lib = (read_safetensors(tmp_path / d / "model.safetensors") for d in ("cli", "lib"))
    assert cli.keys() == lib.keys() and all(torch.equal(cli[k], lib[k]) for k in cli)
    assert [json.loads(line)["kind"] for line in (tmp_path / "lib" / "metrics.jsonl").read_text().splitlines()][-1] == "test"


def test_train_report_summarises_accuracy_firing_rate_and_gradients_per_stage(tmp_path):
    from eval.train.compare_runs import markdown, run_summary
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1, progress=False, max_steps_per_epoch=2, log_every_steps=1)
    Trainer(SpikingResNet(**TINY_GREY, norm="bn", surrogate_width=0.5), tiny_data(16), tiny_data(8), cfg,
            out_dir=tmp_path).fit()
    s = run_summary(tmp_path)
    assert (s["norm"], s["surrogate_width"], s["epochs_done"]) == ("bn", 0.5, 2)
    last = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    assert s["val_top1"] == last["val"]["top1"] and s["val_firing_rate"] == last["val"]["firing_rate"]
    layer1 = [v for k, v in last["train"]["grad_norm"].items() if k.startswith("layer1.")]
    assert s["grad_last"]["layer1"] == pytest.approx(sum(layer1) / len(layer1))
    assert s["grad_last"]["stem"] == last["train"]["grad_norm"]["conv1.weight"]
    table = markdown([s])
    assert "| stem | layer1 | layer2 | fc |" in table and f"{s['val_top1']:.2f}%" in table


# --------------------------------------------------------------------------------------------------- talking
class _SignalAt(torch.utils.data.Dataset):
    """``tiny_data`` that sends this process ``signum`` when item ``at`` is read (once): a kill arriving mid-run."""

    def __init__(self, data, at: int, signum=signal.SIGTERM):
        self.data, self.at, self.signum, self.sent = data, at, signum, False

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        if i == self.at and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
        return self.data[i]


def _fit(out, train, val, epochs=2, resume=False, schedule="step", **kw):
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=epochs, batch_size=8, lr=0.1, schedule=schedule, lr_step_epochs=1, progress=False,
                      **kw)
    return Trainer(SpikingResNet(**TINY_GREY), train, val, cfg, out_dir=out, device="cpu", held_out="test").fit(resume)


def test_sigterm_keeps_a_checkpoint_says_so_and_resume_is_exact(tmp_path, capsys):
    from eval.train.trainer import TrainingInterrupted

    _fit(tmp_path / "ref", tiny_data(24), tiny_data(6, 1))
    capsys.readouterr()
    # SIGTERM while the 2nd batch of epoch 1 is loaded (the sampler's order is seeded: find where item 0 falls)
    order = [i for b in ResumableBatchSampler(24, 8, shuffle=True, seed=0) for i in b]
    with pytest.raises(TrainingInterrupted, match=r"stopped by SIGTERM at epoch 1/2: checkpoint kept") as info:
        _fit(tmp_path / "run", _SignalAt(tiny_data(24), order[9]), tiny_data(6, 1))
    assert info.value.exit_code == 128 + signal.SIGTERM == 143  # the shell's code for a SIGTERM'd process
    _, meta = read_training_checkpoint(tmp_path / "run" / "last.safetensors")
    assert (meta["epoch"], meta["step_in_epoch"]) == (0, 2)  # the step that was running finished, then saved
    # SIGINT (Ctrl-C) during validation: the epoch's checkpoint was written before validation began
    with pytest.raises(TrainingInterrupted, match="SIGINT") as info:
        _fit(tmp_path / "run", tiny_data(24), _SignalAt(tiny_data(6, 1), 0, signal.SIGINT), resume=True)
    assert info.value.exit_code == 130
    _, meta = read_training_checkpoint(tmp_path / "run" / "last.safetensors")
    assert (meta["epoch"], meta["step_in_epoch"], meta["global_step"]) == (1, 0, 3)
    _fit(tmp_path / "run", tiny_data(24), tiny_data(6, 1), resume=True)
    a, b = (read_safetensors(tmp_path / r / "model.safetensors") for r in ("ref", "run"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers given back


def test_resume_may_move_the_end_of_a_step_schedule_not_of_a_cosine_one(tmp_path):
    _fit(tmp_path / "ref", tiny_data(16), None, epochs=3)
    _fit(tmp_path / "run", tiny_data(16), None, epochs=1)
    _fit(tmp_path / "run", tiny_data(16), None, epochs=3, resume=True)  # the end moved: the same run
    a, b = (read_safetensors(tmp_path / r / "model.safetensors") for r in ("ref", "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match=r"epochs: 3 -> 2 \(3 epoch\(s\) are already trained"):
        _fit(tmp_path / "run", tiny_data(16), None, epochs=2, resume=True)
    _fit(tmp_path / "cos", tiny_data(16), None, epochs=1, schedule="cosine")
    with pytest.raises(ValueError, match="cosine schedule spans the whole run"):
        _fit(tmp_path / "cos", tiny_data(16), None, epochs=2, schedule="cosine", resume=True)


def test_startup_summary_and_epoch_lines_name_their_split(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, progress=True, save_every_steps=2)
    Trainer(SpikingResNet(**TINY_GREY), tiny_data(24), tiny_data(6, 1), cfg, out_dir=tmp_path, device="cpu",
            held_out="val").fit()
    err = capsys.readouterr().err
    params = sum(p.numel() for p in SpikingResNet(**TINY_GREY).parameters())
    assert (f"train: SpikingResNet, {params:,} parameters, T=2; 24 training images, 6 val images; batch 8, 3 steps "
            f"per epoch, epochs 1-1 of 1; device cpu; checkpoint every 2 steps and every epoch to "
            f"{tmp_path / 'last.safetensors'}") in err
    line = next(ln for ln in err.splitlines() if ln.startswith("epoch 1/1: "))
    assert "train top-1 " in line and "train firing rate" in line and "val top-1 " in line and "val firing rate" in line
    rec = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"epoch"' in l][-1]
    assert rec["held_out"] == "val" and 0 <= rec["val"]["top1"] <= 100 and "acc" not in rec["val"]
    assert f"val top-1 {rec['val']['top1']:.2f}%" in line


def test_stratified_split_holds_out_each_class_in_proportion_with_a_seed():
    from eval.train.datasets import stratified_split

    labels = [0] * 50 + [1] * 30 + [2] * 20
    train, val = stratified_split(labels, 0.2, seed=3)
    assert sorted(train + val) == list(range(100)) and not set(train) & set(val)
    assert [sum(labels[i] == c for i in val) for c in range(3)] == [10, 6, 4]
    assert stratified_split(labels, 0.2, seed=3) == (train, val) and stratified_split(labels, 0.2, seed=4)[1] != val


def test_train_val_fraction_validates_on_training_images_and_tests_once(tmp_path, capsys):
    from eval.cli import main

    write_cifar10(tmp_path / "data", per_batch=6)  # 30 training, 6 test images
    out = tmp_path / "run"
    assert main(["train", "--preset", "sresnet19_tdbn.cifar10_t2", "--data-dir", str(tmp_path / "data"), "--out",
                 str(out), "--epochs", "1", "--batch-size", "6", "--no-verify", "--no-progress", "--input-size",
                 "8", "--val-fraction", "0.2", "--model-kw", "stem_width=4", "--model-kw", "channels=[4,4,4]",
                 "--model-kw", "head_hidden=4"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) >= {"val_top1", "val_firing_rate", "test_top1", "test_firing_rate"}
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    epoch = next(r for r in records if r["kind"] == "epoch")
    test = next(r for r in records if r["kind"] == "test")
    # classes 0..9 hold 1, 2, 3, 4, 5, 5, 4, 3, 2, 1 training images: 20% rounds to one of each class that has
    # two or more (a class of one stays in training)
    assert epoch["held_out"] == "val" and epoch["val"]["n"] == 8
    assert test["test"]["n"] == 6 and result["test_top1"] == test["test"]["top1"]
    _, meta = read_training_checkpoint(out / "last.safetensors")
    assert (meta["train_samples"], meta["val_images"], meta["val_fraction"]) == (22, 8, 0.2)


def test_progress_bar_on_a_terminal_advances_every_step():
    """On a terminal the bar is tqdm's (redrawn at most once a second) and counts every step, not only log steps."""
    import io

    from eval.train.trainer import _Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    bar = _Progress(5, 0, "epoch 1/1", enabled=True, stream=term)
    assert bar.bar is not None and bar.bar.mininterval == 1.0
    for step in range(1, 6):
        bar.update(step, dict(loss=1.0, top1=50.0, firing_rate=0.1, images_per_s=10.0) if step == 5 else None)
    bar.close()
    assert "5/5" in term.getvalue() and "top1=50.0%" in term.getvalue()
    assert _Progress(5, 0, "e", enabled=True, stream=io.StringIO()).bar is None  # no terminal: plain lines


# --- the CUDA step's launch details, checked on CPU ------------------------------------------------------------
def test_autocast_dtype_is_bfloat16_where_the_gpu_supports_it(monkeypatch):
    """bfloat16 needs no GradScaler (whose step reads the overflow flag on the host); float16 where bfloat16 is
    not supported or asked for; float32 (None) off CUDA or with amp off."""
    from eval.train.trainer import autocast_dtype
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for supported, expected in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, supported=supported, **k: supported)
        assert autocast_dtype(cuda) == expected
        assert autocast_dtype(cuda, requested="float16") == torch.float16
    assert autocast_dtype(cuda, amp=False) is None and autocast_dtype(cpu) is None
    with pytest.raises(ValueError, match="amp_dtype 'half'"):
        TrainConfig(amp_dtype="half")


def test_a_cpu_trainer_uses_no_grad_scaler_and_no_pinned_memory():
    trainer = Trainer(SpikingResNet(**TINY_GREY), tiny_data(8), cfg=TrainConfig(batch_size=4), device="cpu")
    assert trainer.amp_dtype is None and not trainer.scaler.is_enabled()
    assert trainer.train_loader.pin_memory is False


def test_each_torchrun_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    from eval.train.trainer import rank_device
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert rank_device() == rank_device(torch.device("cuda")) == rank_device(torch.device("cuda:3")) \
        == torch.device("cuda", 3)
    assert rank_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="--device cuda:1.*LOCAL_RANK"):
        rank_device(torch.device("cuda:1"))  # every process on one GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rank_device() == torch.device("cpu")


def test_train_subset_past_the_split_names_the_maximum(tmp_path, capsys):
    data = tmp_path / "fashion-mnist"
    data.mkdir()
    for prefix, n in (("train", 16), ("t10k", 8)):
        _write_idx(data / f"{prefix}-images-idx3-ubyte.gz", torch.zeros(n, 28, 28, dtype=torch.uint8))
        _write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", torch.arange(n) % 10)
    before = tree_digest(tmp_path)
    r = run_cli(["train", "--preset", "sresnet19_narrow_tdbn.fashion_mnist_t2", "--data-dir", tmp_path, "--out",
                 tmp_path / "run", "--train-subset", "1000000000000"], capsys)
    assert_cli_user_error(r, "--train-subset 1000000000000", "holds 16 items", "at most --train-subset 16")
    assert tree_digest(tmp_path) == before
    # a classifier that contradicts the data's classes (0: no classifier at all) is refused, naming the count
    for n in ("0", "4"):
        r = run_cli(["train", "--preset", "sresnet19_narrow_tdbn.fashion_mnist_t2", "--data-dir", tmp_path, "--out",
                     tmp_path / "run", "--model-kw", f"num_classes={n}"], capsys)
        assert_cli_user_error(r, f"num_classes={n}", "fashion-mnist has 10 classes")
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("flag,value,expected", [
    ("--workers", "100000", r"\[0, \d+\]"), ("--threads", "100000", r"\[1, \d+\]"),
    ("--input-size", "100000", r"\[1, 4096\]")])
def test_processes_threads_and_image_sides_are_bounded(tmp_path, capsys, flag, value, expected):
    """100,000 workers ran the machine out of memory, 100,000 threads broke a native import, a side of 100,000
    asked for 40 GB: each is refused at parse time, naming its range (4 per CPU here; 4096 pixels)."""
    from tests.support.cli import assert_cli_user_error, run_cli

    r = run_cli(["train", "--preset", "sresnet19_narrow_tdbn.fashion_mnist_t2", "--data-dir", tmp_path, "--out",
                 tmp_path / "run", flag, value], capsys)
    assert_cli_user_error(r, f"argument {flag}", expected, value)
    assert not (tmp_path / "run").exists()


def test_a_step_schedule_without_its_step_names_both_flags(tmp_path, capsys):
    from tests.support.cli import assert_cli_user_error, run_cli

    r = run_cli(["train", "--preset", "sresnet19_narrow_tdbn.fashion_mnist_t2", "--data-dir", tmp_path, "--out",
                 tmp_path / "run", "--schedule", "step"], capsys)
    assert_cli_user_error(r, "--schedule step needs --lr-step-epochs N")
    assert not (tmp_path / "run").exists()
