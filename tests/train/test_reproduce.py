"""``tdbn-zoo reproduce``: the whole chain (train -> ship -> publish) for every tag on tiny data written in the
real on-disk layouts, the printed commands, the launch lines for N GPUs and several nodes, and bad input.

Each smoke run ends by loading the shipped folder with ``zoo.create(TAG, pretrained=True,
pretrained_cfg_overlay=dict(file=...))`` and comparing its logits with the run's own weights fused by hand
(``zoo.fuse`` of ``RUN/train/model.safetensors``), and its card's top-1 with a hand-counted accuracy."""
from __future__ import annotations

import json
import shlex

import pytest
import torch

import zoo
from eval.data.smoke import write_smoke_data
from tests.support.cli import assert_cli_user_error, run_cli
from tests.support.data import write_cifar10
from zoo.checkpoints import read_safetensors
from zoo.tags import TAGS

PAPER_TAGS = [t for t in TAGS if TAGS[t].get("paper_top1") is not None]
CPU_TAGS = [t for t in TAGS if TAGS[t].get("paper_top1") is None]
EVENT_DATASETS = ("dvs-gesture", "cifar10-dvs")


def _printed(out: str, step: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(f"[reproduce] {step}: "))
    return shlex.split(line.split(": ", 1)[1])


def _inputs(tag: str, model, run) -> torch.Tensor:
    """A batch at the smoke run's input size: the static input side from the run, event frames at the tag's."""
    C, H, W = TAGS[tag]["input_size"]
    g = torch.Generator().manual_seed(1)
    if TAGS[tag]["dataset"] in EVENT_DATASETS:
        return (torch.rand(model.T, 2, C, H, W, generator=g) < 0.1).float()
    side = _train_meta(run).get("input_size") or H
    return torch.randn(2, C, side, side, generator=g)


def _train_meta(run) -> dict:
    from eval.train.checkpoint import read_training_checkpoint
    return read_training_checkpoint(run / "train" / "last.safetensors")[1]


def _hand_top1(tag: str, fused, run) -> float:
    """Accuracy of ``fused`` on the smoke test split, counted by hand over the dataset's items."""
    from eval.data.images import build_dataset
    name = {"imagenet-1k": "imagenet"}.get(TAGS[tag]["dataset"], TAGS[tag]["dataset"])
    test = build_dataset(name, run / "smoke-data", "test", input_size=_train_meta(run).get("input_size"),
                         verify=False)
    with torch.no_grad():
        hits = [int(fused(x[None]).argmax(1)) == y for x, y in test]
    return 100.0 * sum(hits) / len(hits)


@pytest.mark.slow
@pytest.mark.parametrize("tag", PAPER_TAGS + CPU_TAGS)
def test_smoke_chain_ships_a_checkpoint_that_loads_by_tag(tag, tmp_path, capsys):
    run = tmp_path / "run"
    res = run_cli(["reproduce", tag, "--smoke", "--out", run, "--threads", "2", "--device", "cpu"], capsys)
    assert res.rc == 0, res.err
    # every step is printed as the command that runs it alone
    train_cmd, ship_cmd = _printed(res.out, "train"), _printed(res.out, "ship")
    assert train_cmd[:5] == ["tdbn-zoo", "train", "--preset", tag, "--data-dir"] and "--resume" in train_cmd
    assert ship_cmd[:3] == ["tdbn-zoo", "ship", str(run / "train")]
    summary = json.loads(res.out.strip().splitlines()[-1])
    folder = run / "weights" / tag
    assert summary["checkpoint"] == str(folder) and summary["paper_top1"] == TAGS[tag].get("paper_top1")

    loaded = zoo.create(tag, pretrained=True, pretrained_cfg_overlay=dict(file=str(folder))).eval()
    by_hand = zoo.create(tag)
    by_hand.load_state_dict(read_safetensors(run / "train" / "model.safetensors"))
    by_hand = zoo.fuse(by_hand.eval())
    assert loaded.fused and loaded.T == TAGS[tag]["T"]
    x = _inputs(tag, loaded, run)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), by_hand(x), rtol=1e-5, atol=1e-5)

    card = (folder / "README.md").read_text()
    assert f"| top1 | {round(summary['fused_top1'], 2)}%" in card
    if TAGS[tag].get("paper_top1") is not None:
        # a smoke run departs from the paper's recipe: the card says so, and gives the paper's figure as such
        assert f"The paper's configuration reports {TAGS[tag]['paper_top1']}% top-1" in card and "departs" in card
    manifest = json.loads((run / "weights" / "manifest.json").read_text())
    assert manifest["models"][tag]["path"] == tag
    if TAGS[tag]["dataset"] not in EVENT_DATASETS:
        assert summary["fused_top1"] == pytest.approx(_hand_top1(tag, by_hand, run))


