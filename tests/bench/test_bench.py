"""tdbn-zoo bench at tiny sizes: the framework builds compute the zoo model's function (and a wrong build is
refused), the output's format. Timings themselves are not asserted."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from eval.bench.reference_models import mirror
from eval.bench.runner import (BUILDS, BenchCheckError, BenchConfig, Build, BuildUnavailable, _ratios,
                               check_same_function, format_bench, format_summary, make_builds, reference_model,
                               run_bench, saved_for_backward_bytes, training_forward_saved_bytes)
from eval.cli import main
from tests.support.cli import assert_cli_user_error, run_cli


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (see conftest)

TINY = dict(width=1 / 16, input_size=8, batch=2, T=2, reps=1, warmup=0)


@pytest.fixture(scope="module")
def tiny_model():
    return reference_model(BenchConfig(**{**TINY, "batch": 4}))


def test_framework_builds_give_the_zoo_logits(tiny_model):
    x = torch.randn(4, 3, 8, 8)
    models = {n: BUILDS[n].make(tiny_model, None) for n in ("zoo", "spikingjelly", "snntorch", "ann")}
    check = check_same_function(models, x)
    d = check["max_abs_diff"]
    assert set(d) == {"spikingjelly vs zoo (eval)", "spikingjelly vs zoo (train)", "snntorch vs zoo (eval)",
                      "zoo fused vs unfused", "ann fused vs unfused"}
    assert max(d.values()) < 1e-9 and check["min_firing_rate"] > 0
    # the framework-native layers are what is built
    from snntorch import Leaky
    from spikingjelly.activation_based import layer, neuron
    sj, snn = models["spikingjelly"], models["snntorch"]
    assert isinstance(sj.layer1[0].conv1, layer.Conv2d) and sj.layer1[0].conv1.step_mode == "m"
    assert isinstance(sj.layer1[0].bn2, layer.ThresholdDependentBatchNorm2d)
    assert isinstance(sj.layer1[0].act1, neuron.LIFNode) and isinstance(snn.layer1[0].act1, Leaky)
    # SpikingJelly's tdBN learns gamma = lambda * alpha * Vth: the copied weight carries the scale
    assert torch.allclose(sj.layer1[0].bn2.weight, tiny_model.layer1[0].bn2.weight * (0.5 / 2 ** 0.5))


def test_a_wrong_build_is_refused(tiny_model, monkeypatch):
    def perturbed(m, cfg):
        ref = mirror(m, "spikingjelly")
        with torch.no_grad():
            ref.layer1[0].conv2.weight[0, 0, 1, 1] += 0.5
        return ref

    monkeypatch.setitem(BUILDS, "bad", Build("bad", "perturbed SpikingJelly", perturbed))
    with pytest.raises(BenchCheckError, match="bad vs zoo"):
        check_same_function({"zoo": tiny_model, "bad": BUILDS["bad"].make(tiny_model, None)}, torch.randn(4, 3, 8, 8))
    silent = copy.deepcopy(tiny_model)
    for m in silent.modules():
        if hasattr(m, "v_th") and not hasattr(m, "num_features"):
            m.v_th = 1e9  # no neuron can fire: equal logits would prove nothing
    with pytest.raises(BenchCheckError, match="vacuous"):
        check_same_function({"zoo": silent}, torch.randn(4, 3, 8, 8))


def test_run_bench_result_and_table():
    res = run_bench(BenchConfig(**TINY))
    assert list(res["rows"]) == ["zoo", "spikingjelly", "spikingjelly-memopt", "snntorch", "ann"]
    summary = format_summary([res, res]).splitlines()  # the GPU script's table over several runs
    assert summary[0].startswith("sresnet19_tdbn at width") and len(summary) == 2 + 2 + 2 * len(res["rows"])
    assert summary[-1].startswith("| 2 | off | ANN floor") and summary[-1].split("|")[5].strip() == "1.00x"
    for name, row in res["rows"].items():
        assert row["train_ms"] > 0 and row["infer_ms"] > 0 and row["peak_train_mib"] > 0
        assert row["saved_for_backward_mib"] > 0
        assert len(row["samples_ms"]["train"]) == 1
        assert (row["fused_infer_ms"] is not None) == (name in ("zoo", "ann"))
    # every default build ran: every comparison between them exists (zoo-reference is not a default build)
    assert all((v is None) == k.endswith("layer_by_layer") for k, v in res["ratios"].items())
    assert all(v > 0 for v in res["ratios"].values() if v is not None)
    json.dumps(res)  # the --json output is plain data
    text = format_bench(res)
    for s in ("check passed", "| build", "train step (ms)", "peak train memory (MiB)", "this zoo", "SpikingJelly",
              "snnTorch", "ANN floor", "as fast as SpikingJelly", "machine:", "SpikingJelly + memopt",
              "saved for backward: zoo / ANN floor", "saved for backward: zoo / SpikingJelly = ",
              "saved for backward: zoo / SpikingJelly + memopt"):
        assert s in text
    with pytest.raises(ValueError, match="builds must include 'zoo'"):
        run_bench(BenchConfig(**TINY, builds=("ann",)))


def test_ratios_by_hand():
    """The comparisons on made-up timings whose ratios are written out by hand (exact binary fractions)."""
    rows = {"zoo": dict(train_ms=20.0, infer_ms=8.0, fused_infer_ms=6.0, peak_train_mib=50.0,
                        saved_for_backward_mib=30.0),
            "spikingjelly": dict(train_ms=30.0, infer_ms=9.0, fused_infer_ms=None, peak_train_mib=100.0,
                                 saved_for_backward_mib=120.0),
            "spikingjelly-memopt": dict(train_ms=40.0, infer_ms=9.0, fused_infer_ms=None, peak_train_mib=60.0,
                                        saved_for_backward_mib=15.0),
            "ann": dict(train_ms=5.0, infer_ms=2.0, fused_infer_ms=1.5, peak_train_mib=10.0,
                        saved_for_backward_mib=24.0),
            "zoo-reference": dict(train_ms=16.0, infer_ms=8.0, fused_infer_ms=None, peak_train_mib=80.0,
                                  saved_for_backward_mib=48.0)}
    assert _ratios(rows) == {
        "saved_for_backward_vs_layer_by_layer": 0.625, "train_over_layer_by_layer": 1.25,
        "train_speedup_vs_spikingjelly": 1.5, "train_speedup_vs_snntorch": None, "train_over_ann": 4.0,
        "fused_over_unfused_inference": 0.75, "fused_over_unfused_floor": 0.1875, "fused_over_ann_inference": 3.0,
        "inference_over_ann": 4.0, "peak_train_memory_vs_spikingjelly": 0.5,
        "saved_for_backward_over_ann": 1.25, "saved_for_backward_vs_spikingjelly": 0.25,
        "train_speedup_vs_spikingjelly_memopt": 2.0, "saved_for_backward_vs_spikingjelly_memopt": 2.0,
        "memopt_saved_for_backward_over_ann": 0.625}


def test_bench_command(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "--width", "0.0625", "--input-size", "8", "--batch", "2", "-T", "2", "--reps", "1",
               "--warmup", "0", "--builds", "zoo,ann", "--no-memory", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "check passed" in text and "ANN floor" in text and "SpikingJelly (multi-step)" not in text
    assert json.loads(out.read_text())["rows"]["zoo"]["peak_train_mib"] is None
    assert main(["bench", "--arch", "resnet18", "--reps", "1"]) == 2
    assert "unknown model 'resnet18'. Did you mean sresnet19_tdbn" in capsys.readouterr().err


def test_saved_for_backward_counts_distinct_activation_storages_by_hand():
    from eval.bench.runner import saved_for_backward_bytes

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    x = torch.randn(2, 4)
    # addmm keeps its input x (2x4 float32) for the weight's gradient, ReLU its output (2x3); the weight,
    # a parameter, is left out
    assert saved_for_backward_bytes(lambda: net(x).sum(), net) == 2 * 4 * 4 + 2 * 3 * 4
    # x saved again (by the product, for the scalar's gradient) is the same storage: counted once
    fn = lambda: net(x).sum() + (x * net[0].weight.sum()).sum()  # noqa: E731
    assert saved_for_backward_bytes(fn, net) == 2 * 4 * 4 + 2 * 3 * 4


def test_saved_for_backward_counts_a_checkpoints_inputs_not_its_inside():
    """What the memopt row relies on: a non-reentrant checkpoint keeps its input (counted) and recomputes the
    rest (not counted), by hand: sin saves its input t*2, cos saves sin's output (4000 bytes each)."""
    from torch.utils.checkpoint import checkpoint

    x = torch.randn(1000, requires_grad=True)
    f = lambda t: (t * 2).sin().cos()  # noqa: E731
    assert saved_for_backward_bytes(lambda: f(x).sum()) == 2 * 1000 * 4
    assert saved_for_backward_bytes(lambda: checkpoint(f, x, use_reentrant=False).sum()) == 1000 * 4


