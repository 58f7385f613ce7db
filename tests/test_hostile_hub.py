"""Hostile and broken checkpoints, manifests and Hubs (issue 13, security 1, 2, 5, 6 and the silent wrong
results of loading): each case asserts its outcome class (tests/hostile.py): a one-line user error naming what
was expected and what came (exit 2 on the CLI), or the correct result checked against an independent
expectation. The Hub is the local Hub-protocol server (tests/hub_emulator.py) or a socket that never answers."""
from __future__ import annotations

import json
import socket
import time

import pytest
import torch
from safetensors.torch import save_file
from timm.models import adapt_input_conv

import zoo
from hostile import assert_cli_user_error, assert_user_error, run_cli
from test_hub import hub, online  # noqa: F401  (the local Hub-protocol server, a private cache and weights/)
from zoo import CheckpointError, PretrainedUnavailableError, SpikingResNet
from zoo.checkpoints import weights_metadata

pytestmark = pytest.mark.usefixtures("one_thread")

TAG = "sresnet19_tdbn.cifar10_t2"
ARCH = "sresnet19_tdbn"
TOKEN = "hf_emulator_write_token"
TINY = dict(layers=(1, 1), channels=(8, 16), strides=(1, 2), stem_width=8, head_hidden=16, T=2, num_classes=10,
            in_chans=3)
X = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2


def tiny(**kw) -> SpikingResNet:
    return SpikingResNet(**{**TINY, **kw}).eval()


def state(model) -> dict:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def bare(path, tensors: dict, args: dict | None = TINY, arch: str | None = ARCH):
    """A bare model.safetensors; ``args=None`` leaves model_args out of its header."""
    meta = weights_metadata(arch, args) if args is not None else ({"architecture": arch} if arch else None)
    save_file(tensors, str(path), metadata=meta)
    return path


def folder(tmp_path, model=None, tag=TAG, **config_edits):
    out = zoo.save_pretrained(model or tiny(), tmp_path / "ckpt", tag=tag)
    if config_edits:
        cfg = json.loads((out / "config.json").read_text())
        for k, v in config_edits.items():
            if k == "model_args_update":
                cfg["model_args"].update(v)
            else:
                cfg[k] = v
        (out / "config.json").write_text(json.dumps(cfg))
    return out


# ------------------------------------------------------------------ checkpoint files (no Hub)
def _with(key, value):
    def make(tmp_path):
        sd = state(tiny())
        sd[key] = value(sd[key])
        return bare(tmp_path / "model.safetensors", sd)
    return make


def _drop(key):
    def make(tmp_path):
        sd = state(tiny())
        del sd[key]
        return bare(tmp_path / "model.safetensors", sd)
    return make


def _extra(tmp_path):
    sd = state(tiny())
    sd["layer9.0.conv1.weight"] = torch.zeros(3, 3)
    return bare(tmp_path / "model.safetensors", sd)


def _bad_header(field, value):
    def make(tmp_path):
        meta = weights_metadata(ARCH, TINY)
        meta[field] = value
        save_file(state(tiny()), str(tmp_path / "model.safetensors"), metadata=meta)
        return tmp_path / "model.safetensors"
    return make


def _nan(t):
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


def _inf(t):
    t = t.clone()
    t.view(-1)[-1] = float("inf")
    return t


FILE_ERRORS = {
    "nan weight": (_with("fc.weight", _nan), ("fc.weight", "NaN")),
    "inf weight": (_with("layer1.0.conv1.weight", _inf), ("layer1.0.conv1.weight", "Inf")),
    "int weight": (_with("conv1.weight", lambda t: t.to(torch.int32)), ("conv1.weight", "I32", "floating point")),
    "bool weight": (_with("head_fc.weight", lambda t: t > 0), ("head_fc.weight", "BOOL", "floating point")),
    "int8 bias": (_with("fc.bias", lambda t: t.to(torch.int8)), ("fc.bias", "I8")),
    "block of another width": (_with("layer2.0.conv1.weight", lambda t: torch.zeros(32, *t.shape[1:])),
                               ("layer2.0.conv1.weight", r"\[32, 8, 3, 3\]", r"\[16, 8, 3, 3\]")),
    "missing tensor": (_drop("layer1.0.conv2.weight"), ("layer1.0.conv2.weight", "missing")),
    "unexpected tensor": (_extra, ("layer9.0.conv1.weight", "unexpected")),
    "header model_args not JSON": (_bad_header("model_args", "{nope"), ("model_args", "not JSON")),
    "header model_args a list": (_bad_header("model_args", "[1, 2]"), ("model_args", "object", "list")),
    "header unknown architecture": (_bad_header("architecture", "sresnet99_tdbn"), ("sresnet99_tdbn", "expected")),
    "header architecture traversal": (_bad_header("architecture", "../../etc"), ("../../etc", "expected")),
    "header without architecture": (lambda p: bare(p / "model.safetensors", state(tiny()), args=None, arch=None),
                                    ("no architecture", "--arch")),
    "pickle file": (lambda p: (p / "model.bin").write_bytes(b"\x80\x04K\x01.") and p / "model.bin",
                    ("safetensors only",)),
    "truncated file": (lambda p: (p / "t.safetensors").write_bytes(
        (bare(p / "m.safetensors", state(tiny()))).read_bytes()[:300]) and p / "t.safetensors",
                       ("not a valid safetensors file",)),
    "missing file": (lambda p: p / "nowhere" / "model.safetensors", ("not found",)),
    "folder without checkpoint": (lambda p: p, ("not a checkpoint folder", "config.json")),
}


