"""Outputs never destroy what is there (``zoo.outputs.check_output_path``, the one rule of every command's
outputs): no output is one of the command's inputs, an existing checkpoint, or inside the shipped weights;
``train``/``finetune`` never start a new run over a run or a checkpoint.

Every refused case asserts the one-line error (exit 2) and that nothing on disk changed (a digest of every
file before and after).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.cli import assert_cli_user_error, assert_user_error, run_cli, tree_digest
from zoo.errors import OutputNotWritableError
from zoo.fileio import weights_dir
from zoo.outputs import check_output_path

SHIPPED = "sresnet19_narrow_tdbn.fashion_mnist_t2"
PACKAGE_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"


@pytest.fixture
def ckpt(tmp_path):
    """A copy of a shipped checkpoint folder (model.safetensors, config.json, README.md)."""
    return Path(shutil.copytree(PACKAGE_WEIGHTS / SHIPPED, tmp_path / "ckpt"))


def refused(argv, capsys, *needles, watch=()):
    """Run ``tdbn-zoo *argv``: exit 2, one line naming ``needles``, and no file under ``watch`` changed."""
    before = tree_digest(*watch)
    assert_cli_user_error(run_cli(argv, capsys), *needles)
    assert tree_digest(*watch) == before


# ---- the helper itself --------------------------------------------------------------------------------------

def test_an_output_may_not_be_an_input_or_inside_one(tmp_path, ckpt):
    weights = ckpt / "model.safetensors"
    with pytest.raises(OutputNotWritableError, match="input"):
        check_output_path(weights, inputs=[ckpt])
    (tmp_path / "x.bin").write_text("x")
    with pytest.raises(OutputNotWritableError, match="the command's input"):
        check_output_path(tmp_path / "x.bin", inputs=[tmp_path / "x.bin"])
    link = tmp_path / "link.json"
    link.symlink_to(weights)  # a symlink does not smuggle an output past the rule
    with pytest.raises(OutputNotWritableError, match="input folder"):
        check_output_path(link, inputs=[ckpt])
    with pytest.raises(OutputNotWritableError, match="holds the command's input"):
        check_output_path(tmp_path, inputs=[ckpt / "config.json"], kind="dir")
    # a data root may hold the output (runs/ under ./data is fine), but not be it
    assert check_output_path(tmp_path / "out.json", roots=[tmp_path]) == tmp_path / "out.json"
    with pytest.raises(OutputNotWritableError, match="inside the command's data root"):
        check_output_path(tmp_path / "x.bin", roots=[tmp_path])  # an existing file in a data root may be data
    with pytest.raises(OutputNotWritableError, match="holds the command's input"):
        check_output_path(tmp_path, roots=[tmp_path / "ckpt"], kind="dir")
    assert check_output_path("-") is None and check_output_path(None) is None


def test_existing_checkpoints_are_never_outputs(tmp_path, ckpt):
    bare = tmp_path / "weights.bin"
    shutil.copy(ckpt / "model.safetensors", bare)  # a safetensors header, whatever its name
    with pytest.raises(OutputNotWritableError, match="checkpoint"):
        check_output_path(bare)
    with pytest.raises(OutputNotWritableError, match="checkpoint folder"):
        check_output_path(ckpt / "README.md")  # a file already in a checkpoint folder
    with pytest.raises(OutputNotWritableError, match=r"model\.safetensors, config\.json"):
        check_output_path(ckpt, kind="dir")
    (tmp_path / "notes.txt").write_text("x")  # an ordinary existing file is replaced as before
    assert check_output_path(tmp_path / "notes.txt") == tmp_path / "notes.txt"
    assert check_output_path(ckpt / "report.json") == ckpt / "report.json"  # a new file beside a checkpoint


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "last.safetensors", "metrics.jsonl",
                                  "results.json", "other.safetensors"])
def test_a_new_run_refuses_any_run_or_checkpoint_file(tmp_path, name):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / name).write_text("{}")
    with pytest.raises(OutputNotWritableError, match=f"already holds a run.*{name}"):
        check_output_path(tmp_path / "run", kind="run")
    if name != "last.safetensors":  # --resume without the run's last.safetensors has nothing to resume
        with pytest.raises(OutputNotWritableError, match=name):
            check_output_path(tmp_path / "run", kind="run", resume=True)
    if name == "last.safetensors":
        assert check_output_path(tmp_path / "run", kind="run", resume=True) == tmp_path / "run"


def test_the_shipped_weights_are_written_only_by_the_commands_that_ship(tmp_path, monkeypatch):
    monkeypatch.setenv("TDBN_ZOO_WEIGHTS", str(tmp_path / "w"))
    assert weights_dir() == tmp_path / "w"
    for folder in (tmp_path / "w", PACKAGE_WEIGHTS):  # both the configured and the package's own
        with pytest.raises(OutputNotWritableError, match="shipped weights"):
            check_output_path(folder / "x" / "run", kind="run")
        assert check_output_path(folder / "manifest.json", allow_weights=True) == folder / "manifest.json"


# ---- every command with an output ---------------------------------------------------------------------------

def test_export_nir_never_replaces_its_input(ckpt, capsys):
    refused(["export-nir", ckpt, ckpt / "model.safetensors"], capsys, "model.safetensors", "input",
            watch=[ckpt])


def test_eval_json_and_plots_never_replace_the_checkpoint(ckpt, tmp_path, capsys):
    refused(["eval", ckpt, "--data", "fashion-mnist:/nonexistent", "--json", ckpt / "model.safetensors"], capsys,
            "--json", "input", watch=[ckpt])
    refused(["eval", ckpt, "--data", "fashion-mnist:/nonexistent", "--plots", ckpt], capsys, "--plots",
            watch=[ckpt])
    other = Path(shutil.copytree(ckpt, tmp_path / "other"))
    refused(["eval", SHIPPED, "--data", "fashion-mnist:/nonexistent", "--json", other / "model.safetensors"],
            capsys, "--json", "checkpoint", watch=[other])


def test_train_refuses_a_checkpoint_folder_and_the_weights(ckpt, tmp_path, monkeypatch, capsys):
    base = ["train", "--preset", SHIPPED, "--data-dir", tmp_path / "no-data", "--epochs", "1"]
    refused([*base, "--out", ckpt], capsys, "--out", "already holds a run", "model.safetensors", watch=[ckpt])
    refused([*base, "--out", ckpt, "--resume"], capsys, "--out", "model.safetensors", watch=[ckpt])
    weights = Path(shutil.copytree(PACKAGE_WEIGHTS, tmp_path / "weights"))
    monkeypatch.setenv("TDBN_ZOO_WEIGHTS", str(weights))
    refused([*base, "--out", weights / "new-run"], capsys, "--out", "shipped weights", watch=[weights])


def test_finetune_refuses_a_checkpoint_folder(ckpt, tmp_path, capsys):
    refused(["finetune", "--dataset", tmp_path / "no-data", "--model", SHIPPED, "--out", ckpt], capsys,
            "--out", "already holds a run", watch=[ckpt])


def test_bench_json_never_replaces_a_checkpoint(ckpt, capsys):
    refused(["bench", "--json", ckpt / "model.safetensors", "--reps", "1"], capsys, "--json", "checkpoint",
            watch=[ckpt])


def test_make_events_never_replaces_a_checkpoint_or_its_data(ckpt, tmp_path, capsys):
    refused(["make-events", "--data", "mnist:/nonexistent", "--out", ckpt], capsys, "--out", "checkpoint",
            watch=[ckpt])
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    (data / "mnist" / "notes").write_text("x")
    refused(["make-events", "--data", f"mnist:{data / 'mnist'}", "--out", data], capsys, "--out",
            "holds the command's input", watch=[data])


def test_publish_and_manifest_never_write_into_the_folder_they_read(ckpt, tmp_path, capsys):
    refused(["publish", ckpt, "--repo", "user/x", "--manifest", ckpt / "config.json"], capsys, "--manifest",
            "input", watch=[ckpt])
    refused(["manifest", "add", ckpt, "--manifest", ckpt / "manifest.json"], capsys, "--manifest", "input",
            watch=[ckpt])


def test_reproduce_port_and_outputs(ckpt, tmp_path, capsys):
    refused(["reproduce", SHIPPED, "--out", tmp_path / "r", "--master-port", "70000", "--dry-run"], capsys,
            "--master-port", "65535", watch=[tmp_path])
    refused(["reproduce", SHIPPED, "--out", ckpt, "--smoke"], capsys, "--out", "checkpoint", watch=[ckpt])


def test_ship_never_writes_into_its_run(tmp_path):
    from eval.release.ship import ship
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.safetensors").write_bytes(b"")
    before = tree_digest(tmp_path)
    assert_user_error(lambda: ship(run, None, out_weights=run / "weights"), "--weights", "input folder")
    assert tree_digest(tmp_path) == before


def _image_folder(root: Path) -> Path:
    """``root/train/<class>/`` and ``root/test/<class>/`` of two tiny PNGs each (the folder:PATH layout)."""
    from PIL import Image

    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("L", (28, 28), 60 * i + (100 if c == "b" else 0)).save(root / split / c / f"{i}.png")
    return root


def test_eval_never_writes_over_its_data(tmp_path, capsys):
    """folder:PATH is the data itself: no report inside it; a NAME:ROOT may hold a report but not lose a file."""
    imgs = _image_folder(tmp_path / "imgs")
    refused(["eval", SHIPPED, "--data", f"folder:{imgs}", "--json", imgs / "test" / "a" / "0.png"], capsys,
            "--json", "input folder", watch=[imgs])
    refused(["eval", SHIPPED, "--data", f"folder:{imgs}", "--plots", imgs / "test" / "plots"], capsys,
            "--plots", "input folder", watch=[imgs])
    fm = tmp_path / "fm"
    fm.mkdir()
    (fm / "t10k-labels-idx1-ubyte.gz").write_bytes(b"labels")
    refused(["eval", SHIPPED, "--data", f"fashion-mnist:{fm}", "--json", fm / "t10k-labels-idx1-ubyte.gz"],
            capsys, "--json", "data root", watch=[fm])


def test_train_and_ship_never_write_into_the_image_folder(tmp_path, capsys):
    imgs = _image_folder(tmp_path / "imgs")
    refused(["train", "--preset", SHIPPED, "--data", f"folder:{imgs}", "--out", imgs / "run"], capsys,
            "--out", "input folder", watch=[imgs])
    from eval.release.ship import check_destination
    from tests.support.cli import assert_user_error
    assert_user_error(lambda: check_destination(imgs / "test", None, False, tmp_path / "run",
                                                data=f"folder:{imgs}"), "--out", "input folder")