MEMOPT_CFG = BenchConfig(width=1 / 16, input_size=16, batch=2, T=2, builds=("zoo", "spikingjelly", "spikingjelly-memopt"))


@pytest.fixture(scope="module")
def memopt_builds():
    model = reference_model(MEMOPT_CFG)
    models, notes = make_builds(model, MEMOPT_CFG)
    assert notes == [] and list(models) == ["zoo", "spikingjelly", "spikingjelly-memopt"]
    return models


def test_spikingjelly_memopt_build_is_the_same_network_checkpointed(memopt_builds):
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    sj, opt = memopt_builds["spikingjelly"], memopt_builds["spikingjelly-memopt"]
    # SpikingJelly's own memopt rewrote every residual block into a checkpoint, parameter names unchanged
    blocks = [m for m in opt.modules() if isinstance(m, CheckpointWrapper)]
    assert len(blocks) == sum(len(getattr(sj, f"layer{i}")) for i in range(1, sj.num_stages + 1))
    assert list(opt.state_dict()) == list(sj.state_dict())
    check = check_same_function(memopt_builds, torch.randn(2, 3, 16, 16))
    assert check["max_abs_diff"]["spikingjelly-memopt vs zoo (eval)"] < 1e-9
    assert check["max_abs_diff"]["spikingjelly-memopt vs zoo (train)"] < 1e-9
    # training through the checkpoints: the plain SpikingJelly build's gradients (float64)
    x, y = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.tensor([1, 7])
    grads = {}
    for name in ("spikingjelly", "spikingjelly-memopt"):
        m = copy.deepcopy(memopt_builds[name]).double().train()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        grads[name] = [p.grad for p in m.parameters()]
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(*grads.values()))
    # what it is for: far fewer bytes saved for backward than the same build without it
    x32 = x.float()
    assert training_forward_saved_bytes(opt, x32, y) < 0.5 * training_forward_saved_bytes(sj, x32, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="memopt's levels 2-4 run on a CUDA machine")