@pytest.mark.parametrize("case", list(FILE_ERRORS))
def test_bad_checkpoint_file_is_a_clear_error(case, tmp_path):
    make, needles = FILE_ERRORS[case]
    path = make(tmp_path)
    assert_user_error(lambda: zoo.create(str(path), pretrained=True), *needles)


@pytest.mark.parametrize("case", ["nan weight", "int weight", "block of another width"])
def test_bad_checkpoint_file_on_the_cli(case, tmp_path, capsys):
    make, needles = FILE_ERRORS[case]
    path = make(tmp_path)
    assert_cli_user_error(run_cli(["eval", path, "--data", "fashion-mnist-subset", "--max-images", "2"], capsys),
                          *needles)


def test_classifier_of_another_size_is_an_error_unless_asked(tmp_path):
    """timm re-initialises a head of another size only when num_classes is given; implicit is an error."""
    src = tiny(num_classes=11)
    path = bare(tmp_path / "model.safetensors", state(src), args=None)  # no model_args: the tag says 10
    layout = {k: v for k, v in TINY.items() if k not in ("num_classes", "T")}
    assert_user_error(lambda: zoo.create(str(path), pretrained=True, **layout), r"fc\.(weight|bias)", "11 classes",
                      "num_classes=10")
    got = zoo.create(str(path), pretrained=True, num_classes=5, **layout)
    assert got.fc.weight.shape == (5, 16)
    for k, v in src.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(got.state_dict()[k], v), k


def test_first_conv_of_another_width_is_an_error_unless_asked(tmp_path):
    layout = {k: v for k, v in TINY.items() if k not in ("in_chans", "T")}
    path = bare(tmp_path / "model.safetensors", state(tiny(in_chans=2)), args=None)  # the tag says 3 channels
    assert_user_error(lambda: zoo.create(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                         **layout), "conv1.weight", "2 input channels", "in_chans=3")
    out = folder(tmp_path, tiny())
    fused_w = zoo.create(str(out), pretrained=True).conv1.weight
    got = zoo.create(str(out), pretrained=True, in_chans=2)  # explicit: timm's adapt_input_conv
    torch.testing.assert_close(got.conv1.weight, adapt_input_conv(2, fused_w, base_chans=3), rtol=0, atol=0)


def test_config_arguments_are_checked_against_the_header_before_building(tmp_path):
    """security 2: channels of 65536 would allocate ~150 GB; the meta-device check refuses it first."""
    out = folder(tmp_path, model_args_update=dict(channels=[65536, 65536], stem_width=65536))
    t0 = time.perf_counter()
    assert_user_error(lambda: zoo.create(str(out), pretrained=True), r"conv1\.(weight|bias)", "65536", "do not match")
    assert time.perf_counter() - t0 < 20


CONFIG_ERRORS = {
    "config not JSON": (lambda out: (out / "config.json").write_text("{oops"), ("config.json", "not valid JSON")),
    "config without architecture": (lambda out: (out / "config.json").write_text('{"num_classes": 10}'),
                                    ("architecture",)),
    "config model_args a list": (lambda out: (out / "config.json").write_text(
        json.dumps({"architecture": ARCH, "model_args": [1]})), ("model_args", "object", "list")),
    "config of another architecture": (lambda out: (out / "config.json").write_text(json.dumps(
        {**json.loads((out / "config.json").read_text()), "architecture": "sresnet17_tdbn"})),
        ("sresnet17_tdbn", "not sresnet19_tdbn")),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_bad_config_is_a_clear_error(case, tmp_path):
    edit, needles = CONFIG_ERRORS[case]
    out = folder(tmp_path)
    edit(out)
    assert_user_error(lambda: zoo.create(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(out))),
                      *needles)


def test_name_errors(tmp_path):
    assert_user_error(lambda: zoo.create("local-dir:" + str(tmp_path / "none"), pretrained=True), "no such folder")
    assert_user_error(lambda: zoo.create("hf-hub:../../etc", pretrained=True), "owner/name")
    assert_user_error(lambda: zoo.create("sresnet19_tdbm"), "Did you mean sresnet19_tdbn")
    assert_user_error(lambda: zoo.create(3), "string")
    out = folder(tmp_path)
    assert_user_error(lambda: zoo.create(str(out / "model.safetensors"), pretrained=True, arch="sresnet17_tdbn"),
                      "checkpoint of sresnet19_tdbn, not sresnet17_tdbn")


