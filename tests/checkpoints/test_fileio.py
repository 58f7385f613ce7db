"""zoo.fileio (atomic writes, safetensors headers) and zoo.naming (arch.tag, suggestions)."""
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zoo.checkpoints import read_header
from zoo.errors import CheckpointError
from zoo.fileio import atomic_path, atomic_write
from zoo.naming import STEM, arch_tag, did_you_mean, split_arch_tag, stage_of


def test_atomic_write_replaces_whole_files_and_keeps_the_old_one_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write(target, "first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]  # no temporary left behind


def test_safetensors_metadata_matches_the_safetensors_library(tmp_path):
    path = tmp_path / "m.safetensors"
    meta = {"architecture": "\"sresnet19_tdbn\"", "note": "ünïcode"}
    save_file({"w": torch.ones(2, 3)}, str(path), metadata=meta)
    with safe_open(str(path), framework="pt") as f:
        assert read_header(path) == ({"w": ("F32", (2, 3))}, f.metadata()) and f.metadata() == meta
    save_file({"w": torch.ones(1)}, str(path))
    assert read_header(path)[1] == {}
    # empty, a header longer than the file, a 2**64-1-byte header: refused before the header is read
    for bad in (b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{", b"\xff" * 8 + b"{}", b"\x02" + b"\x00" * 7 + b"{x"):
        path.write_bytes(bad)
        with pytest.raises(CheckpointError, match="not a valid safetensors file"):
            read_header(path)


def test_names():
    assert arch_tag("a", "t") == "a.t" and arch_tag("a") == arch_tag("a", "") == "a"
    assert split_arch_tag(arch_tag("sresnet19_tdbn", "cifar10_t6")) == ("sresnet19_tdbn", "cifar10_t6")
    assert split_arch_tag("sresnet19_tdbn") == ("sresnet19_tdbn", None)
    assert did_you_mean("cifar01", ["cifar10", "mnist"]) == " Did you mean cifar10?"
    assert did_you_mean("zzz", ["cifar10"]) == ""
    # tags rendered as arch.tag; the suggestions are difflib's closest, the closest first
    assert did_you_mean("cifar10_t9", ["mnist_t2", "cifar10_t6"], show=lambda t: arch_tag("a", t)) == \
        " Did you mean a.cifar10_t6?"


@pytest.mark.parametrize("arch", ["sresnet19_narrow_tdbn", "sresnet50_tdbn"])
def test_stage_names_follow_the_models_feature_info(arch):
    """STEM and stage_of agree with what each model declares: its top-level modules up to the stem's
    feature_info module are the stem, and every later feature_info module is a stage of its own."""
    import zoo

    with torch.device("meta"):
        model = zoo.create(arch, T=1)
    children = [n for n, _ in model.named_children()]
    modules = [f["module"] for f in model.feature_info]
    assert tuple(children[:children.index(modules[0]) + 1]) == STEM
    assert [stage_of(f"{m}.0.conv1.weight") for m in modules[1:]] == modules[1:]
    heads = children[children.index(modules[-1]) + 1:]
    assert all(stage_of(f"{h}.weight") == h for h in heads)
    parameterless = {"global_pool", "head_act"}
    assert {stage_of(n) for n, _ in model.named_parameters()} == {"stem", *modules[1:], *heads} - parameterless


def test_registered_names_suggest_the_closest_tag():
    from zoo.manifest import check_name
    from zoo.tags import TAGS

    assert check_name("sresnet19_narrow_tdbn.mnist_t2", TAGS) == "sresnet19_narrow_tdbn.mnist_t2"
    with pytest.raises(CheckpointError, match=r"weights/\. Did you mean sresnet19_narrow_tdbn\.mnist_t2[,?]"):
        check_name("sresnet19_narrow_tdbn.mnist_t3", TAGS)