# --- publish to the local Hub-protocol server, and a rerun that resumes instead of retraining ---------------
def test_rerun_resumes_then_publishes_and_the_hub_copy_loads(hub, online, tmp_path, capsys):
    tag, repo = "sresnet19_narrow_tdbn.mnist_t2", "tdbn-zoo/smoke-mnist"
    run = tmp_path / "run"
    argv = ["reproduce", tag, "--smoke", "--out", run, "--threads", "2", "--device", "cpu"]
    first = run_cli(argv, capsys)
    assert first.rc == 0, first.err
    trained = read_safetensors(run / "train" / "model.safetensors")

    # the same command again (e.g. after an interruption) resumes: no step is trained twice
    second = run_cli(argv + ["--publish", repo], capsys)
    assert second.rc == 0, second.err
    records = [json.loads(ln) for ln in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records].count("epoch") == 1 and records[-1]["kind"] == "resume"
    again = read_safetensors(run / "train" / "model.safetensors")
    assert again.keys() == trained.keys() and all(torch.equal(again[k], trained[k]) for k in trained)

    publish_cmd = _printed(second.out, "publish")
    assert publish_cmd == ["tdbn-zoo", "publish", str(run / "weights" / tag), "--repo", repo, "--manifest",
                           str(run / "weights" / "manifest.json")]
    entry = json.loads((run / "weights" / "manifest.json").read_text())["models"][tag]
    assert entry["repo_id"] == repo and entry["revision"] == hub.store.repos[("model", repo)].resolve("main").oid

    local = zoo.create(tag, pretrained=True, pretrained_cfg_overlay=dict(file=str(run / "weights" / tag))).eval()
    remote = zoo.create(tag, pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=repo)).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(remote(x), local(x), rtol=0, atol=0)

    # the printed train and ship commands run alone (here: nothing left to train, the test set re-measured)
    from eval.cli import main
    assert main(_printed(second.out, "train")[1:]) == 0
    assert main(_printed(second.out, "ship")[1:]) == 0


# --- the tiny datasets are read by the real readers -------------------------------------------------------
def test_smoke_data_is_read_by_the_real_readers(tmp_path):
    from eval.data.images import build_dataset, read_idx
    from eval.data.events import DVS_GESTURE, open_event_dataset

    root = write_smoke_data("cifar10", tmp_path / "cifar")
    train = build_dataset("cifar10", root, "train", verify=False)  # torchvision's CIFAR10 reads the batches
    assert train.data.shape == (10, 32, 32, 3) and len(train.targets) == 10 and train.classes[0] == "airplane"
    assert len(build_dataset("cifar10", root, "test", verify=False)) == 2
    with pytest.raises(ValueError, match="MD5"):  # not the official files: refused unless --no-verify
        build_dataset("cifar10", root, "test")

    root = write_smoke_data("imagenet-1k", tmp_path / "in1k")
    val = build_dataset("imagenet", root, "test", input_size=32)
    assert len(val) == 2 and val[0][0].shape == (3, 32, 32) and val.classes == ["n01440764", "n01443537"]

    root = write_smoke_data("mnist", tmp_path / "mnist")
    assert read_idx(root / "train-images-idx3-ubyte.gz").shape == (4, 28, 28)
    assert read_idx(root / "t10k-labels-idx1-ubyte.gz").shape == (2,)

    root = write_smoke_data("dvs-gesture", tmp_path / "gesture")
    train = open_event_dataset("dvsgesture", train=True, data_root=root, transform=DVS_GESTURE)
    test = open_event_dataset("dvsgesture", train=False, data_root=root, transform=DVS_GESTURE)
    frames, label = train[0]
    assert len(train) == 6 and len(test) == 3 and frames.shape == (40, 2, 32, 32) and label in (0, 2, 10)