def test_memopt_that_cannot_run_here_is_a_note_not_a_crash(monkeypatch):
    import functools

    import eval.bench.reference_models as rm

    # memopt's levels 2-4 measure the CUDA allocator's peak and raise RuntimeError without CUDA
    monkeypatch.setattr(rm, "memopt_mirror", functools.partial(rm.memopt_mirror, level=4))
    models, notes = make_builds(reference_model(MEMOPT_CFG), MEMOPT_CFG)
    assert list(models) == ["zoo", "spikingjelly"]
    assert len(notes) == 1 and notes[0].startswith("spikingjelly-memopt: not run (") and "CUDA" in notes[0]


def test_an_unavailable_build_is_left_out_with_its_reason(monkeypatch):
    def unavailable(m, cfg):
        raise BuildUnavailable("needs a frobnicator")

    monkeypatch.setitem(BUILDS, "nope", Build("nope", "unavailable", unavailable))
    res = run_bench(BenchConfig(**TINY, builds=("zoo", "nope", "ann"), memory=False))
    assert list(res["rows"]) == ["zoo", "ann"]
    assert "note: nope: not run (needs a frobnicator)" in format_bench(res)


def test_spikingjelly_has_no_fused_lif_for_the_rectangular_surrogate():
    """Why the SpikingJelly builds run its PyTorch LIF loop on CUDA too: its CUDA/Triton dispatch
    (``spikingjelly._ops.surrogate._surrogate_spec``) has no entry for ``surrogate.Rect``."""
    surrogate_spec = pytest.importorskip("spikingjelly._ops.surrogate")._surrogate_spec
    from spikingjelly.activation_based import surrogate

    assert surrogate_spec(surrogate.Rect(alpha=1.0)) is None
    assert surrogate_spec(surrogate.Sigmoid()) is not None  # the lookup itself works


