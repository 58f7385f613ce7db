"""zoo.fileio (atomic writes, safetensors headers) and zoo.naming (arch.tag, suggestions)."""
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zoo.fileio import atomic_path, atomic_write, read_safetensors_metadata
from zoo.manifest import atomic_write as old_home
from zoo.naming import arch_tag, did_you_mean, split_arch_tag


def test_atomic_write_replaces_whole_files_and_keeps_the_old_one_on_failure(tmp_path):
    assert old_home is atomic_write  # the old import path still works
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
        assert read_safetensors_metadata(path) == f.metadata() == meta
    save_file({"w": torch.ones(1)}, str(path))
    assert read_safetensors_metadata(path) == {}
    for bad in (b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{", b"\xff" * 8 + b"{}"):
        path.write_bytes(bad)
        with pytest.raises(ValueError, match="not a safetensors file"):
            read_safetensors_metadata(path)


def test_names():
    assert arch_tag("a", "t") == "a.t" and arch_tag("a") == arch_tag("a", "") == "a"
    assert split_arch_tag(arch_tag("sresnet19_tdbn", "cifar10_t6")) == ("sresnet19_tdbn", "cifar10_t6")
    assert split_arch_tag("sresnet19_tdbn") == ("sresnet19_tdbn", None)
    assert did_you_mean("cifar01", ["cifar10", "mnist"]) == " Did you mean cifar10?"
    assert did_you_mean("zzz", ["cifar10"]) == ""
