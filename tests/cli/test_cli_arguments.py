"""The ``tdbn-zoo`` commands' arguments and outputs (eval, bench, export-nir, demo, train, finetune, make-events,
manifest, publish): every bad number or path refused at parse time, before any model or data is loaded, in one
line (exit 2, no traceback); outputs checked writable before the work starts. Unwritable outputs are made
without chmod (tests run as root, which ignores permission bits): a path under a regular file, or under
``/proc``."""
from __future__ import annotations

import json

import pytest
import torch

import zoo
from tests.support.cli import assert_cli_user_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = "sresnet19_narrow_tdbn.fashion_mnist_t2"  # a shipped checkpoint (weights/), T=2, 1x28x28, 10 classes

# ---- CLI arguments: refused at parse time, before any model or data is loaded ------------------------------------

def _unwritable(tmp_path, name):
    """A path no one can write, root included: under a regular file."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file\n")
    return blocker / name


BAD_ARGS = [
    # (argv after the command, needles)
    (["eval", SHIPPED, "--data", "mnist", "-T", "0"], ("-T", "integer >= 1", "got '0'")),
    (["eval", SHIPPED, "--data", "mnist", "-T", "2", "-1"], ("-T", "got '-1'")),
    (["eval", SHIPPED, "--data", "mnist", "-T", "2.5"], ("-T", "got '2.5'")),
    (["eval", SHIPPED, "--data", "mnist", "--batch-size", "0"], ("--batch-size", "integer >= 1", "got '0'")),
    (["eval", SHIPPED, "--data", "mnist", "--batch-size", "many"], ("--batch-size", "got 'many'")),
    (["eval", SHIPPED, "--data", "mnist", "--max-images", "-3"], ("--max-images", "got '-3'")),
    (["eval", SHIPPED, "--data", "mnist", "--input-size", "0"], ("--input-size", "got '0'")),
    (["eval", SHIPPED, "--data", "mnist", "--time-window-ms", "nan"], ("--time-window-ms", "finite number > 0")),
    (["eval", SHIPPED, "--data", "mnist", "--time-window-ms", "-5"], ("--time-window-ms", "got '-5'")),
    (["eval", SHIPPED, "--data", "mnist", "--workers", "-1"], ("--workers", r"integer in \[0, \d+\]")),
    (["eval", SHIPPED, "--data", "mnist", "--calibrate-batches", "0"], ("--calibrate-batches", "integer >= 1")),
    (["eval", SHIPPED, "--data", "mnist", "--e-ac", "nan"], ("--e-ac", "finite number >= 0", "got 'nan'")),
    (["eval", SHIPPED, "--data", "mnist", "--e-mac", "-4.6"], ("--e-mac", "got '-4.6'")),
    (["eval", SHIPPED, "--data", "mnist", "--e-mac", "inf"], ("--e-mac", "got 'inf'")),
    (["eval", SHIPPED, "--data", "mnist", "--speed-batches", "-1"], ("--speed-batches", "integer >= 0")),
    (["eval", SHIPPED, "--data", "mnist", "--device", "toaster"], ("--device", "cpu, cuda", "got 'toaster'")),
    (["eval", SHIPPED, "--data", "mnist", "--device", "cuda:99"], ("--device", "cuda:99")),
    (["bench", "--width", "0"], ("--width", "finite number > 0", "got '0'")),
    (["bench", "--width", "nan"], ("--width", "got 'nan'")),
    (["bench", "--width", "inf"], ("--width", "got 'inf'")),
    (["bench", "--width", "-0.5"], ("--width", "got '-0.5'")),
    (["bench", "--input-size", "0"], ("--input-size", r"integer in \[1, 4096\]")),
    (["bench", "--in-chans", "0"], ("--in-chans", "integer >= 1")),
    (["bench", "--batch", "-2"], ("--batch", "got '-2'")),
    (["bench", "-T", "0"], ("-T", "integer >= 1")),
    (["bench", "--num-classes", "0"], ("--num-classes", "integer >= 1")),
    (["bench", "--reps", "0"], ("--reps", "integer >= 1")),
    (["bench", "--warmup", "-1"], ("--warmup", "integer >= 0")),
    (["bench", "--threads", "0"], ("--threads", r"integer in \[1, \d+\]")),
    (["bench", "--device", "gpu"], ("--device", "got 'gpu'")),
    (["export-nir", SHIPPED, "OUT", "--dt", "-1"], ("--dt", "finite number > 0", "got '-1'")),
    (["export-nir", SHIPPED, "OUT", "--dt", "0"], ("--dt", "got '0'")),
    (["export-nir", SHIPPED, "OUT", "--dt", "nan"], ("--dt", "got 'nan'")),
    (["export-nir", SHIPPED, "OUT", "--dt=-inf"], ("--dt", "got '-inf'")),
    (["export-nir", SHIPPED, "OUT", "--dt", "1e-4s"], ("--dt", "got '1e-4s'")),
    (["export-nir", SHIPPED, "OUT", "--input-size", "1", "0", "28"], ("--input-size", "got '0'")),
    (["demo", "--batch", "0"], ("--batch", "integer >= 1")),
    (["demo", "--max-images", "-5"], ("--max-images", "got '-5'")),
]


@pytest.mark.parametrize("argv,needles", BAD_ARGS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_ARGS])
def test_bad_argument_is_refused_at_parse_time(argv, needles, tmp_path, capsys):
    argv = [str(tmp_path / "out.nir") if a == "OUT" else a for a in argv]
    assert_cli_user_error(run_cli(argv, capsys), *needles)
    assert not (tmp_path / "out.nir").exists()


# ---- CLI outputs: checked writable before the work starts -------------------------------------------------------

BAD_OUTPUTS = [
    # (argv with OUT for the unwritable path, needles)
    (["eval", SHIPPED, "--data", "fashion-mnist-subset", "--json", "OUT"], ("--json", "is a file, not a folder")),
    (["eval", SHIPPED, "--data", "fashion-mnist-subset", "--plots", "OUT"], ("--plots", "is a file, not a folder")),
    (["bench", "--json", "OUT"], ("--json", "is a file, not a folder")),
    (["export-nir", SHIPPED, "OUT"], ("argument out", "is a file, not a folder")),
    (["train", "--preset", SHIPPED, "--out", "OUT"], ("--out", "is a file, not a folder")),
    (["finetune", "--dataset", "x", "--model", SHIPPED, "--out", "OUT"], ("--out", "is a file, not a folder")),
    (["make-events", "--data", "mnist", "--out", "OUT"], ("--out", "is a file, not a folder")),
    (["manifest", "add", "FOLDER", "--manifest", "OUT"], ("--manifest", "is a file, not a folder")),
    (["publish", "FOLDER", "--repo", "org/name", "--manifest", "OUT"], ("--manifest", "is a file, not a folder")),
]


@pytest.mark.parametrize("argv,needles", BAD_OUTPUTS, ids=[a[0] + " " + a[-2] for a, _ in BAD_OUTPUTS])
def test_unwritable_output_under_a_file_is_refused_before_work(argv, needles, tmp_path, capsys):
    out = _unwritable(tmp_path, "sub/out.json")
    argv = [str(out) if a == "OUT" else str(tmp_path) if a == "FOLDER" else a for a in argv]
    assert_cli_user_error(run_cli(argv, capsys), *needles, "expected|cannot write", str(out).replace("\\", "/"))


@pytest.mark.parametrize("argv", [
    ["eval", SHIPPED, "--data", "fashion-mnist-subset", "--json", "/proc/tdbn-zoo-test/out.json"],
    ["bench", "--json", "/proc/tdbn-zoo-test.json"],
    ["export-nir", SHIPPED, "/proc/tdbn-zoo-test.nir"],
    ["train", "--preset", SHIPPED, "--out", "/proc/tdbn-zoo-test"],
], ids=["eval", "bench", "export-nir", "train"])
def test_output_on_a_filesystem_that_refuses_files_is_refused(argv, capsys):
    assert_cli_user_error(run_cli(argv, capsys), "cannot write", "/proc", "not writable")


@pytest.mark.parametrize("argv,needles", [
    (["eval", SHIPPED, "--data", "fashion-mnist-subset", "--json", "DIR"], ("expected a file path", "folder")),
    (["export-nir", SHIPPED, "DIR"], ("expected a file path", "existing folder")),
    (["eval", SHIPPED, "--data", "fashion-mnist-subset", "--plots", "FILE"], ("expected a folder", "existing file")),
], ids=["eval --json folder", "export-nir folder", "eval --plots file"])
def test_output_of_the_wrong_kind_is_refused(argv, needles, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("keep me\n")
    argv = [str(tmp_path) if a == "DIR" else str(tmp_path / "file.txt") if a == "FILE" else a for a in argv]
    assert_cli_user_error(run_cli(argv, capsys), *needles)
    assert (tmp_path / "file.txt").read_text() == "keep me\n"


@pytest.mark.parametrize("argv,needles", [
    (["bench", "--json", "TMP/" + "a" * 300 + ".json"], ("--json", "File name too long")),
    (["export-nir", SHIPPED, "TMP/new/" + "b" * 300 + ".nir"], ("at most \\d+ bytes", "got one of 304")),
    (["train", "--preset", SHIPPED, "--out", "TMP/run\x00x"], ("--out", "NUL byte")),
], ids=["name too long", "new folder, name too long", "NUL byte"])
def test_output_path_the_os_cannot_hold_is_refused(argv, needles, tmp_path, capsys):
    argv = [a.replace("TMP", str(tmp_path)) for a in argv]
    assert_cli_user_error(run_cli(argv, capsys), *needles)
    assert list(tmp_path.iterdir()) == []


def test_eval_writes_json_and_plots_into_new_folders_and_the_json_matches_the_model(tmp_path, capsys):
    """A valid output path whose folders do not exist yet is accepted and created; the JSON's top-1 equals the
    accuracy of the same checkpoint computed here directly on the same images."""
    from eval.data.images import build_dataset

    out, plots = tmp_path / "a" / "b" / "r.json", tmp_path / "plots"
    r = run_cli(["eval", SHIPPED, "--data", "fashion-mnist-subset", "--max-images", "4", "--batch-size", "4",
                 "--speed-batches", "0", "--json", out, "--plots", plots], capsys)
    assert r.rc == 0, r.err
    doc = json.loads(out.read_text())
    assert (plots / "firing_rates.png").stat().st_size > 0
    data = build_dataset("fashion-mnist-subset", split="test")
    x = torch.stack([data[i][0] for i in range(4)])
    y = torch.tensor([int(data[i][1]) for i in range(4)])
    with torch.no_grad():
        pred = zoo.create(SHIPPED, pretrained=True).eval()(x).argmax(1)
    (res,) = doc["results"]
    assert res["images"] == 4
    assert res["top1"] == pytest.approx(100.0 * (pred == y).float().mean().item())
    assert not list(tmp_path.rglob(".tdbn-zoo-write-check-*"))  # the writability probe leaves nothing