def test_bench_amp_bf16_on_cpu_end_to_end(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "--width", "0.0625", "--input-size", "8", "--batch", "2", "-T", "2", "--reps", "1",
               "--warmup", "0", "--amp", "bf16", "--device", "cpu", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "under torch.autocast(bf16)" in text and "check passed" in text
    res = json.loads(out.read_text())
    assert res["config"]["amp"] == "bf16"
    assert list(res["rows"]) == ["zoo", "spikingjelly", "spikingjelly-memopt", "snntorch", "ann"]
    assert all(r["train_ms"] > 0 and r["saved_for_backward_mib"] > 0 for r in res["rows"].values())


def test_autocast_bf16_saves_less_for_backward(tiny_model):
    """bf16 autocast stores the convolutions' outputs in 2 bytes instead of 4: fewer bytes saved (the ANN
    floor's float inputs too; the zoo's spike inputs are saved as bool either way)."""
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([0, 1])
    for name, at_most in (("zoo", 0.95), ("ann", 0.75)):
        m = BUILDS[name].make(tiny_model, None)
        fp32, bf16 = (training_forward_saved_bytes(copy.deepcopy(m), x, y, amp) for amp in ("off", "bf16"))
        assert bf16 < at_most * fp32, (name, bf16, fp32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 autocast is allowed with CUDA")
@pytest.mark.parametrize("argv", [["--amp", "fp16"], ["--amp", "fp16", "--device", "cpu", "--budget-mib", "64"]])
def test_amp_fp16_without_cuda_is_a_user_error(argv, capsys):
    assert_cli_user_error(run_cli(["bench", *argv], capsys), "--amp fp16", "needs a CUDA device", "got device 'cpu'")


def test_amp_mode_outside_the_choices_is_refused(capsys):
    assert_cli_user_error(run_cli(["bench", "--amp", "fp32"], capsys), "--amp", "invalid choice", "fp32")


def test_saved_for_backward_leaves_out_a_graph_dropped_during_the_forward():
    """A graph built and dropped inside the forward (as snnTorch's ``spike_grad(mem).clone().detach()``)
    holds nothing at backward time: by hand, only the kept product's input x (2000 floats) counts."""
    x = torch.randn(2000, requires_grad=True)

    def fn():
        dropped = (x * 3).sin().detach()  # sin saved x * 3 (a new storage), then the graph was dropped
        return (x.exp() * dropped).sum()  # exp saves its output, the product saves exp's output and `dropped`

    assert saved_for_backward_bytes(fn) == 2 * 2000 * 4


def test_layer_by_layer_build_is_the_zoo_function_saving_more():
    """``zoo-reference`` is the same model with the memory-lean path off: the same logits in the check,
    and in a training forward it saves what the lean path avoids (the norms' outputs as the LIFs' inputs,
    the membranes, float spikes for the convs)."""
    res = run_bench(BenchConfig(**TINY, builds=("zoo", "zoo-reference", "ann")))
    assert res["check"]["max_abs_diff"]["zoo-reference vs zoo (eval)"] == 0
    rows = res["rows"]
    assert rows["zoo"]["saved_for_backward_mib"] < 0.6 * rows["zoo-reference"]["saved_for_backward_mib"]
    assert res["ratios"]["saved_for_backward_vs_layer_by_layer"] == pytest.approx(
        rows["zoo"]["saved_for_backward_mib"] / rows["zoo-reference"]["saved_for_backward_mib"])


def test_bench_times_a_checkpoint_with_its_own_weights(tmp_path, capsys):
    """Any model name: a fused checkpoint folder is timed with its weights, T, classes and channels, and every
    framework build is made from those weights (the same-function check compares them to the checkpoint's
    own logits)."""
    import zoo

    torch.manual_seed(0)
    model = zoo.create("sresnet19_narrow_tdbn", T=3, num_classes=5, stem_width=4, channels=[4, 4, 8])
    # a trained checkpoint brings its own norm statistics: calibrate them once, as the runner does for random weights
    from eval.measure.harness import calibrate_norms
    calibrate_norms(model, [torch.randn(8, 1, 12, 12) for _ in range(2)])
    folder = zoo.save_pretrained(model, tmp_path / "ckpt", tag="sresnet19_narrow_tdbn.mine",  # fused
                                 cfg=dict(input_size=(1, 12, 12), mean=(0.5,), std=(0.5,)))
    out = tmp_path / "b.json"
    rc = main(["bench", str(folder), "--input-size", "12", "--batch", "4", "--reps", "1", "--warmup", "0",
               "--builds", "zoo,snntorch,ann", "--no-memory", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    c = res["config"]
    assert (c["arch"], c["T"], c["num_classes"], c["in_chans"]) == (str(folder), 3, 5, 1)
    assert res["arch_kwargs"] == {"stem_width": 4, "channels": [4, 4, 8]}
    assert res["check"]["max_abs_diff"]["snntorch vs zoo (eval)"] < 1e-6
    # the zoo build is the checkpoint: its logits are the loaded fused model's
    loaded = zoo.create(f"local-dir:{folder}", pretrained=True).eval()
    bench_model = reference_model(BenchConfig(**{**TINY, "arch": str(folder), "T": 3, "num_classes": 5,
                                                 "in_chans": 1, "input_size": 12}))
    x = torch.randn(4, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(bench_model(x), loaded(x), rtol=1e-4, atol=1e-4)
    assert "(its weights)" in capsys.readouterr().out
    assert main(["bench", str(folder), "--width", "0.5"]) == 2
    assert "--width scales an architecture" in capsys.readouterr().err
    assert main(["bench", "sresnet19_tdbn", "--model-kw", "width=0.5"]) == 2
    assert "no model argument 'width'; its arguments are block, layers, channels" in capsys.readouterr().err
def test_the_timed_float32_kernels_are_checked_against_the_pytorch_path(tiny_model, monkeypatch):
    """The float32 builds as timed run the device's LIF kernels (here the C++ one; Triton on CUDA), which the
    float64 check never reaches on CUDA: compared with the PyTorch path, spikes equal and logits and gradients
    within tolerance, eval and train, lean and layer by layer; a kernel off by one spike is refused."""
    from adapters import lif
    from eval.bench.runner import check_kernels

    models = {n: BUILDS[n].make(tiny_model, None) for n in ("zoo", "zoo-reference", "spikingjelly", "ann")}
    x = torch.randn(4, 3, 8, 8)
    diffs = check_kernels(models, x)
    assert set(diffs) == {f"{n} kernels vs PyTorch path ({m})" for n in ("zoo", "zoo-reference")
                          for m in ("eval", "train")}
    assert max(diffs.values()) < 1e-6
    kernel = lif._use_kernel(x)

    class OneSpikeOff:  # the kernel module with its forward's first spike flipped
        def __getattr__(self, name):
            return getattr(kernel, name)

        def lif_forward(self, *args):
            out = kernel.lif_forward(*args)
            out[0].view(-1)[0] = 1 - out[0].view(-1)[0]
            return out

    monkeypatch.setattr(lif, "_use_kernel", lambda t: OneSpikeOff() if lif._kernels_on else None)
    with pytest.raises(BenchCheckError, match=r"zoo kernels vs PyTorch path \(eval\): \d+ spikes differ"):
        check_kernels({"zoo": models["zoo"]}, x)


@pytest.mark.parametrize("off,passes", [(1.3e-6, True), (1e-3, False)])
def test_the_kernel_check_allows_float32_rounding_not_a_wrong_gradient(tiny_model, monkeypatch, off, passes):
    """Gradients off by float32 summation order (1.3e-6 of their scale, every spike equal, as measured on the
    shipped fashion_mnist_t2 tag, whose `tdbn-zoo bench` this refused) pass; a gradient off by 1e-3 does not."""
    from adapters import lif
    from eval.bench import runner

    real = runner._spikes_logits_grads

    def skewed(model, x, train):  # the kernel run (outside pytorch_path) with its gradients scaled by 1 + off
        s, out, g = real(model, x, train)
        return s, out, ([t * (1 + off) for t in g] if lif._kernels_on else g)

    monkeypatch.setattr(runner, "_spikes_logits_grads", skewed)
    models = {"zoo": BUILDS["zoo"].make(tiny_model, None)}
    if passes:
        runner.check_kernels(models, torch.randn(4, 3, 8, 8))
    else:
        with pytest.raises(BenchCheckError, match=r"train\): 0 spikes differ"):
            runner.check_kernels(models, torch.randn(4, 3, 8, 8))