def test_smoke_cifar10_dvs_layout(tmp_path):
    pytest.importorskip("faery", reason="faery writes the .aedat4 recordings")
    from eval.data.events import CIFAR10_DVS, open_event_dataset

    root = write_smoke_data("cifar10-dvs", tmp_path)
    train = open_event_dataset("cifar10dvs", train=True, data_root=root, transform=CIFAR10_DVS)
    test = open_event_dataset("cifar10dvs", train=False, data_root=root, transform=CIFAR10_DVS)
    assert len(train) == 50 and sorted(test.targets) == list(range(10))
    frames, _ = test[0]
    assert frames.shape == (10, 2, 42, 42) and frames.sum() > 0


# --- the launch lines ---------------------------------------------------------------------------------------
def test_dry_run_checks_what_the_real_run_needs_and_prints_its_exact_commands(tmp_path, capsys):
    """--dry-run reads the data as the run will: missing data, a re-packed CIFAR copy without --no-verify and an
    unwritable output are refused (exit 2, one line); with --no-verify both steps carry it; the recipe
    overrides reach the train command; a failed step names a checkpoint only where one exists."""
    from eval.release.reproduce import StepFailed, make_plan

    tag = "sresnet19_tdbn.cifar10_t2"
    res = run_cli(["reproduce", tag, "--data-dir", tmp_path / "none", "--out", tmp_path / "r", "--dry-run"], capsys)
    assert res.rc == 2 and "cifar10 (train split) not found" in res.err and res.out == ""
    write_cifar10(tmp_path / "data")
    res = run_cli(["reproduce", tag, "--data-dir", tmp_path / "data", "--out", tmp_path / "r", "--dry-run"], capsys)
    assert res.rc == 2 and "MD5" in res.err and "--no-verify" in res.err
    res = run_cli(["reproduce", tag, "--data-dir", tmp_path / "data", "--out", tmp_path / "r", "--dry-run",
                   "--no-verify", "--epochs", "2", "--model-kw", "channels=[32, 64, 128]", "--width", "0.25"], capsys)
    assert res.rc == 0, res.err
    train, ship = (shlex.split(line) for line in res.out.strip().splitlines())
    assert "--no-verify" in train and "--no-verify" in ship
    assert train[train.index("--epochs") + 1] == "2" and train[train.index("--model-kw") + 1] == "channels=[32, 64, 128]"
    assert train[train.index("--width") + 1] == "0.25"
    res = run_cli(["reproduce", tag, "--data-dir", tmp_path / "data", "--out", tmp_path / "r", "--dry-run",
                   "--no-verify", "--model-kw", "width=2"], capsys)
    assert res.rc == 2 and "no model argument 'width'" in res.err
    (tmp_path / "file").write_text("x")
    res = run_cli(["reproduce", tag, "--data-dir", tmp_path / "data", "--out", tmp_path / "file" / "r",
                   "--dry-run", "--no-verify"], capsys)
    assert res.rc == 2 and "--out" in res.err
    plan = make_plan(tag, tmp_path / "r", data_dir=tmp_path / "data", verify=False)
    assert "does not exist), so training starts afresh" in str(StepFailed("train", 2, plan))


