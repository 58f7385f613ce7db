"""Publishing to and loading from a Hub: the real huggingface_hub client against a Hub-protocol server on
127.0.0.1 (tests/hub_emulator.py), plus an opt-in test against the live Hub."""
import json
import os
import socket
import uuid

import pytest
import timm
import torch
from safetensors.torch import load_file

import zoo
from eval.cli import main as cli
from tests.support.cli import assert_cli_user_error, assert_user_error, run_cli, tree_digest
from tests.support.hub import HUB_TOKEN
from tests.support.models import TINY
from zoo import CheckpointError, PretrainedUnavailableError, SpikingResNet
from zoo.pretrained import loadable

TAG = "sresnet19_tdbn.cifar10_t2"
REPO = f"tdbn-zoo/{TAG}"
X = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2


def offline(monkeypatch, cache):
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))


@pytest.fixture(scope="module")
def published(hub, tmp_path_factory):
    """A tiny fused checkpoint published with `tdbn-zoo publish --manifest`."""
    model = SpikingResNet(**TINY)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "running_var"):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    folder = zoo.save_pretrained(model.eval(), tmp_path_factory.mktemp("ckpt") / TAG, tag=TAG)
    manifest = tmp_path_factory.mktemp("weights") / "manifest.json"
    assert cli(["publish", str(folder), "--repo", REPO, "--manifest", str(manifest)]) == 0
    return model, folder, json.loads(manifest.read_text())


def use_manifest(online, manifest: dict):
    (online / "weights").mkdir(exist_ok=True)
    (online / "weights" / "manifest.json").write_text(json.dumps(manifest))


def test_publish_records_a_pinned_revision(published, hub):
    _, folder, manifest = published
    entry = manifest["models"][TAG]
    repo = hub.store.repos[("model", REPO)]
    assert entry["repo_id"] == REPO and entry["revision"] == repo.resolve("main").oid
    assert "path" not in entry  # published, not shipped
    assert set(repo.resolve("main").files) >= {"model.safetensors", "config.json", "README.md"}


