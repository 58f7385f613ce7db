"""Checkpoint files: a trainer's bare ``model.safetensors`` carries its architecture and model arguments in its
header, so it can be evaluated with no config.json and no --arch; atomic writes keep the usual file modes."""
import json

import torch
from torch.utils.data import DataLoader, TensorDataset

import zoo
from eval.cli import main
from eval.data.images import build_dataset
from eval.train.trainer import Trainer
from zoo.checkpoints import Checkpoint


def test_trainer_weights_evaluate_without_arch(tmp_path, capsys):
    # a non-default size, so that building the architecture's defaults would not fit the weights
    model = zoo.create("sresnet19_narrow_tdbn", T=1, stem_width=8, channels=(8, 16, 32))
    data = DataLoader(TensorDataset(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))), batch_size=4)
    path = Trainer(model, data).save_model(tmp_path / "model.safetensors")

    ckpt = Checkpoint.from_path(path)
    assert ckpt.architecture == "sresnet19_narrow_tdbn" and ckpt.model_args["channels"] == [8, 16, 32]

    out = tmp_path / "result.json"
    assert main(["eval", str(path), "--data", "fashion-mnist-subset", "--max-images", "16", "--batch-size", "8",
                 "--speed-batches", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert result["images"] == 16 and result["T"] == 1
    model.eval()
    ds = build_dataset("fashion-mnist-subset")
    x = torch.stack([ds[i][0] for i in range(16)])
    y = torch.tensor([ds[i][1] for i in range(16)])
    with torch.no_grad():
        top1 = (model(x).argmax(1) == y).float().mean().item()
    assert result["top1"] == 100 * top1  # percent


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os
    import stat

    from zoo.fileio import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o644  # not mkstemp's 0600