def test_print_only_prints_the_steps_for_one_gpu_eight_gpus_and_two_nodes(tmp_path, capsys):
    tag = "sresnet34_tdbn.in1k_t6"
    res = run_cli(["reproduce", tag, "--data-dir", "/data/imagenet", "--out", tmp_path / "r", "--print-only",
                   "--publish", "me/r34"], capsys)
    assert res.rc == 0, res.err
    train, ship, publish = res.out.strip().splitlines()
    assert train == f"tdbn-zoo train --preset {tag} --data-dir /data/imagenet --out {tmp_path}/r/train --resume"
    assert ship == (f"tdbn-zoo ship {tmp_path}/r/train --data-dir /data/imagenet "
                    f"--weights {tmp_path}/r/weights")
    assert publish == (f"tdbn-zoo publish {tmp_path}/r/weights/{tag} --repo me/r34 --manifest "
                       f"{tmp_path}/r/weights/manifest.json")

    res = run_cli(["reproduce", tag, "--data-dir", "/d", "--out", "r", "--print-only", "--gpus", "8"], capsys)
    assert res.out.splitlines()[0] == (f"torchrun --standalone --nproc_per_node=8 -m eval.cli train --preset {tag} "
                                       f"--data-dir /d --out r/train --resume")
    # one GPU per process: the device type goes to every rank, each takes the GPU of its LOCAL_RANK
    res = run_cli(["reproduce", tag, "--data-dir", "/d", "--out", "r", "--print-only", "--gpus", "8", "--device",
                   "cuda"], capsys)
    assert res.out.splitlines()[0].endswith("--resume --device cuda")
    assert_cli_user_error(run_cli(["reproduce", tag, "--data-dir", "/d", "--out", "r", "--print-only", "--gpus", "8",
                                   "--device", "cuda:1"], capsys), r"--device cuda:1 with 8 processes", "LOCAL_RANK")
    res = run_cli(["reproduce", tag, "--data-dir", "/d", "--out", "r", "--print-only", "--gpus", "8", "--nnodes", "2",
                   "--node-rank", "1", "--master-addr", "10.0.0.1"], capsys)
    assert res.out.splitlines()[0].startswith(
        "torchrun --nnodes=2 --node_rank=1 --nproc_per_node=8 --master_addr=10.0.0.1 --master_port=29500 "
        "-m eval.cli train")


def test_the_recipe_global_batch_is_split_over_the_processes():
    """Table 5's batch per GPU x GPUs is the preset's global batch; the trainer splits it evenly."""
    from eval.train.presets import get_preset
    for tag in PAPER_TAGS:
        r = TAGS[tag]["recipe"]
        assert get_preset(tag)["train"].batch_size == r["batch_size_per_gpu"] * r["gpus"]
        assert r["amp"] and r["sync_bn"] == (r["gpus"] > 1)
        assert isinstance(r["epochs"], int) and isinstance(r["weight_decay"], float)
        assert set(r["unstated"]) == {"epochs", "weight_decay"}


# --- bad input: one line, exit 2, before any work ----------------------------------------------------------
@pytest.mark.parametrize("extra, needles", [
    (["--gpus", "0"], [r"--gpus: expected an integer >= 1, got '0'"]),
    (["--node-rank", "-1"], [r"--node-rank: expected an integer >= 0"]),
    (["--gpus", "7", "--dry-run"], [r"global batch \(36", r"7 processes"]),
    (["--nnodes", "2", "--dry-run"], [r"--master-addr"]),
    (["--nnodes", "2", "--node-rank", "2", "--master-addr", "h"], [r"--node-rank must lie in 0\.\.1", "got 2"]),
    (["--publish", "not a repo"], [r"--publish expects a Hub repo id", "not a repo"]),
    (["--smoke", "--data-dir", "x"], [r"--smoke writes its own"]),
    (["--data-dir", "NOWHERE"], [r"cifar10 \(train split\) not found", "NOWHERE"]),
    (["--gpus", "2", "--data-dir", "SMOKE", "--no-verify"], [r"needs CUDA devices|CUDA device\(s\)"]),
])
def test_bad_arguments_are_one_line_errors(extra, needles, tmp_path, capsys):
    if "SMOKE" in extra:  # real data present, so the GPU check is what fails
        extra = [str(write_smoke_data("cifar10", tmp_path / "d")) if a == "SMOKE" else a for a in extra]
    if torch.cuda.is_available() and "--gpus" in extra and extra[extra.index("--gpus") + 1] == "2":
        pytest.skip("this machine has CUDA")
    extra = [str(tmp_path / a) if a == "NOWHERE" else a for a in extra]
    res = run_cli(["reproduce", "sresnet19_tdbn.cifar10_t6", "--out", tmp_path / "run", *extra], capsys)
    assert_cli_user_error(res, *needles)
    assert not (tmp_path / "run" / "train").exists()