def test_download_into_clean_cache_gives_identical_weights_and_outputs(published, online):
    model, folder, manifest = published
    use_manifest(online, manifest)
    assert not loadable(TAG)
    got = zoo.create(TAG, pretrained=True).eval()  # resolved to the Hub: nothing shipped
    want = load_file(folder / "model.safetensors")
    assert got.state_dict().keys() == want.keys()
    assert all(torch.equal(got.state_dict()[k], v) for k, v in want.items())
    torch.testing.assert_close(got(X), model(X), rtol=0, atol=1e-6)
    snap = online / "hf-cache" / f"models--{REPO.replace('/', '--')}" / "snapshots" / manifest["models"][TAG]["revision"]
    assert sorted(p.name for p in snap.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert loadable(TAG)
    timm_model = timm.create_model(f"hf-hub:{REPO}", pretrained=True).eval()  # timm reads the same repo
    assert timm_model.fused and timm_model.T == 2
    torch.testing.assert_close(timm_model(X), got(X), rtol=0, atol=0)
    names = json.loads((folder / "config.json").read_text())["label_names"]  # what the card's config says
    assert len(names) == 10 and got.pretrained_cfg["label_names"] == timm_model.pretrained_cfg["label_names"] == names


def test_offline_uses_the_cache_and_explains_when_it_cannot(published, online, monkeypatch):
    model, _, manifest = published
    use_manifest(online, manifest)
    zoo.create(TAG, pretrained=True)  # fills the cache
    offline(monkeypatch, online / "hf-cache")
    got = zoo.create(TAG, pretrained=True).eval()
    torch.testing.assert_close(got(X), model(X), rtol=0, atol=1e-6)
    offline(monkeypatch, online / "empty-cache")
    with pytest.raises(PretrainedUnavailableError) as e:
        zoo.create(TAG, pretrained=True)
    msg = str(e.value)
    assert REPO in msg and "HF_HUB_OFFLINE" in msg and "empty-cache" in msg and "tdbn-zoo train" in msg


def test_hub_file_failing_the_manifest_sha256_is_refused(published, online):
    _, _, manifest = published
    bad = json.loads(json.dumps(manifest))
    bad["models"][TAG]["files"]["model.safetensors"]["sha256"] = "0" * 64
    use_manifest(online, bad)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        zoo.create(TAG, pretrained=True)


def test_config_of_another_architecture_and_missing_repo(hub, online, tmp_path):
    other = SpikingResNet(**dict(TINY, in_chans=2, num_classes=11))
    folder = zoo.save_pretrained(other, tmp_path / "s17", tag="sresnet17_tdbn.dvsgesture_t40")
    assert cli(["publish", str(folder), "--repo", "tdbn-zoo/sresnet19_tdbn.cifar10_t4"]) == 0  # wrong repo
    with pytest.raises(CheckpointError, match="checkpoint of sresnet17_tdbn, not sresnet19_tdbn"):
        zoo.create("sresnet19_tdbn.cifar10_t4", pretrained=True)
    with pytest.raises(PretrainedUnavailableError, match="tdbn-zoo/sresnet19_tdbn.cifar10_t6 does not exist"):
        zoo.create("sresnet19_tdbn.cifar10_t6", pretrained=True)
    assert cli(["publish", str(tmp_path / "nowhere"), "--repo", "tdbn-zoo/x"]) == 2


def _live_hub_ready() -> bool:
    if not os.environ.get("HF_TOKEN") or os.environ.get("TDBN_ZOO_LIVE_HUB") != "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.live
@pytest.mark.skipif(not _live_hub_ready(), reason="opt-in: set TDBN_ZOO_LIVE_HUB=1 and HF_TOKEN, with network")
def test_live_hub_round_trip(tmp_path, monkeypatch):
    """Publish a tiny checkpoint to a private repo on huggingface.co, download it back, delete the repo."""
    import huggingface_hub.constants as c
    from huggingface_hub import HfApi

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "cache"))
    api = HfApi()
    repo = f"{api.whoami()['name']}/tdbn-zoo-live-test-{uuid.uuid4().hex[:8]}"
    model = SpikingResNet(**TINY).eval()
    folder = zoo.save_pretrained(model, tmp_path / "ckpt", tag=TAG, repo_id=repo)
    try:
        assert cli(["publish", str(folder), "--repo", repo, "--private"]) == 0
        got = timm.create_model(f"hf-hub:{repo}", pretrained=True).eval()
        torch.testing.assert_close(got(X), model(X), rtol=0, atol=1e-6)
    finally:
        api.delete_repo(repo, missing_ok=True)


def test_a_second_revision_on_main_never_mixes_config_and_weights(hub, online, tmp_path):
    """After a T=4 checkpoint lands on main, every name gives the config and weights of one commit."""
    from huggingface_hub import HfApi

    repo = "tdbn-zoo/two-revisions"
    first, second = SpikingResNet(**TINY).eval(), SpikingResNet(**dict(TINY, T=4, v_th=0.3)).eval()
    api = HfApi(token=HUB_TOKEN)
    api.create_repo(repo, exist_ok=True)
    commits = [api.upload_folder(repo_id=repo, folder_path=str(zoo.save_pretrained(m, tmp_path / str(i), tag=TAG)))
               .oid for i, m in enumerate((first, second))]
    for name, want, T in ((f"hf-hub:{repo}@{commits[0]}", first, 2), (f"hf-hub:{repo}", second, 4)):
        for got in (zoo.create(name, pretrained=True), timm.create_model(name, pretrained=True)):
            assert got.T == T
            torch.testing.assert_close(got.eval()(X), want(X), rtol=0, atol=1e-6)
    use_manifest(online, {"format": 1, "models": {TAG: {
        "repo_id": repo, "revision": commits[0],
        "files": zoo.manifest.file_digests(tmp_path / "0", ["model.safetensors", "config.json"])}}})
    # the manifest pins the first commit: the tag, hf-hub: through zoo and through timm all load it,
    # although timm read config.json (T=4) from main
    for got in (zoo.create(TAG, pretrained=True), zoo.create(f"hf-hub:{repo}", pretrained=True),
                timm.create_model(f"hf-hub:{repo}", pretrained=True)):
        assert got.T == 2
        torch.testing.assert_close(got.eval()(X), first(X), rtol=0, atol=1e-6)


