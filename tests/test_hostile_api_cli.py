"""Hostile and clumsy inputs to the Python API (``zoo.create`` arguments, ``model.T``, forward inputs) and to the
``tdbn-zoo`` commands' arguments and outputs (eval, bench, export-nir, demo, train, finetune, make-events,
manifest, publish).

Every case asserts its outcome class (``tests/hostile.py``): a user error naming what was expected and what
came (on the CLI: exit 2, one line, no traceback), or the correct result checked independently. Unwritable
outputs are made without chmod (tests run as root, which ignores permission bits): a path under a regular file,
or under ``/proc``.
"""
from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import torch

import zoo
from adapters._checks import value_checks
from eval.cli import report_user_errors
from tests.hostile import assert_cli_user_error, assert_user_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = "sresnet19_narrow_tdbn.fashion_mnist_t2"  # a shipped checkpoint (weights/), T=2, 1x28x28, 10 classes
TINY = dict(channels=(4, 8, 8), stem_width=4, head_hidden=8)  # the narrow layout at a few channels


def tiny(**kw):
    return zoo.create("sresnet19_narrow_tdbn", **{**TINY, **kw}).eval()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny(T=2)


# ---- model arguments: zoo.create(...) --------------------------------------------------------------------------

BAD_MODEL_ARGS = [
    (dict(T=0), "T must be an integer >= 1, got 0"),
    (dict(T=-1), "T must be an integer >= 1, got -1"),
    (dict(T=2.5), r"T must be an integer >= 1, got 2\.5 \(float\)"),
    (dict(T="4"), r"T must be an integer >= 1, got '4' \(str\)"),
    (dict(T=True), r"T must be an integer >= 1, got True \(bool\)"),
    (dict(num_classes=-1), "num_classes must be an integer >= 0, got -1"),
    (dict(num_classes=2.5), r"num_classes must be an integer >= 0, got 2\.5"),
    (dict(in_chans=0), "in_chans must be an integer >= 1, got 0"),
    (dict(in_chans=-2), "in_chans must be an integer >= 1, got -2"),
    (dict(in_chans=1.5), r"in_chans must be an integer >= 1, got 1\.5"),
]


@pytest.mark.parametrize("kw,needle", BAD_MODEL_ARGS, ids=[str(k) for k, _ in BAD_MODEL_ARGS])
def test_bad_model_argument_is_refused_at_construction(kw, needle):
    assert_user_error(lambda: tiny(**kw), "SpikingResNet", needle)


@pytest.mark.parametrize("value,needle", [(0, "got 0"), (-1, "got -1"), (2.5, r"got 2\.5"), ("3", "got '3'"),
                                          (None, "got None")])
def test_bad_T_assignment_is_refused_and_keeps_the_old_T(model, value, needle):
    def assign():
        model.T = value
    assert_user_error(assign, "T must be an integer >= 1", needle)
    assert model.T == 2


@pytest.mark.parametrize("value", [-1, 2.5])
def test_bad_reset_classifier_is_refused(value):
    assert_user_error(lambda: tiny().reset_classifier(value), "num_classes must be an integer >= 0", str(value))


def test_T_setter_result_matches_the_image_repeated_over_T(model):
    """Setting T=3 on a static image gives the logits of that image presented at 3 steps (eq. 11 input)."""
    x = torch.rand(2, 1, 12, 12)
    model.T = np.int64(3)  # a numpy integer is an integer
    try:
        assert model.T == 3 and type(model.T) is int
        with torch.no_grad():
            want = model(x.unsqueeze(0).expand(3, -1, -1, -1, -1).contiguous())
            got = model(x)
    finally:
        model.T = 2
    assert got.shape == (2, 10)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_num_classes_zero_gives_the_features(model):
    """``num_classes=0`` is timm's feature extractor: the logits are ``forward_head(pre_logits=True)``."""
    m = tiny(num_classes=0)
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        got = m(x)
        want = m.forward_head(m.forward_features(x), pre_logits=True)
    assert got.shape == (2, m.num_features)
    torch.testing.assert_close(got, want)


# ---- forward inputs -----------------------------------------------------------------------------------------------

