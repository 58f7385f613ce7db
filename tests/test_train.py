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
from zoo import SpikingResNet, TAGS
from zoo.errors import CheckpointError
from zoo.pretrained import read_safetensors

REPO = Path(__file__).resolve().parents[1]
TINY = dict(layers=(1, 1), channels=(4, 8), strides=(1, 2), stem_width=4, head_hidden=None, in_chans=1,
            num_classes=3, T=2)


def tiny_data(n: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.rand(n, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1) * 0.5  # brighter images = higher class
    return torch.utils.data.TensorDataset(x, y)


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
    sys.path.insert(0, {tests!r})
    from test_train import TINY, tiny_data
    from eval.train.trainer import Trainer, TrainConfig
    from zoo import SpikingResNet
    out, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    torch.manual_seed(0)
    model = SpikingResNet(**TINY)
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
    code = _CHILD.format(tests=str(REPO / "tests"))
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
    return SpikingResNet(**TINY).conv1.weight.detach()


def test_resume_refuses_changed_settings_and_foreign_files(tmp_path):
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, progress=False, max_steps_per_epoch=1)
    Trainer(SpikingResNet(**TINY), tiny_data(16), None, cfg, out_dir=tmp_path).fit()
    other = TrainConfig(epochs=1, batch_size=8, lr=0.05, progress=False, max_steps_per_epoch=1)
    with pytest.raises(ValueError, match=r"lr: 0\.1 -> 0\.05"):
        Trainer(SpikingResNet(**TINY), tiny_data(16), None, other, out_dir=tmp_path).fit(resume=True)
    with pytest.raises(CheckpointError, match="not a tdbn-zoo training checkpoint"):
        Trainer(SpikingResNet(**TINY), tiny_data(16), None, cfg).resume(tmp_path / "model.safetensors")


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
        model = SpikingResNet(**TINY)
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
    single = SpikingResNet(**TINY)
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
    assert result["epochs"] == 1 and 0.0 <= result["test_top1"] <= 1.0
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
    assert "python -m eval.release.ship" in card
    # the card's command reproduces the run: the preset plus the flags by which the run departed from it
    assert "--preset sresnet19_narrow_tdbn.fashion_mnist_t2 --data-dir <data root> " in card
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
    assert err.startswith("python -m eval.release.ship: error: ") and "T=3" in err and "Traceback" not in err
    assert main(["train", "--preset", "sresnet19_narrow_tdbn.mnist_t2", "--data-dir", str(tmp_path / "none"),
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and str(tmp_path / "none") in err


def test_train_report_summarises_accuracy_firing_rate_and_gradients_per_stage(tmp_path):
    from eval.train.compare_runs import markdown, run_summary
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1, progress=False, max_steps_per_epoch=2, log_every_steps=1)
    Trainer(SpikingResNet(**TINY, norm="bn", surrogate_width=0.5), tiny_data(16), tiny_data(8), cfg,
            out_dir=tmp_path).fit()
    s = run_summary(tmp_path)
    assert (s["norm"], s["surrogate_width"], s["epochs_done"]) == ("bn", 0.5, 2)
    last = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    assert s["val_acc"] == last["val"]["acc"] and s["val_firing_rate"] == last["val"]["firing_rate"]
    layer1 = [v for k, v in last["train"]["grad_norm"].items() if k.startswith("layer1.")]
    assert s["grad_last"]["layer1"] == pytest.approx(sum(layer1) / len(layer1))
    assert s["grad_last"]["stem"] == last["train"]["grad_norm"]["conv1.weight"]
    table = markdown([s])
    assert "| stem | layer1 | layer2 | fc |" in table and f"{100 * s['val_acc']:.2f}%" in table


def test_train_subset_past_the_split_names_the_maximum(tmp_path, capsys):
    from tests.hostile import assert_cli_user_error, run_cli, tree_digest

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