def test_features_only_with_hub_weights(published, online):
    model, _, _ = published
    feats = timm.create_model(f"hf-hub:{REPO}", pretrained=True, features_only=True).eval()
    want = model.forward_intermediates(X, intermediates_only=True)
    got = feats(X)
    assert len(got) == len(want) == len(feats.feature_info.channels())
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)


def test_published_card_names_the_real_repo_and_config_has_label_names(published, hub, tmp_path):
    from huggingface_hub import hf_hub_download

    _, folder, _ = published
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["pretrained_cfg"]["label_names"][:2] == ["airplane", "automobile"]
    assert "hf-hub:tdbn-zoo/" in (folder / "README.md").read_text()  # written before the repo was known
    assert cli(["publish", str(folder), "--repo", "someone-else/elsewhere"]) == 0
    card = open(hf_hub_download("someone-else/elsewhere", "README.md", cache_dir=tmp_path)).read()
    assert "timm.create_model('hf-hub:someone-else/elsewhere', pretrained=True)" in card
    assert "hf-hub:tdbn-zoo/" not in card
    import yaml
    assert yaml.safe_load(card.split("---")[1])["datasets"] == ["uoft-cs/cifar10"]  # a Hub dataset id


def test_publish_a_finetune_folder_uploads_the_checkpoint_only_and_loads_back(hub, online, tmp_path):
    """`tdbn-zoo finetune --out OUT` then `tdbn-zoo publish OUT`: the repo holds the checkpoint (weights,
    config, card), not the trainer's files; `zoo.create('hf-hub:...')` gives the folder's logits."""
    import numpy as np
    from huggingface_hub import HfApi

    from eval.data.events import EVENT_DTYPE

    rng = np.random.default_rng(0)
    data = tmp_path / "events"
    for label, cls in enumerate(("left", "right")):
        (data / cls).mkdir(parents=True)
        for i in range(3):
            ev = np.zeros(600, EVENT_DTYPE)
            ev["t"] = np.sort(rng.integers(0, 200_000, 600))
            ev["x"], ev["y"], ev["p"] = rng.integers(0, 17, 600) + 17 * label, rng.integers(0, 34, 600), 1
            np.save(data / cls / f"r{i}.npy", ev)
    out = tmp_path / "ft"
    assert cli(["finetune", "--dataset", str(data), "--model", "sresnet19_narrow_tdbn.fashion_mnist_t2",
                "--no-pretrained", "--sensor-size", "34", "34", "2", "--slice-ms", "50", "--epochs", "1",
                "--batch-size", "4", "--max-steps-per-epoch", "1", "--no-progress", "--out", str(out),
                "--augment", "jitter,drop"]) == 0
    assert "Training augmentation (tonic, seeded per sample): jitter, drop" in (out / "README.md").read_text()
    assert {"last.safetensors", "metrics.jsonl", "results.json"} <= {p.name for p in out.iterdir()}
    repo = "me/ft-events"
    assert cli(["publish", str(out), "--repo", repo]) == 0
    files = set(HfApi().list_repo_files(repo)) - {".gitattributes"}  # (made with the repo, as on the Hub)
    assert sorted(files) == ["README.md", "config.json", "model.safetensors"]
    x = torch.rand(2, 3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2  # [T, N, C, H, W]
    local = zoo.create("sresnet19_narrow_tdbn", pretrained=True, pretrained_cfg_overlay=dict(file=str(out))).eval()
    hubbed = zoo.create(f"hf-hub:{repo}", pretrained=True).eval()
    assert hubbed.pretrained_cfg["label_names"] == ["left", "right"]
    torch.testing.assert_close(hubbed(x), local(x), rtol=0, atol=0)


# ---- nothing leaks: only regular files inside the folder leave it ------------------------------------------

def _checkpoint(tmp_path, name="ckpt"):
    return zoo.save_pretrained(SpikingResNet(**TINY).eval(), tmp_path / name, tag=TAG)


@pytest.mark.parametrize("victim", ["README.md", "config.json"])
def test_publish_never_follows_a_symlink_out_of_the_folder(hub, online, tmp_path, capsys, victim):
    folder = _checkpoint(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    (folder / victim).unlink()
    (folder / victim).symlink_to(secret)
    before, requests = tree_digest(tmp_path), len(hub.store.requests)
    assert_cli_user_error(run_cli(["publish", folder, "--repo", "user/leak"], capsys), victim, "symlink",
                          "outside")
    assert len(hub.store.requests) == requests  # nothing was sent
    assert tree_digest(tmp_path) == before


def test_publish_refuses_a_special_file_and_lists_what_it_uploads(hub, online, tmp_path, capsys):
    import os


    folder = _checkpoint(tmp_path)
    (folder / "README.md").unlink()
    os.mkfifo(folder / "README.md")  # reading it would block forever
    assert_cli_user_error(run_cli(["publish", folder, "--repo", "user/fifo"], capsys), "README.md",
                          "special file")
    good = _checkpoint(tmp_path, "good")
    (good / "extra.bin").write_bytes(b"not part of a checkpoint")
    r = run_cli(["publish", good, "--repo", "user/listed"], capsys)
    assert r.rc == 0, r.err
    listed = r.out.splitlines()[0]
    assert listed.startswith("uploading 3 files") and "model.safetensors (" in listed and "extra.bin" not in listed
    uploaded = set(hub.store.repos[("model", "user/listed")].resolve("main").files) - {".gitattributes"}
    assert uploaded == {"model.safetensors", "config.json", "README.md"}
    # a bad repo id is the user's error, said before any request (not "check the network and HF_TOKEN")
    r = run_cli(["publish", good, "--repo", "bad name!!"], capsys)
    assert_cli_user_error(r, "repo id 'bad name!!' is not a Hub repo id")
    assert "network" not in r.err and ("model", "bad name!!") not in hub.store.repos


def test_manifest_ship_never_copies_a_symlink_out_of_the_folder(tmp_path, monkeypatch, capsys, tiny_model):
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv("TDBN_ZOO_WEIGHTS", str(weights))
    folder = zoo.save_pretrained(tiny_model, tmp_path / "ckpt", tag=TAG)
    (tmp_path / "secret.txt").write_text("private")
    (folder / "notes.txt").symlink_to(tmp_path / "secret.txt")
    before = tree_digest(tmp_path)
    assert_cli_user_error(run_cli(["manifest", "add", folder, "--ship"], capsys), "notes.txt", "outside")
    assert tree_digest(tmp_path) == before


# ---- transient server errors: retried inside the deadline, the status named when it gives up ----------------

def test_a_transient_server_error_is_retried_and_loads(published, online, hub):
    model, _, manifest = published
    use_manifest(online, manifest)
    hub.store.fail_next = [500, 503]
    got = zoo.create(TAG, pretrained=True).eval()
    assert hub.store.fail_next == []  # both failures were met, then the retries loaded
    torch.testing.assert_close(got(X), model(X), rtol=0, atol=1e-6)


def test_a_server_that_keeps_failing_is_reported_with_its_status(published, online, hub, monkeypatch, capsys):
    import time


    _, _, manifest = published
    use_manifest(online, manifest)
    monkeypatch.setenv("TDBN_ZOO_HUB_TIMEOUT", "2")
    hub.store.fail_next = [500] * 1000
    try:
        t0 = time.monotonic()
        assert_user_error(lambda: zoo.create(TAG, pretrained=True), REPO, "HTTP 500", "tries")
        assert time.monotonic() - t0 < 2 + 8  # within the deadline plus at most one pause
        assert_cli_user_error(run_cli(["export-nir", TAG, online / "m.nir"], capsys), "HTTP 500")
    finally:
        hub.store.fail_next = []
    assert not (online / "m.nir").exists()
