"""tdbn-zoo ship: a finished run -> a fused checkpoint folder where the user says, with a card that states the
run (model arguments, data as given, recipe as run, the paper's figure only as the paper's configuration's),
commands a shell can paste, and a usage line that loads this checkpoint. Tiny CIFAR copy, quarter-tiny widths."""
from __future__ import annotations

import json
import re
import shlex
import shutil

import pytest
import torch

import zoo
from eval.cli import main
from tests.support.cli import run_cli, tree_digest
from tests.support.data import write_cifar10

pytestmark = pytest.mark.usefixtures("one_thread")

TAG = "sresnet19_tdbn.cifar10_t2"
TINY = ["--model-kw", "stem_width=4", "--model-kw", "channels=[4, 8, 8]", "--model-kw", "head_hidden=8"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 1-epoch run of a tiny CIFAR-10 copy re-packed locally (15 training, 3 test images)."""
    root = tmp_path_factory.mktemp("ship")
    write_cifar10(root / "data")
    out = root / "run"
    assert main(["train", "--preset", TAG, "--data-dir", str(root / "data"), "--out", str(out), "--epochs", "1",
                 "--batch-size", "5", "--no-verify", "--no-progress", "--input-size", "16", *TINY]) == 0
    return root


def test_ship_writes_where_asked_and_the_card_states_the_run(run, capsys, monkeypatch):
    capsys.readouterr()
    folder = run / "shipped"
    assert main(["ship", str(run / "run"), "--data-dir", str(run / "data"), "--out", str(folder),
                 "--no-verify"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert result["folder"] == str(folder.resolve()) and result["fused_top1"] == pytest.approx(result["unfused_top1"])
    card = (folder / "README.md").read_text()
    # the data as given: no Hub dataset id for a re-packed 15 + 3 image copy, its counts stated
    assert "uoft-cs/cifar10" not in card and "datasets:" not in card.split("---")[1]
    assert "not verified against the official release (--no-verify)" in card
    assert "15 training and 3 test images" in card
    # the model arguments and recipe as run; the paper's figure only as its configuration's
    assert 'Model arguments as run: stem_width=4, channels=[4, 8, 8], head_hidden=8' in card
    assert "- epochs: 1" in card and "- batch_size: 5" in card and "- epochs: 105" not in card
    assert "The paper's configuration reports 92.34% top-1" in card and "The paper reports" not in card
    # every command a shell can paste: the train command re-parses to the run's own flags
    train_line = re.search(r"- Train: `([^`]+)`", card)[1]
    words = shlex.split(train_line)
    assert words[words.index("--model-kw") + 1] == "stem_width=4" and "channels=[4,8,8]" in words
    assert "--no-verify" in words and words[words.index("--input-size") + 1] == "16"
    ship_cmd = re.search(r"`(tdbn-zoo ship [^`]+)`", card)[1]
    assert shlex.split(ship_cmd)[:3] == ["tdbn-zoo", "ship", str(run / "run")]
    # the usage line loads this checkpoint: run it
    line = re.search(r"model = (zoo\.create\([^)]*\))", card)[1]
    assert f"local-dir:{folder.resolve()}" in line
    loaded = eval(line, {"zoo": zoo}).eval()  # noqa: S307 - the card's own line
    reference = zoo.create(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert loaded.fused and torch.equal(loaded(x), reference(x))
    assert "hf-hub:<owner>/<repo>" in card  # not the official tag's repo


def test_ship_refuses_the_package_weights_and_the_run_itself(run, capsys, monkeypatch):
    from zoo.manifest import package_weights_dir

    monkeypatch.delenv("TDBN_ZOO_WEIGHTS", raising=False)
    for dest in (["--out", str(package_weights_dir() / "mine")], ["--weights", str(package_weights_dir())],
                 ["--out", str(run / "run" / "shipped")]):
        capsys.readouterr()
        assert main(["ship", str(run / "run"), "--data-dir", str(run / "data"), *dest, "--no-verify"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and dest[0] in err[0], err
    assert "inside the command's input folder" in err[0]  # the run: zoo.outputs, the rule of every output
    assert not (package_weights_dir() / "mine").exists()
    with pytest.raises(SystemExit):  # one destination is required
        main(["ship", str(run / "run")])


def test_python_m_eval_release_ship_is_the_subcommand(run, capsys):
    from eval.release.ship import main as ship_main

    assert ship_main([str(run / "run"), "--data-dir", str(run / "data"), "--weights", str(run / "w"),
                      "--no-verify"]) == 0
    manifest = json.loads((run / "w" / "manifest.json").read_text())
    assert TAG in manifest["models"] and (run / "w" / TAG / "model.safetensors").is_file()
    card = (run / "w" / TAG / "README.md").read_text()
    assert f"local-dir:{(run / 'w' / TAG).resolve()}" in card


def test_train_and_ship_your_own_image_folder(tmp_path, capsys):
    """train --data folder:PATH (PATH/train, PATH/test of class folders) and ship it: the model predicts one
    class per folder, the card names the folder and its classes, per-class top-1 included."""
    from PIL import Image

    for split, n in (("train", 6), ("test", 2)):
        for c, rgb in enumerate([(250, 20, 20), (20, 250, 20), (20, 20, 250)]):
            d = tmp_path / "imgs" / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (24 + i, 20), rgb).save(d / f"{i}.png")
    data = f"folder:{tmp_path / 'imgs'}"
    assert main(["train", "--preset", TAG, "--data", data, "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--batch-size", "6", "--no-progress", "--input-size", "16", *TINY]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= result["test_top1"] <= 100
    assert main(["ship", str(tmp_path / "run"), "--out", str(tmp_path / "shipped")]) == 0
    capsys.readouterr()
    config = json.loads((tmp_path / "shipped" / "config.json").read_text())
    assert config["num_classes"] == 3 and config["pretrained_cfg"]["dataset"] == data
    assert config["label_names"] == ["class0", "class1", "class2"]
    card = (tmp_path / "shipped" / "README.md").read_text()
    assert f"your own images ({data})" in card and "18 training and 6 test images" in card
    # the card's commands name the folder (a --data-dir would train on the preset's Fashion-MNIST instead)
    assert f"tdbn-zoo train --preset {TAG} --data {data} --out" in card and "<data root>" not in card
    assert f"`tdbn-zoo ship {tmp_path / 'run'} --out" in card
    assert "Per-class top-1" in card and "class2" in card
    # a resume on another folder of images (same layout, same classes) is another run: refused, naming both
    other = shutil.copytree(tmp_path / "imgs", tmp_path / "other")
    before = tree_digest(tmp_path / "run")
    r = run_cli(["train", "--preset", TAG, "--data", f"folder:{other}", "--out", tmp_path / "run", "--epochs", "2",
                 "--batch-size", "6", "--no-progress", "--input-size", "16", "--resume", *TINY], capsys)
    assert r.rc == 2 and f"dataset: '{data}' -> 'folder:{other}'" in r.err
    assert tree_digest(tmp_path / "run") == before
