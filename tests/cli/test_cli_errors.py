"""How the ``tdbn-zoo`` command line reports an exception, by its type alone (``eval.cli.user_error_message``):
the zoo's errors (``zoo.errors``), the environment's ``OSError`` naming a file and running out of memory are
one line and exit 2; anything else is a bug and keeps its traceback. Library exceptions are wrapped where the
input enters, naming the file."""
import errno
import gzip
import json
import zipfile
import zlib

import pytest
import torch

import zoo
from eval.cli import report_user_errors
from eval.data.images import read_idx, read_npz_arrays
from tests.support.cli import CliResult, assert_cli_user_error, run_cli
from tests.support.models import make_tiny_narrow
from zoo.checkpoints import read_header
from zoo.errors import CheckpointError, InvalidFileError, ZooError

SHIPPED = "sresnet19_narrow_tdbn.fashion_mnist_t2"
EVAL = ["eval", SHIPPED, "--data", "fashion-mnist-subset", "--max-images", "2", "--speed-batches", "0"]


@pytest.mark.parametrize("exc", [ValueError("an internal invariant broke"), KeyError("layer9")],
                         ids=["ValueError", "KeyError"])
def test_a_bug_inside_the_zoo_keeps_its_traceback(exc, monkeypatch, capsys):
    """A zoo function that fails on valid input (a shipped checkpoint, the shipped data) is a bug: the exception
    reaches the caller with its traceback instead of becoming an exit-2 line, whatever its type."""
    monkeypatch.delenv("TDBN_ZOO_DEBUG", raising=False)
    assert run_cli(EVAL, capsys).rc == 0  # the same command works when nothing is broken

    def broken(*args, **kwargs):
        raise exc
    monkeypatch.setattr(zoo.pretrained, "plan_load", broken)
    with pytest.raises(type(exc)) as info:
        run_cli(EVAL, capsys)
    assert info.value is exc and info.traceback[-1].name == "broken"


def test_a_user_error_on_the_same_path_is_one_line(tmp_path, capsys):
    """The same command given a file that is not a checkpoint: one line naming it, exit 2."""
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    r = run_cli(["eval", bad, "--arch", "sresnet19_narrow_tdbn", "--data", "fashion-mnist-subset",
                 "--max-images", "2", "--speed-batches", "0"], capsys)
    assert_cli_user_error(r, str(bad), "not a valid safetensors file")


def _safetensors_error():
    from safetensors.torch import load
    try:
        load(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    except Exception as e:  # noqa: BLE001 (the library's own error type)
        return e
    raise AssertionError("safetensors accepted garbage")


# library exceptions that once were recognised by module name or message: unwrapped, they are bugs (the reader
# or loader that let one through must wrap it), so they keep their traceback
RAW = [
    ("zlib", lambda: zlib.error("Error -3 while decompressing data: invalid block type")),
    ("bad zip", lambda: zipfile.BadZipFile("File is not a zip file")),
    ("truncated gzip", lambda: EOFError("Compressed file ended before the end-of-stream marker was reached")),
    ("state_dict", lambda: RuntimeError("Error(s) in loading state_dict for SpikingResNet:\n\tsize mismatch for "
                                        "fc.weight: copying a param with shape torch.Size([5, 8]) from checkpoint")),
    ("safetensors", _safetensors_error),
    ("network", lambda: __import__("httpx2").ConnectError("[Errno 111] Connection refused")),
    ("OSError without a file", lambda: OSError("something failed")),
]


@pytest.mark.parametrize("make", [c[1] for c in RAW], ids=[c[0] for c in RAW])
def test_unwrapped_library_errors_keep_their_traceback(make, monkeypatch):
    monkeypatch.delenv("TDBN_ZOO_DEBUG", raising=False)
    exc = make()

    def fail():
        raise exc
    with pytest.raises(type(exc)):
        report_user_errors("tdbn-zoo eval", fail)


def test_readers_wrap_the_library_errors_naming_the_file(tmp_path):
    """The cases above as they really arise: a corrupt gzip (zlib), a truncated gzip (EOFError), a corrupt
    .npz (BadZipFile) and a corrupt .safetensors (SafetensorError) each become a zoo error naming the file."""
    corrupt_gz = tmp_path / "corrupt-idx3-ubyte.gz"
    corrupt_gz.write_bytes(gzip.compress(bytes(100))[:10] + b"\xff" * 30)  # gzip header, invalid deflate block
    truncated_gz = tmp_path / "truncated-idx1-ubyte.gz"
    truncated_gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (50).to_bytes(4, "big") + bytes(50))[:-12])
    npz = tmp_path / "bad.npz"
    npz.write_bytes(b"PK\x03\x04 not really a zip")
    weights = tmp_path / "bad.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    for read, path, kind in ((read_idx, corrupt_gz, InvalidFileError), (read_idx, truncated_gz, InvalidFileError),
                             (lambda p: read_npz_arrays(p, ["images"]), npz, InvalidFileError),
                             (read_header, weights, CheckpointError)):
        with pytest.raises(kind) as info:
            read(path)
        assert str(path) in str(info.value) and isinstance(info.value, ZooError)
        assert info.value.__cause__ is not None  # the library's own exception is kept as the cause


def test_a_layer_argument_refused_by_adapters_is_the_callers_error_in_the_zoo():
    """adapters (which does not import zoo) raises its own type for a bad layer argument; the zoo's builder turns
    exactly that type into InvalidArgumentError naming the model, so the CLI prints it as one line."""
    from adapters import LIF
    from adapters._checks import ArgumentError
    from zoo.errors import InvalidArgumentError

    with pytest.raises(ArgumentError, match="v_th must be > 0, got -1") as raw:
        LIF(v_th=-1)
    assert not isinstance(raw.value, ZooError) and isinstance(raw.value, ValueError)
    with pytest.raises(InvalidArgumentError, match="sresnet19_narrow_tdbn: v_th must be > 0, got -1") as info:
        zoo.create("sresnet19_narrow_tdbn", v_th=-1)
    assert isinstance(info.value.__cause__, ArgumentError)


# ---- the handler classifies by type: zoo errors, the environment's OSErrors, out of memory -> one line --------

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
    zoo.save_pretrained(make_tiny_narrow(), save)
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


def test_a_run_stopped_by_a_signal_exits_with_the_shells_code_and_no_second_line(capsys):
    """A training run stopped by SIGTERM (after keeping its checkpoint and printing where) exits 143, as a shell
    reports a SIGTERM'd process, without a second line; a plain Ctrl-C elsewhere is 130 and one line."""
    from eval.cli import report_user_errors
    from eval.train.trainer import TrainingInterrupted

    def stopped():
        raise TrainingInterrupted("stopped by SIGTERM at epoch 1/2: checkpoint kept", "SIGTERM")

    def ctrl_c():
        raise KeyboardInterrupt

    assert report_user_errors("tdbn-zoo train", stopped) == 143
    assert capsys.readouterr().err == ""
    assert report_user_errors("tdbn-zoo eval", ctrl_c) == 130
    assert capsys.readouterr().err.strip() == "tdbn-zoo eval: interrupted"
