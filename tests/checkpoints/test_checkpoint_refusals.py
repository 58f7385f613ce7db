"""Bad checkpoint files and configs (no Hub): each a clear, typed error naming the file and what was expected,
or the correct result of loading checked here."""
from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import save_file
from timm.models import adapt_input_conv

import zoo
from tests.support.cli import assert_cli_user_error, assert_user_error, run_cli
from tests.support.models import TINY as TINY_BASE, make_tiny, tiny_checkpoint
from zoo.checkpoints import weights_metadata
from zoo.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

TAG = "sresnet19_tdbn.cifar10_t2"
ARCH = "sresnet19_tdbn"
TINY = dict(TINY_BASE, num_classes=10, in_chans=3)  # the one tiny architecture, its defaults written out


def state(model) -> dict:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def bare(path, tensors: dict, args: dict | None = TINY, arch: str | None = ARCH):
    """A bare model.safetensors; ``args=None`` leaves model_args out of its header."""
    meta = weights_metadata(arch, args) if args is not None else ({"architecture": arch} if arch else None)
    save_file(tensors, str(path), metadata=meta)
    return path


# ------------------------------------------------------------------ checkpoint files (no Hub)
def _with(key, value):
    def make(tmp_path):
        sd = state(make_tiny())
        sd[key] = value(sd[key])
        return bare(tmp_path / "model.safetensors", sd)
    return make


def _drop(key):
    def make(tmp_path):
        sd = state(make_tiny())
        del sd[key]
        return bare(tmp_path / "model.safetensors", sd)
    return make


def _extra(tmp_path):
    sd = state(make_tiny())
    sd["layer9.0.conv1.weight"] = torch.zeros(3, 3)
    return bare(tmp_path / "model.safetensors", sd)


def _bad_header(field, value):
    def make(tmp_path):
        meta = weights_metadata(ARCH, TINY)
        meta[field] = value
        save_file(state(make_tiny()), str(tmp_path / "model.safetensors"), metadata=meta)
        return tmp_path / "model.safetensors"
    return make


def _corrupt_folder(tmp_path, edit):
    """A saved checkpoint folder whose model.safetensors is replaced by ``edit(its bytes)``."""
    out = tiny_checkpoint(tmp_path)
    weights_file = out / "model.safetensors"
    weights_file.write_bytes(edit(weights_file.read_bytes()))
    return out


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
    "header without architecture": (lambda p: bare(p / "model.safetensors", state(make_tiny()), args=None, arch=None),
                                    ("no architecture", "--arch")),
    "pickle file": (lambda p: (p / "model.bin").write_bytes(b"\x80\x04K\x01.") and p / "model.bin",
                    ("safetensors only",)),
    "truncated file": (lambda p: (p / "t.safetensors").write_bytes(
        (bare(p / "m.safetensors", state(make_tiny()))).read_bytes()[:300]) and p / "t.safetensors",
                       ("not a valid safetensors file",)),
    "garbage file": (lambda p: (p / "g.safetensors").write_bytes(b"\x00" * 64) and p / "g.safetensors",
                     ("not a valid safetensors file",)),
    "truncated in a folder": (lambda p: _corrupt_folder(p, lambda b: b[: len(b) // 2]),
                              ("not a valid safetensors file",)),
    "garbage in a folder": (lambda p: _corrupt_folder(p, lambda b: b"\x00" * 64), ("not a valid safetensors file",)),
    "missing file": (lambda p: p / "nowhere" / "model.safetensors", ("not found",)),
    "folder without checkpoint": (lambda p: p, ("not a checkpoint folder", "config.json")),
}


@pytest.mark.parametrize("case", list(FILE_ERRORS))
def test_bad_checkpoint_file_is_a_clear_error(case, tmp_path):
    make, needles = FILE_ERRORS[case]
    path = make(tmp_path)
    assert_user_error(lambda: zoo.create(str(path), pretrained=True), *needles)


@pytest.mark.parametrize("case", ["pickle file", "truncated in a folder", "garbage in a folder"])
def test_bad_checkpoint_file_through_the_tags_file_overlay_is_a_clear_error(case, tmp_path):
    """The same files given as a tag's ``pretrained_cfg_overlay=dict(file=...)`` (timm's route) are refused alike."""
    make, needles = FILE_ERRORS[case]
    path = make(tmp_path)
    (needle,) = needles
    with pytest.raises(CheckpointError, match=needle):
        zoo.create(TAG, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


@pytest.mark.parametrize("case", ["nan weight", "int weight", "block of another width"])
def test_bad_checkpoint_file_on_the_cli(case, tmp_path, capsys):
    make, needles = FILE_ERRORS[case]
    path = make(tmp_path)
    assert_cli_user_error(run_cli(["eval", path, "--data", "fashion-mnist-subset", "--max-images", "2"], capsys),
                          *needles)


def test_classifier_of_another_size_is_an_error_unless_asked(tmp_path):
    """timm re-initialises a head of another size only when num_classes is given; implicit is an error."""
    src = make_tiny(num_classes=11).eval()
    path = bare(tmp_path / "model.safetensors", state(src), args=None)  # no model_args: the tag says 10
    layout = {k: v for k, v in TINY.items() if k not in ("num_classes", "T")}
    assert_user_error(lambda: zoo.create(str(path), pretrained=True, **layout), r"fc\.(weight|bias)", "11 classes",
                      "num_classes=10")
    got = zoo.create(str(path), pretrained=True, num_classes=5, **layout)
    assert got.fc.weight.shape == (5, 16)
    for k, v in src.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(got.state_dict()[k], v), k


def test_first_conv_of_another_width_is_an_error_unless_asked(tmp_path, tiny_model):
    layout = {k: v for k, v in TINY.items() if k not in ("in_chans", "T")}
    path = bare(tmp_path / "model.safetensors", state(make_tiny(in_chans=2)), args=None)  # the tag says 3 channels
    assert_user_error(lambda: zoo.create(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                         **layout), "conv1.weight", "2 input channels", "in_chans=3")
    out = tiny_checkpoint(tmp_path, tiny_model)
    fused_w = zoo.create(str(out), pretrained=True).conv1.weight
    got = zoo.create(str(out), pretrained=True, in_chans=2)  # explicit: timm's adapt_input_conv
    torch.testing.assert_close(got.conv1.weight, adapt_input_conv(2, fused_w, base_chans=3), rtol=0, atol=0)


def test_config_arguments_are_checked_against_the_header_before_building(tmp_path):
    """security 2: channels of 65536 would allocate ~150 GB; the meta-device check refuses it first."""
    out = tiny_checkpoint(tmp_path, model_args_update=dict(channels=[65536, 65536], stem_width=65536))
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
    out = tiny_checkpoint(tmp_path)
    edit(out)
    assert_user_error(lambda: zoo.create(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(out))),
                      *needles)


def test_name_errors(tmp_path):
    assert_user_error(lambda: zoo.create("local-dir:" + str(tmp_path / "none"), pretrained=True), "no such folder")
    assert_user_error(lambda: zoo.create("hf-hub:../../etc", pretrained=True), "owner/name")
    assert_user_error(lambda: zoo.create("sresnet19_tdbm"), "Did you mean sresnet19_tdbn")
    assert_user_error(lambda: zoo.create(3), "string")
    out = tiny_checkpoint(tmp_path)
    assert_user_error(lambda: zoo.create(str(out / "model.safetensors"), pretrained=True, arch="sresnet17_tdbn"),
                      "checkpoint of sresnet19_tdbn, not sresnet17_tdbn")