BAD_INPUTS = [
    ("empty batch", lambda: torch.rand(0, 1, 12, 12), (r"empty input of shape \(0, 1, 12, 12\)", "N >= 1")),
    ("empty batch [T,N]", lambda: torch.rand(2, 0, 1, 12, 12), (r"empty input of shape \(2, 0, 1, 12, 12\)",)),
    ("zero height", lambda: torch.rand(2, 1, 0, 12), (r"empty input of shape \(2, 1, 0, 12\)", "H, W >= 1")),
    ("rank 3", lambda: torch.rand(1, 12, 12), (r"\[N, C, H, W\]", r"got shape \(1, 12, 12\)")),
    ("rank 2", lambda: torch.rand(12, 12), (r"\[T, N, C, H, W\]", r"got shape \(12, 12\)")),
    ("rank 6", lambda: torch.rand(2, 2, 1, 1, 12, 12), (r"got shape \(2, 2, 1, 1, 12, 12\)",)),
    ("3 channels", lambda: torch.rand(2, 3, 12, 12), ("expects 1 input channels, got 3",)),
    ("T mismatch", lambda: torch.rand(3, 2, 1, 12, 12), ("runs T=2", "input has T=3")),
    ("uint8", lambda: torch.zeros(2, 1, 12, 12, dtype=torch.uint8), ("floating-point", "uint8")),
    ("int64", lambda: torch.zeros(2, 1, 12, 12, dtype=torch.int64), ("floating-point", "int64")),
    ("bool", lambda: torch.zeros(2, 1, 12, 12, dtype=torch.bool), ("floating-point", "bool")),
    ("float64", lambda: torch.zeros(2, 1, 12, 12, dtype=torch.float64), ("float32 weights", "input is torch.float64")),
    ("float16", lambda: torch.zeros(2, 1, 12, 12, dtype=torch.float16), ("float32 weights", "input is torch.float16")),
    ("numpy", lambda: np.zeros((2, 1, 12, 12), np.float32), ("expects a torch.Tensor", "ndarray")),
    ("list", lambda: [[0.0]], ("expects a torch.Tensor", "list")),
    ("NaN", lambda: torch.full((2, 1, 12, 12), float("nan")), ("NaN",)),
    ("Inf", lambda: torch.full((2, 1, 12, 12), float("inf")), ("Inf",)),
]


