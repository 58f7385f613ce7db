"""Checkpoint folders (save_pretrained), the weights manifest with sha256, and the local resolution order."""
import json

import pytest
import timm
import torch
import yaml

import zoo
from eval.cli import main as cli
from tests.support.cli import assert_cli_user_error, run_cli, tree_digest
from tests.support.models import TINY, make_tiny
from zoo import CheckpointError, PretrainedUnavailableError, SpikingResNet
from zoo.pretrained import loadable

TAG = "sresnet19_tdbn.cifar10_t2"


def trained_tiny(**kw) -> SpikingResNet:
    model = make_tiny(**kw)
    for m in model.modules():  # non-trivial running statistics
        if hasattr(m, "running_var"):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.rand(4, model.in_chans, 8, 8) * 2)
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = trained_tiny()
    out = tmp_path_factory.mktemp("ckpt") / TAG
    metrics = [dict(name="top1", value=12.5, unit="%", dataset="cifar10", split="test", machine="2-core CPU",
                    command="tdbn-zoo eval --model sresnet19_tdbn.cifar10_t2 --data-dir data")]
    zoo.save_pretrained(model, out, tag=TAG, metrics=metrics, card_extra="Extra notes.")
    return model, out


X = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2


def test_folder_layout_config_and_card(saved):
    model, out = saved
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]  # no temp
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "sresnet19_tdbn" and cfg["num_classes"] == 10
    args = cfg["model_args"]
    assert args["fused"] is True and args["T"] == 2 and args["v_th"] == 0.5 and args["tau_decay"] == 0.25
    assert "neuron" not in args  # the backend is chosen at load time
    assert cfg["pretrained_cfg"]["fused"] is True and cfg["pretrained_cfg"]["tag"] == "cifar10_t2"
    SpikingResNet(**args)  # the entrypoint's class accepts every recorded argument
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "timm" and front["license"] == "mit" and front["datasets"] == ["uoft-cs/cifar10"]  # a Hub dataset id
    assert {"timm", "spiking-neural-network"} <= set(front["tags"]) and front["metrics"] == ["accuracy"]
    assert front["model-index"][0]["results"][0]["metrics"][0]["value"] == 12.5
    assert "tdbn-zoo eval --model sresnet19_tdbn.cifar10_t2" in card and "arXiv:2011.05280" in card
    assert "92.34" in card and "Extra notes." in card  # paper figure (labelled as such) and extra text


def test_metrics_need_a_command(tmp_path):
    with pytest.raises(ValueError, match="command"):
        zoo.save_pretrained(trained_tiny(), tmp_path, tag=TAG, metrics=[dict(name="top1", value=1.0)])


def test_explicit_folder_file_and_local_dir_load_the_same_network(saved):
    model, out = saved
    ref = model(X)
    for m in (zoo.create(TAG, pretrained=True, pretrained_cfg_overlay=dict(file=str(out))),
              zoo.create(TAG, pretrained=True, pretrained_cfg_overlay=dict(file=str(out / "model.safetensors")),
                         **{k: v for k, v in TINY.items() if k != "T"}),
              timm.create_model(f"local-dir:{out}", pretrained=True),
              zoo.create(TAG, pretrained=True, neuron="spikingjelly", pretrained_cfg_overlay=dict(file=str(out)))):
        assert m.fused and m.T == 2
        torch.testing.assert_close(m.eval()(X), ref, rtol=0, atol=1e-6)


def test_unfused_training_checkpoint_round_trip(tmp_path):
    model = trained_tiny()
    zoo.save_pretrained(model, tmp_path, tag=TAG, fuse=False)
    assert json.loads((tmp_path / "config.json").read_text())["model_args"]["fused"] is False
    back = zoo.create(TAG, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path))).eval()
    assert not back.fused and isinstance(back.bn1, type(model.bn1))
    torch.testing.assert_close(back.bn1.running_var, model.bn1.running_var)
    torch.testing.assert_close(back(X), model(X), rtol=0, atol=0)