# ------------------------------------------------------------------ manifest (security 1 and 6)
def test_ship_with_a_crafted_architecture_deletes_nothing(tmp_path, weights, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    out = folder(tmp_path, architecture="/../../victim")
    (out / "config.json").write_text(json.dumps({**json.loads((out / "config.json").read_text()),
                                                 "architecture": "/../../victim", "pretrained_cfg": {}}))
    assert_cli_user_error(run_cli(["manifest", "add", out, "--ship"], capsys), "registered arch.tag")
    assert (victim / "keep.txt").read_text() == "precious" and not (weights / "manifest.json").exists()


@pytest.mark.parametrize("tag", ["../victim", "/tmp/victim", "sresnet19_tdbn.nope", "sresnet19_tdbn", ".",
                                 "sresnet19_tdbn.cifar10_t2/../../x"])
def test_ship_refuses_names_that_are_not_registered_tags(tag, tmp_path, weights, capsys):
    out = folder(tmp_path)
    assert_cli_user_error(run_cli(["manifest", "add", out, "--tag", tag, "--ship"], capsys), "registered arch.tag")
    assert list(weights.iterdir()) == []


def test_ship_refuses_a_destination_that_resolves_outside(tmp_path, weights, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    (weights / TAG).symlink_to(outside)
    assert_cli_user_error(run_cli(["manifest", "add", folder(tmp_path), "--ship"], capsys), "inside")
    assert (outside / "keep.txt").read_text() == "precious"


def _entry(weights, tmp_path, capsys, **edit):
    assert run_cli(["manifest", "add", folder(tmp_path), "--ship"], capsys).rc == 0
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
        assert run_cli(["manifest", "add", folder(tmp_path), "--ship"], capsys).rc == 0
        (weights / "manifest.json").write_text(json.dumps({"format": 1, "models": {TAG: [1]}}))
    else:
        _entry(weights, tmp_path, capsys, **edit)
    assert_user_error(lambda: zoo.create(TAG, pretrained=True), *needles)
    assert_cli_user_error(run_cli(["manifest", "verify"], capsys), *needles)


def test_manifest_add_checks_the_revision(tmp_path, weights, capsys):
    assert_cli_user_error(run_cli(["manifest", "add", folder(tmp_path), "--revision", "v1"], capsys),
                          "40-hex", "v1")


def test_recording_a_published_copy_keeps_the_shipped_one(tmp_path, weights, capsys):
    out = folder(tmp_path)
    assert run_cli(["manifest", "add", out, "--ship"], capsys).rc == 0
    assert run_cli(["manifest", "add", out, "--repo", "someone/elsewhere", "--revision", "a" * 40], capsys).rc == 0
    entry = json.loads((weights / "manifest.json").read_text())["models"][TAG]
    assert entry["path"] == TAG and entry["repo_id"] == "someone/elsewhere" and entry["revision"] == "a" * 40
    other = zoo.save_pretrained(tiny(v_th=0.7), tmp_path / "other", tag=TAG)
    assert_cli_user_error(run_cli(["manifest", "add", other, "--revision", "b" * 40], capsys),
                          "would drop the shipped copy", "--ship")
    assert json.loads((weights / "manifest.json").read_text())["models"][TAG] == entry


# ------------------------------------------------------------------ Hub (security 5, error mapping)


@pytest.fixture(scope="module")
def repos(hub, tmp_path_factory):
    """One tiny checkpoint published to a public, a private and a gated repo."""
    from huggingface_hub import HfApi

    model = tiny()
    out = zoo.save_pretrained(model, tmp_path_factory.mktemp("ckpt") / TAG, tag=TAG)
    api = HfApi(token=TOKEN)
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
    assert_cli_user_error(run_cli(["publish", folder(tmp_path), "--repo", "user/x"], capsys),
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


def test_train_on_a_repacked_cifar_names_a_flag_that_exists(tmp_path, capsys):
    """The MD5 error's advice, --no-verify, is a train flag: with it the same folder builds its datasets."""
    from eval.train.datasets import build_datasets
    from eval.train.presets import get_preset
    from test_data import write_cifar10

    write_cifar10(tmp_path)
    res = run_cli(["train", "--preset", "sresnet19_tdbn.cifar10_t2", "--data-dir", tmp_path, "--out",
                   tmp_path / "run"], capsys)
    assert_cli_user_error(res, "MD5", "--no-verify")
    from eval.cli import build_parser
    args = build_parser()[0].parse_args(["train", "--preset", "sresnet19_tdbn.cifar10_t2", "--out", "o", "--no-verify"])
    assert args.no_verify
    train, test = build_datasets(get_preset("sresnet19_tdbn.cifar10_t2"), str(tmp_path), 0, verify=not args.no_verify)
    assert len(train) == 15 and len(test) == 3