@pytest.mark.parametrize("make,needles", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_forward_input_is_refused_naming_expected_and_got(model, make, needles):
    x = make()
    # NaN/Inf are value checks, opt-in (issue 16: no host synchronisation by default); shape checks always run
    with torch.no_grad(), value_checks():
        assert_user_error(lambda: model(x), *needles)


def test_double_model_with_double_input_runs_like_the_float_model(model):
    """The dtype check compares with the weights, it does not forbid float64: a float64 copy agrees."""
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        got = model.double()(x.double())
        model.float()
        want = model(x)
    torch.testing.assert_close(got.float(), want, rtol=0, atol=1e-5)


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


def test_export_nir_dt_sets_the_euler_time_constants(tmp_path, capsys):
    """``--dt 0.5``: every LIF node has ``tau = dt / (1 - k)`` and ``r = tau / dt`` (forward Euler of the paper's
    ``u[t] = k u[t-1] + I[t]``, k = tau_decay = 0.25)."""
    import nir

    out = tmp_path / "net.nir"
    r = run_cli(["export-nir", SHIPPED, out, "--dt", "0.5"], capsys)
    assert r.rc == 0, r.err
    graph = nir.read(str(out))
    assert graph.metadata["dt"] == 0.5
    lifs = [n for n in graph.nodes.values() if isinstance(n, nir.LIF)]
    assert lifs
    for node in lifs:
        np.testing.assert_allclose(node.tau, 0.5 / (1 - 0.25))
        np.testing.assert_allclose(node.r, 1 / (1 - 0.25))


@pytest.mark.parametrize("dt", [-1.0, 0.0, float("nan"), float("inf")])
def test_to_nir_refuses_a_bad_dt_from_python(dt):
    from zoo.to_nir import to_nir

    fused = zoo.create(SHIPPED, pretrained=True)
    assert_user_error(lambda: to_nir(fused, dt=dt), "dt must be a finite number > 0", f"got {dt!r}")


# ---- the handler classifies by type: zoo errors, the environment's OSErrors, out of memory -> one line --------
# (library exceptions are wrapped where they enter, naming the file or repo: tests/test_cli_errors.py)

RAISED = [
    ("disk full", lambda: OSError(errno.ENOSPC, "No space left on device", "/data/run/last.safetensors"),
     ("No space left on device", "/data/run/last.safetensors")),
    ("read-only", lambda: OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out.json"),
     ("Read-only file system", "/mnt/ro/out.json")),
    ("file too large", lambda: OSError(errno.EFBIG, "File too large", "/tmp/x.nir"), ("File too large", "x.nir")),
    ("permission", lambda: PermissionError(errno.EACCES, "Permission denied", "/root/x"),
     ("Permission denied", "/root/x")),
    ("zoo error", lambda: zoo.errors.InvalidFileError("/data/x.npz is not a readable event .npz (BadZipFile)"),
     ("/data/x.npz", "BadZipFile")),
    ("torch OOM", lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
     ("out of memory", "smaller batch", "20.00 GiB")),
    ("MemoryError", lambda: MemoryError(), ("out of memory",)),
]


@pytest.mark.parametrize("make,needles", [c[1:] for c in RAISED], ids=[c[0] for c in RAISED])
def test_user_and_environment_errors_become_one_line(make, needles, capsys, monkeypatch):
    monkeypatch.delenv("TDBN_ZOO_DEBUG", raising=False)
    exc = make()

    def fail():
        raise exc
    capsys.readouterr()
    rc = report_user_errors("tdbn-zoo eval", fail)
    from tests.hostile import CliResult
    assert_cli_user_error(CliResult(rc, *capsys.readouterr()), *needles)


@pytest.mark.parametrize("exc", [RuntimeError("an internal invariant broke"), KeyError("layer9"),
                                 AttributeError("'NoneType' object has no attribute 'weight'")],
                         ids=["RuntimeError", "KeyError", "AttributeError"])
def test_genuine_bugs_keep_their_traceback(exc, monkeypatch):
    monkeypatch.delenv("TDBN_ZOO_DEBUG", raising=False)

    def fail():
        raise exc
    with pytest.raises(type(exc)):
        report_user_errors("tdbn-zoo eval", fail)


def test_a_checkpoint_whose_config_disagrees_with_its_weights_is_one_line(tmp_path, capsys):
    """config.json says the last stage has 16 channels, model.safetensors holds 8: refused in one line that names
    a mismatched tensor (not a traceback, not a page of every mismatch)."""
    save = tmp_path / "ckpt"
    zoo.save_pretrained(tiny(), save)
    cfg = json.loads((save / "config.json").read_text())
    cfg["model_args"]["channels"] = [4, 8, 16]
    (save / "config.json").write_text(json.dumps(cfg))
    r = run_cli(["eval", save, "--data", "fashion-mnist-subset", "--max-images", "2", "--speed-batches", "0"], capsys)
    assert_cli_user_error(r, "layer3", "shape|size mismatch")
    assert len(r.err) < 1200


def test_an_absurd_width_is_one_line_naming_the_maximum(capsys):
    """``bench --width 10000``: 1,280,000 channels a layer (a 58 TB weight) is past the widest layer a model
    may have (zoo.spiking_resnet.MAX_WIDTH), refused before anything is allocated."""
    r = run_cli(["bench", "--width", "10000", "--reps", "1", "--builds", "zoo", "--no-memory"], capsys)
    assert_cli_user_error(r, "width", r"\[1, 65536\]", "1280000")


def test_debug_mode_shows_the_traceback_of_a_user_error(monkeypatch):
    monkeypatch.setenv("TDBN_ZOO_DEBUG", "1")

    def fail():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/x")
    with pytest.raises(OSError, match="No space left"):
        report_user_errors("tdbn-zoo eval", fail)


def test_a_real_file_size_limit_during_eval_json_is_one_line_naming_the_file(tmp_path, capsys):
    """A write that fails after the evaluation (file size limit: EFBIG, like a full disk) names the file and
    leaves no partial file behind."""
    import resource
    import signal

    from adapters._kernels import lif_cpu

    lif_cpu()  # build (or load) the compiled kernel first: the size limit below would stop its build
    out = tmp_path / "r.json"
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, old_limit[1]))  # the JSON is ~20 kB
    try:
        r = run_cli(["eval", SHIPPED, "--data", "fashion-mnist-subset", "--max-images", "2", "--speed-batches", "0",
                     "--json", out], capsys)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert_cli_user_error(r, "File too large", str(out))
    assert list(tmp_path.iterdir()) == []