def test_unknown_tag_and_out_file_are_one_line_errors(tmp_path, capsys):
    assert_cli_user_error(run_cli(["reproduce", "sresnet19_tdbn.cifar10_t5", "--out", tmp_path, "--smoke"],
                                  capsys), "unknown preset", "cifar10_t6")
    (tmp_path / "file").write_text("x")
    assert_cli_user_error(run_cli(["reproduce", "sresnet19_tdbn.cifar10_t6", "--out", tmp_path / "file",
                                   "--smoke"], capsys), r"--out .*file is a file")


@pytest.mark.slow
def test_two_process_launch_trains_what_one_process_trains(tmp_path, capsys):
    """``--gpus 2`` (here two CPU processes over gloo) runs the printed torchrun command; with synchronised
    tdBN and the global batch split in two, the weights equal a one-process run's."""
    tag = "sresnet19_narrow_tdbn.mnist_t2"
    runs = {}
    for n in (1, 2):
        res = run_cli(["reproduce", tag, "--smoke", "--out", tmp_path / f"p{n}", "--gpus", n, "--threads", "1",
                       "--device", "cpu"], capsys)
        assert res.rc == 0, res.err
        runs[n] = read_safetensors(tmp_path / f"p{n}" / "train" / "model.safetensors")
    assert _printed(res.out, "train")[:3] == ["torchrun", "--standalone", "--nproc_per_node=2"]
    assert _train_meta(tmp_path / "p2")["world_size"] == 2
    for k, v in runs[1].items():
        torch.testing.assert_close(runs[2][k], v, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
def test_ship_measures_an_event_run_on_the_framed_test_set(tmp_path):
    """The ship step of an event tag (a run trained with the Trainer API, as `tdbn-zoo train` will for the
    event presets): its card's top-1 equals a hand count over the paper-framed DVS-Gesture test recordings."""
    from eval.data.events import build_event_dataset
    from eval.release.ship import ship
    from eval.train.trainer import Trainer, TrainConfig

    tag = "sresnet17_tdbn.dvsgesture_t40"
    root = write_smoke_data("dvs-gesture", tmp_path / "data")
    model = zoo.create(tag)
    train, test = (build_event_dataset(f"dvsgesture:{root}", split, model=model) for split in ("train", "test"))
    cfg = TrainConfig(epochs=1, batch_size=2, max_steps_per_epoch=1, progress=False)
    state = dict(preset=tag, dataset="dvs-gesture", data_dir=str(root), model_kw={}, T=model.T)
    Trainer(model, train, test, cfg, out_dir=tmp_path / "run", device="cpu", extra_state=state).fit()
    result = ship(tmp_path / "run", str(root), out_weights=tmp_path / "weights")

    loaded = zoo.create(tag, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "weights" / tag)))
    with torch.no_grad():
        hits = [int(loaded.eval()(torch.as_tensor(frames)[:, None].float()).argmax(1)) == y for frames, y in test]
    assert len(hits) == 3 and result["fused_top1"] == pytest.approx(100.0 * sum(hits) / len(hits))
