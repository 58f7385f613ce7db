"""``eval.train.finetune`` and ``tdbn-zoo finetune``: freezing, the trainer wiring, the reported accuracy."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import zoo
from adapters import TdBatchNorm2d
from eval.cli import main
from eval.data.events import EVENT_DTYPE, EventFraming, collate_frames, open_event_dataset, save_event_npz
from eval.train.finetune import freeze_modules
from zoo.checkpoints import read_safetensors

ARCH = "sresnet19_narrow_tdbn"


def toy_recording(label: int, rng) -> np.ndarray:
    """300 ms on a 34x34 sensor; class 0 fires in the left half, class 1 in the right half."""
    n = 300
    ev = np.zeros(n, EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(0, 300_000, n))
    ev["t"][0], ev["t"][-1] = 0, 300_000
    ev["x"] = rng.integers(0, 17, n) + 17 * label
    ev["y"], ev["p"] = rng.integers(0, 34, n), rng.integers(0, 2, n)
    return ev


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-events")
    rng = np.random.default_rng(0)
    for split, n in (("train", 32), ("test", 16)):
        labels = [i % 2 for i in range(n)]
        save_event_npz(root / f"{split}.npz", [toy_recording(y, rng) for y in labels], labels, (34, 34, 2))
    return root


def run_finetune(root, out, *extra):
    args = ["finetune", "--dataset", str(root), "--model", ARCH, "--T", "3", "--time-window-ms", "100",
            "--size", "16", "16", "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--out", str(out),
            "--no-progress", *extra]
    return main(args)


def test_freeze_modules_keeps_frozen_layers_fixed_and_in_eval_mode():
    model = zoo.create(ARCH, T=2, in_chans=2, num_classes=3)
    assert freeze_modules(model, "stem") == ["conv1", "bn1", "act1"]
    model.train()
    assert not model.bn1.training and model.layer1.training
    assert not model.conv1.weight.requires_grad and model.layer1[0].conv1.weight.requires_grad
    before = model.bn1.running_mean.clone()
    model(torch.rand(2, 4, 2, 16, 16))
    torch.testing.assert_close(model.bn1.running_mean, before)  # eval-mode tdBN: statistics untouched

    body = zoo.create(ARCH, T=2, in_chans=2, num_classes=3)
    freeze_modules(body, "body")
    assert {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad} == {"head_fc", "head_bn", "fc"}
    assert freeze_modules(zoo.create(ARCH, T=2), "none") == []
    with pytest.raises(ValueError, match="cannot freeze 'layer9'.*conv1, bn1"):
        freeze_modules(zoo.create(ARCH, T=2), "layer9")
    everything = zoo.create(ARCH, T=2)
    with pytest.raises(ValueError, match="leaves nothing to train"):
        freeze_modules(everything, ",".join(n for n, _ in everything.named_children()))


def test_finetune_from_scratch_reports_the_accuracy_of_its_checkpoint(toy_dataset, tmp_path, capsys):
    out = tmp_path / "scratch"
    assert run_finetune(toy_dataset, out, "--no-pretrained") == 0
    res = json.loads((out / "results.json").read_text())
    assert res["pretrained"] == "none (from scratch)" and res["epochs"] == 2 and res["test_n"] == 16
    assert res["framing"] == dict(sensor_size=[34, 34, 2], target_size=[16, 16], time_window_us=100_000, T=3,
                                  pad=False)
    assert (out / "last.safetensors").is_file() and (out / "metrics.jsonl").is_file()
    # independent check: rebuild the model from OUT/model.safetensors and score the test split by hand
    model = zoo.create(ARCH, T=3, in_chans=2, num_classes=2)
    model.load_state_dict(read_safetensors(out / "model.safetensors"))
    model.eval()
    test = open_event_dataset(toy_dataset, train=False,
                              transform=EventFraming((34, 34, 2), (16, 16), time_window=100_000, T=3))
    x, y = collate_frames([test[i] for i in range(len(test))])
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert res["test_top1"] == pytest.approx(100 * acc)  # percent
    epochs = [json.loads(line) for line in open(out / "metrics.jsonl") if '"kind": "epoch"' in line]
    assert epochs[1]["train"]["loss"] < epochs[0]["train"]["loss"]  # it learns (left vs right half)
    # --resume on a finished run trains no further and reports the same
    assert run_finetune(toy_dataset, out, "--no-pretrained", "--resume") == 0
    again = json.loads((out / "results.json").read_text())
    assert again["test_top1"] == res["test_top1"]
    torch.testing.assert_close(read_safetensors(out / "model.safetensors")["fc.weight"], model.fc.weight)


def test_finetune_from_a_checkpoint_adapts_first_conv_and_head(toy_dataset, tmp_path):
    torch.manual_seed(1)
    source = zoo.create(ARCH, T=2, in_chans=1, num_classes=10)  # like the Fashion-MNIST checkpoint: 1x28x28, 10 classes
    ckpt = tmp_path / "fmnist.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(ckpt))
    out = tmp_path / "ft"
    assert run_finetune(toy_dataset, out, "--checkpoint", str(ckpt), "--freeze", "stem") == 0
    res = json.loads((out / "results.json").read_text())
    assert res["pretrained"] == str(ckpt) and res["frozen"] == ["conv1", "bn1", "act1"]
    tuned = read_safetensors(out / "model.safetensors")
    src = source.state_dict()
    # the grey first conv spread over ON/OFF channels (zoo.pretrained.adapt_state_dict), then kept frozen
    torch.testing.assert_close(tuned["conv1.weight"], src["conv1.weight"].repeat(1, 2, 1, 1) / 2)
    torch.testing.assert_close(tuned["bn1.running_var"], src["bn1.running_var"])
    assert tuned["fc.weight"].shape == (2, 256)  # a new head for the 2 classes
    assert not torch.equal(tuned["layer1.0.conv1.weight"], src["layer1.0.conv1.weight"])  # the rest learned


def test_finetune_errors(toy_dataset, tmp_path, capsys):
    def error(*args):
        assert main(["finetune", "--model", ARCH, "--out", str(tmp_path / "o"), "--no-progress", *args]) == 2
        return capsys.readouterr().err

    assert "pass --T and --time-window-ms" in error("--dataset", str(toy_dataset), "--no-pretrained")
    assert "sensor size mismatch" in error("--dataset", str(toy_dataset), "--sensor-size", "128", "128", "2",
                                           "--T", "3", "--time-window-ms", "100", "--no-pretrained")
    err = error("--dataset", str(toy_dataset), "--T", "20", "--time-window-ms", "100", "--no-pretrained")
    assert "train.npz[" in err and "too short for T=20" in err and "--pad" in err
    err = error("--dataset", str(toy_dataset), "--T", "3", "--time-window-ms", "100",
                "--model", "sresnet17_tdbn.dvsgesture_t40")  # no checkpoint here, and the Hub is offline in tests
    assert "sresnet17_tdbn.dvsgesture_t40" in err and "--checkpoint FILE" in err and "--no-pretrained" in err
    assert "DVSGesture not found" in error("--dataset", "dvsgesture", "--data-root", str(tmp_path), "--no-pretrained")
    with pytest.raises(SystemExit):
        main(["finetune", "--dataset", "x", "--model", ARCH, "--out", "o", "--checkpoint", "c", "--no-pretrained"])


def test_finetune_refuses_splits_that_name_different_classes(tmp_path, capsys):
    """Class names become ids in sorted order per folder: a test split without 'dog' would call 'owl' 1, not 2."""
    from eval.data.events import write_event_folder

    rng = np.random.default_rng(0)
    for split, classes in (("train", ["cat", "dog", "owl"]), ("test", ["cat", "owl"])):
        folder = write_event_folder(tmp_path / "ds" / split, [toy_recording(i % 2, rng) for i in range(len(classes))],
                                    range(len(classes)), (34, 34, 2))
        rows = "".join(f"{i:05d}.bin,{c}\n" for i, c in enumerate(classes))
        (folder / "labels.csv").write_text("path,label\n" + rows)
    assert run_finetune(tmp_path / "ds", tmp_path / "o", "--no-pretrained") == 2
    err = capsys.readouterr().err
    assert "['cat', 'dog', 'owl'] but the test recordings ['cat', 'owl']" in err and "Traceback" not in err


def test_finetune_from_the_shipped_fused_checkpoint_learns(tmp_path):
    """The shipped checkpoints are fused (no norm left); finetune puts tdBN back (zoo.unfuse) and learns a new
    task: the MNIST net on 400 real Fashion-MNIST images, scored on 100 others."""
    from pathlib import Path

    from eval.train.finetune import finetune
    from eval.train.trainer import TrainConfig
    data = np.load(Path(__file__).parents[2] / "weights" / "data" / "fashion_mnist_test_subset.npz")
    x = (torch.tensor(data["images"]).float()[:, None] / 255 - 0.1307) / 0.3081  # the MNIST normalisation
    items = [(xi[None].expand(2, -1, -1, -1).numpy(), int(yi)) for xi, yi in zip(x, data["labels"])]
    torch.manual_seed(0)
    model = zoo.create(f"{ARCH}.mnist_t2", pretrained=True)
    assert model.fused
    test_x = torch.stack([torch.as_tensor(f) for f, _ in items[400:]], 1)
    with torch.no_grad():
        before = (model.eval()(test_x).argmax(1) == torch.as_tensor(data["labels"][400:])).float().mean().item()
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, weight_decay=1e-4, schedule="cosine", progress=False)
    result = finetune(model, items[:400], items[400:], cfg, tmp_path / "ft")
    tuned = result["model"]
    assert not tuned.fused and isinstance(tuned.bn1, TdBatchNorm2d)
    assert before < 0.3 and result["test_top1"] > 50, (before, result["test_top1"])  # chance: 10%
    assert read_safetensors(tmp_path / "ft" / "model.safetensors")["bn1.weight"].shape == (16,)
