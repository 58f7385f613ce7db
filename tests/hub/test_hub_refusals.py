"""The weights manifest and the Hub under attack or failure (security 1, 5 and 6): crafted manifests and tags,
Hub errors mapped to zoo errors, a Hub that never answers, a corrupted cache, publishing without access. The
Hub is the local Hub-protocol server (tests/hub_emulator.py) or a socket that never answers."""
from __future__ import annotations

import json
import socket
import time

import pytest
import torch

import zoo
from tests.support.cli import assert_cli_user_error, assert_user_error, run_cli
from tests.support.hub import HUB_TOKEN
from tests.support.models import make_tiny, tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

TAG = "sresnet19_tdbn.cifar10_t2"
ARCH = "sresnet19_tdbn"
X = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2


# ------------------------------------------------------------------ manifest (security 1 and 6)
def test_ship_with_a_crafted_architecture_deletes_nothing(tmp_path, weights, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    out = tiny_checkpoint(tmp_path, architecture="/../../victim")
    (out / "config.json").write_text(json.dumps({**json.loads((out / "config.json").read_text()),
                                                 "architecture": "/../../victim", "pretrained_cfg": {}}))
    assert_cli_user_error(run_cli(["manifest", "add", out, "--ship"], capsys), "registered arch.tag")
    assert (victim / "keep.txt").read_text() == "precious" and not (weights / "manifest.json").exists()


@pytest.mark.parametrize("tag", ["../victim", "/tmp/victim", "sresnet19_tdbn.nope", "sresnet19_tdbn", ".",
                                 "sresnet19_tdbn.cifar10_t2/../../x"])
def test_ship_refuses_names_that_are_not_registered_tags(tag, tmp_path, weights, capsys):
    out = tiny_checkpoint(tmp_path)
    assert_cli_user_error(run_cli(["manifest", "add", out, "--tag", tag, "--ship"], capsys), "registered arch.tag")
    assert list(weights.iterdir()) == []


def test_ship_refuses_a_destination_that_resolves_outside(tmp_path, weights, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    (weights / TAG).symlink_to(outside)
    assert_cli_user_error(run_cli(["manifest", "add", tiny_checkpoint(tmp_path), "--ship"], capsys), "inside")
    assert (outside / "keep.txt").read_text() == "precious"


def _entry(weights, tmp_path, capsys, **edit):
    assert run_cli(["manifest", "add", tiny_checkpoint(tmp_path), "--ship"], capsys).rc == 0
    man = json.loads((weights / "manifest.json").read_text())
    for k, v in edit.items():
        if v is None:
            del man["models"][TAG][k]
        else:
            man["models"][TAG][k] = v
    (weights / "manifest.json").write_text(json.dumps(man))


MANIFEST_ERRORS = {
    "empty file list": (dict(files={}), ("lists no sha256", "model.safetensors")),
    "no weights digest": (dict(files={"config.json": {"sha256": "0" * 64, "size": 1}}),
                          ("lists no sha256", "model.safetensors")),
    "path escapes": (dict(path="../../etc"), ("path must be", "../../etc")),
    "revision not a commit": (dict(revision="main"), ("40-hex", "main")),
    "malformed sha256": (dict(files={"model.safetensors": {"sha256": "xyz"}, "config.json": {"sha256": "0" * 64}}),
                         ("64-hex", "xyz")),
    "repo id without owner": (dict(repo_id="justname"), ("owner/name", "justname")),
    "entry not an object": (None, ("must be an object",)),
}


@pytest.mark.parametrize("case", list(MANIFEST_ERRORS))
def test_bad_manifest_entry_never_loads_unverified(case, tmp_path, weights, capsys):
    edit, needles = MANIFEST_ERRORS[case]
    if edit is None:
        assert run_cli(["manifest", "add", tiny_checkpoint(tmp_path), "--ship"], capsys).rc == 0
        (weights / "manifest.json").write_text(json.dumps({"format": 1, "models": {TAG: [1]}}))
    else:
        _entry(weights, tmp_path, capsys, **edit)
    assert_user_error(lambda: zoo.create(TAG, pretrained=True), *needles)
    assert_cli_user_error(run_cli(["manifest", "verify"], capsys), *needles)


def test_manifest_add_checks_the_revision(tmp_path, weights, capsys):
    assert_cli_user_error(run_cli(["manifest", "add", tiny_checkpoint(tmp_path), "--revision", "v1"], capsys),
                          "40-hex", "v1")


def test_recording_a_published_copy_keeps_the_shipped_one(tmp_path, weights, capsys):
    out = tiny_checkpoint(tmp_path)
    assert run_cli(["manifest", "add", out, "--ship"], capsys).rc == 0
    assert run_cli(["manifest", "add", out, "--repo", "someone/elsewhere", "--revision", "a" * 40], capsys).rc == 0
    entry = json.loads((weights / "manifest.json").read_text())["models"][TAG]
    assert entry["path"] == TAG and entry["repo_id"] == "someone/elsewhere" and entry["revision"] == "a" * 40
    other = zoo.save_pretrained(make_tiny(v_th=0.7).eval(), tmp_path / "other", tag=TAG)
    assert_cli_user_error(run_cli(["manifest", "add", other, "--revision", "b" * 40], capsys),
                          "would drop the shipped copy", "--ship")
    assert json.loads((weights / "manifest.json").read_text())["models"][TAG] == entry


# ------------------------------------------------------------------ Hub (security 5, error mapping)


@pytest.fixture(scope="module")
def repos(hub, tmp_path_factory):
    """One tiny checkpoint published to a public, a private and a gated repo."""
    from huggingface_hub import HfApi

    model = make_tiny().eval()
    out = zoo.save_pretrained(model, tmp_path_factory.mktemp("ckpt") / TAG, tag=TAG)
    api = HfApi(token=HUB_TOKEN)
    for name in ("user/public", "user/private", "user/gated"):
        api.create_repo(name, exist_ok=True)
        api.upload_folder(repo_id=name, folder_path=str(out))
    hub.store.repos[("model", "user/private")].private = True
    hub.store.repos[("model", "user/gated")].gated = True
    return model, out


HUB_ERRORS = {
    "private repo without a token": ("hf-hub:user/private", dict(HF_TOKEN=None), ("user/private", "private")),
    "gated repo": ("hf-hub:user/gated", {}, ("user/gated", "gated", "accept")),
    "missing repo": ("hf-hub:user/missing", {}, ("user/missing", "does not exist")),
    "unknown revision": ("hf-hub:user/public@v9", {}, ("user/public", "no revision", "v9")),
    "bad timeout setting": ("hf-hub:user/public", dict(TDBN_ZOO_HUB_TIMEOUT="soon"),
                            ("TDBN_ZOO_HUB_TIMEOUT", "positive number", "soon")),
    "zero timeout setting": ("hf-hub:user/public", dict(TDBN_ZOO_HUB_TIMEOUT="0"), ("TDBN_ZOO_HUB_TIMEOUT",)),
}


@pytest.mark.parametrize("case", list(HUB_ERRORS))
def test_hub_failures_are_zoo_errors(case, repos, online, monkeypatch, capsys):
    name, env, needles = HUB_ERRORS[case]
    for k, v in env.items():
        monkeypatch.delenv(k) if v is None else monkeypatch.setenv(k, v)
    assert_user_error(lambda: zoo.create(name, pretrained=True), *needles)
    assert_cli_user_error(run_cli(["export-nir", name, online / "m.nir"], capsys), *needles)


def test_private_repo_with_a_token_loads(repos, online):
    model, _ = repos
    got = zoo.create("hf-hub:user/private", pretrained=True).eval()
    torch.testing.assert_close(got(X), model(X), rtol=0, atol=1e-6)


@pytest.fixture
def silent_server():
    """Accepts TCP connections (the kernel's backlog) and never answers a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    srv.close()


@pytest.fixture
def silent_hub(silent_server, tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "ENDPOINT", silent_server)
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", silent_server + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TDBN_ZOO_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TDBN_ZOO_HUB_TIMEOUT", "1")
    return silent_server


@pytest.mark.parametrize("name", ["hf-hub:user/public", TAG])
def test_a_hub_that_never_answers_costs_the_timeout(name, silent_hub):
    t0 = time.perf_counter()
    assert_user_error(lambda: zoo.create(name, pretrained=True), "did not answer within 1 s",
                      "TDBN_ZOO_HUB_TIMEOUT")
    assert time.perf_counter() - t0 < 8


def test_publish_to_a_hub_that_never_answers_costs_the_timeout(silent_hub, tmp_path, capsys):
    t0 = time.perf_counter()
    assert_cli_user_error(run_cli(["publish", tiny_checkpoint(tmp_path), "--repo", "user/x"], capsys),
                          "did not answer within 1 s")
    assert time.perf_counter() - t0 < 8


def test_an_unreachable_endpoint_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    monkeypatch.setattr(c, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TDBN_ZOO_HUB_TIMEOUT", "1")
    t0 = time.perf_counter()
    assert_user_error(lambda: zoo.create("hf-hub:user/public", pretrained=True), "user/public", "retry")
    assert time.perf_counter() - t0 < 8


def test_corrupted_cache_is_refused_then_fetched_again_on_request(repos, online, capsys):
    model, out = repos
    assert run_cli(["publish", out, "--repo", "user/pinned", "--manifest", online / "weights" / "manifest.json"],
                   capsys).rc == 0
    (online / "weights").mkdir(exist_ok=True)
    man = json.loads((online / "weights" / "manifest.json").read_text())
    assert man["models"][TAG]["repo_id"] == "user/pinned"
    zoo.create(TAG, pretrained=True)  # the manifest's repo and commit, into the cache
    blob = max((online / "hf-cache").rglob("blobs/*"), key=lambda p: p.stat().st_size)  # the weights
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert_user_error(lambda: zoo.create(TAG, pretrained=True), "sha256 mismatch", "force_download=True")
    got = zoo.create(TAG, pretrained=True, force_download=True).eval()
    torch.testing.assert_close(got(X), model(X), rtol=0, atol=1e-6)


def test_publish_to_a_bare_name_records_the_full_repo_id(repos, online, capsys):
    _, out = repos
    mpath = online / "weights" / "manifest.json"
    assert run_cli(["publish", out, "--repo", "justname", "--manifest", mpath], capsys).rc == 0
    assert json.loads(mpath.read_text())["models"][TAG]["repo_id"] == "user/justname"


def test_publish_without_write_access_is_a_clear_error(repos, online, monkeypatch, capsys):
    _, out = repos
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    assert_cli_user_error(run_cli(["publish", out, "--repo", "user/nope"], capsys), "could not publish",
                          "HF_TOKEN")


def test_publish_never_drops_a_shipped_copy(repos, online, capsys):
    _, out = repos
    mpath = online / "weights" / "manifest.json"
    assert run_cli(["manifest", "add", out, "--ship", "--manifest", mpath], capsys).rc == 0
    assert run_cli(["publish", out, "--repo", "user/shipped", "--manifest", mpath], capsys).rc == 0
    entry = json.loads(mpath.read_text())["models"][TAG]
    assert entry["path"] == TAG and entry["repo_id"] == "user/shipped" and len(entry["revision"]) == 40