def test_wrong_architecture_and_layout_are_refused(saved):
    _, out = saved
    with pytest.raises(CheckpointError, match="checkpoint of sresnet19_tdbn, not sresnet17_tdbn"):
        zoo.create("sresnet17_tdbn", pretrained=True, pretrained_cfg_overlay=dict(file=str(out)))
    with pytest.raises(CheckpointError, match="is fused but the model was built unfused"):
        zoo.create(TAG, pretrained=True, fused=False, pretrained_cfg_overlay=dict(file=str(out)))
    # truncated, garbage and pickled files: the FILE_ERRORS table of test_checkpoint_refusals.py


def test_shipped_checkpoint_is_verified_and_loaded(saved, weights):
    model, out = saved
    assert not loadable(TAG)
    with pytest.raises(PretrainedUnavailableError, match="tdbn-zoo train --preset sresnet19_tdbn.cifar10_t2"):
        with pytest.MonkeyPatch.context() as mp:  # offline: nothing shipped, nothing cached
            import huggingface_hub.constants as c
            mp.setattr(c, "HF_HUB_OFFLINE", True)
            zoo.create(TAG, pretrained=True)
    assert cli(["manifest", "add", str(out), "--ship"]) == 0
    entry = json.loads((weights / "manifest.json").read_text())["models"][TAG]
    assert entry["path"] == TAG and entry["repo_id"] == f"tdbn-zoo/{TAG}"
    assert set(entry["files"]) == {"model.safetensors", "config.json"}  # the card is not verified
    assert loadable(TAG) and TAG in zoo.list_models(pretrained=True)
    got = zoo.create(TAG, pretrained=True)  # resolved from weights/ via the manifest, no path given
    assert got.fused
    torch.testing.assert_close(got.eval()(X), model(X), rtol=0, atol=1e-6)
    assert cli(["manifest", "verify"]) == 0

    shipped = weights / TAG / "model.safetensors"
    blob = bytearray(shipped.read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit of one weight: still a valid safetensors file
    shipped.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        zoo.create(TAG, pretrained=True)
    assert cli(["manifest", "verify"]) == 2  # the CLI reports it as a user error


def test_manifest_errors_are_clear(weights):
    (weights / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable JSON manifest"):
        zoo.create(TAG, pretrained=True)
    (weights / "manifest.json").write_text(json.dumps({"models": []}))
    with pytest.raises(CheckpointError, match="not a tdbn-zoo manifest"):
        loadable(TAG)


def test_features_only_loads_the_weights_before_wrapping(saved):
    """timm's build_model_with_cfg order: weights first, then the feature wrapper prunes the head."""
    model, out = saved
    want = model.forward_intermediates(X, indices=(1, 2), intermediates_only=True)
    for feats in (zoo.create(TAG, pretrained=True, features_only=True, out_indices=(1, 2),
                             pretrained_cfg_overlay=dict(file=str(out))),
                  timm.create_model(f"local-dir:{out}", pretrained=True, features_only=True, out_indices=(1, 2)),
                  zoo.create(str(out), pretrained=True, features_only=True, out_indices=(1, 2))):
        got = feats.eval()(X)
        assert [g.shape[1] for g in got] == [8, 16]
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=1e-6)


def test_bare_weights_file_is_self_describing(saved):
    """save_pretrained's model.safetensors alone (no config.json, no arguments) builds and loads."""
    model, out = saved
    got = zoo.create(str(out / "model.safetensors"), pretrained=True).eval()
    assert got.fused and got.T == 2 and got.model_args["channels"] == [8, 16]
    torch.testing.assert_close(got(X), model(X), rtol=0, atol=1e-6)


def test_the_loaded_model_carries_the_class_names_its_config_json_gives(tmp_path):
    """timm keeps a checkpoint's class names in ``pretrained_cfg['label_names']``: a shipped checkpoint, the same
    folder named as a path and as ``local-dir:``, and a folder of one's own all carry config.json's list; a new
    classifier (``num_classes`` given) has other classes, so none."""
    from zoo.manifest import weights_dir

    name = "sresnet19_narrow_tdbn.fashion_mnist_t4"
    folder = weights_dir() / name
    names = json.loads((folder / "config.json").read_text())["label_names"]
    assert names[0] == "T-shirt/top" and len(names) == 10  # Fashion-MNIST's classes, in label order
    assert zoo.create(name, pretrained=True).pretrained_cfg["label_names"] == names
    assert zoo.create(str(folder), pretrained=True).pretrained_cfg["label_names"] == names
    assert timm.create_model(f"local-dir:{folder}", pretrained=True).pretrained_cfg["label_names"] == names
    assert "label_names" not in zoo.create(name, pretrained=True, num_classes=3).pretrained_cfg
    own = ["cat", "dog", "bird"]
    zoo.save_pretrained(trained_tiny(num_classes=3), tmp_path / "own", tag="sresnet19_tdbn.pets_t2",
                        cfg=dict(dataset="pets", input_size=(3, 8, 8), label_names=own))
    assert json.loads((tmp_path / "own" / "config.json").read_text())["label_names"] == own
    assert zoo.create(str(tmp_path / "own"), pretrained=True).pretrained_cfg["label_names"] == own


@pytest.mark.parametrize("backend", ["spikingjelly", "snntorch"])
def test_a_shipped_checkpoint_loads_on_every_neuron_backend_with_the_same_logits(backend):
    """``zoo.create(tag, pretrained=True, neuron=...)``: the shape check before loading builds the model on the
    meta device, where snnTorch's Leaky cannot be built (it calls ``.item()``); the loaded model must give the
    native model's logits on real shipped images (float64, so the backends' arithmetic cannot flip a spike)."""
    import numpy as np

    tag = "sresnet19_narrow_tdbn.fashion_mnist_t2"
    data = np.load(zoo.manifest.package_weights_dir() / "data" / "fashion_mnist_test_subset.npz")
    native = zoo.create(tag, pretrained=True).double().eval()
    mean, std = native.pretrained_cfg["mean"][0], native.pretrained_cfg["std"][0]
    x = (torch.from_numpy(data["images"][:8]).double().div(255).unsqueeze(1) - mean) / std
    other = zoo.create(tag, pretrained=True, neuron=backend).double().eval()
    with torch.no_grad():
        torch.testing.assert_close(other(x), native(x), rtol=0, atol=1e-9)
def test_manifest_verify_refuses_entries_whose_files_exist_nowhere(weights, capsys):
    digest = {"sha256": "0" * 64, "size": 1}
    entry = {"repo_id": "someone/x", "revision": None, "files": {"model.safetensors": digest, "config.json": digest}}
    manifest = {"format": 1, "models": {f"{TAG}": entry, **{f"made_up_{i}.t{i}": entry for i in range(100_000)}}}
    (weights / "manifest.json").write_text(json.dumps(manifest))
    before = tree_digest(weights)
    assert_cli_user_error(run_cli(["manifest", "verify"], capsys), "100001 entries", "neither a shipped folder",
                          "pinned Hub revision")
    assert tree_digest(weights) == before
    # a shipped entry whose folder lacks a file it lists
    folder = zoo.save_pretrained(SpikingResNet(layers=(1,), channels=(4,), strides=(1,), stem_width=4,
                                               head_hidden=None, num_classes=3, T=2), weights / TAG, tag=TAG)
    assert cli(["manifest", "add", str(folder), "--ship"]) == 0
    data = json.loads((weights / "manifest.json").read_text())
    data["models"] = {TAG: data["models"][TAG]}
    data["models"][TAG]["files"]["extra.bin"] = digest
    (weights / "manifest.json").write_text(json.dumps(data))
    before = tree_digest(weights)
    assert_cli_user_error(run_cli(["manifest", "verify"], capsys), TAG, "extra.bin", "missing")
    assert tree_digest(weights) == before
    assert_cli_user_error(run_cli(["manifest", "verify", "--manifest", weights / "none.json"], capsys),
                          "no manifest")
