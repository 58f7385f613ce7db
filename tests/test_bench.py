"""tdbn-zoo bench at tiny sizes: the framework builds compute the zoo model's function (and a wrong build is
refused), the output's format. Timings themselves are not asserted."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from eval.bench.runner import (BUILDS, BenchCheckError, BenchConfig, Build, _ratios, check_same_function, format_bench,
                               reference_model, run_bench)
from eval.cli import main
from eval.bench.reference_models import mirror


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
    assert list(res["rows"]) == ["zoo", "spikingjelly", "snntorch", "ann"]
    for name, row in res["rows"].items():
        assert row["train_ms"] > 0 and row["infer_ms"] > 0 and row["peak_train_mib"] > 0
        assert row["saved_for_backward_mib"] > 0
        assert len(row["samples_ms"]["train"]) == 1
        assert (row["fused_infer_ms"] is not None) == (name in ("zoo", "ann"))
    assert all(v > 0 for v in res["ratios"].values())  # every build ran: every comparison exists
    json.dumps(res)  # the --json output is plain data
    text = format_bench(res)
    for s in ("check passed", "| build", "train step (ms)", "peak train memory (MiB)", "this zoo", "SpikingJelly",
              "snnTorch", "ANN floor", "as fast as SpikingJelly", "machine:"):
        assert s in text
    with pytest.raises(ValueError, match="builds must include 'zoo'"):
        run_bench(BenchConfig(**TINY, builds=("ann",)))


def test_ratios_by_hand():
    """The comparisons on made-up timings whose ratios are written out by hand (exact binary fractions)."""
    rows = {"zoo": dict(train_ms=20.0, infer_ms=8.0, fused_infer_ms=6.0, peak_train_mib=50.0,
                        saved_for_backward_mib=30.0),
            "spikingjelly": dict(train_ms=30.0, infer_ms=9.0, fused_infer_ms=None, peak_train_mib=100.0,
                                 saved_for_backward_mib=120.0),
            "ann": dict(train_ms=5.0, infer_ms=2.0, fused_infer_ms=1.5, peak_train_mib=10.0,
                        saved_for_backward_mib=24.0)}
    assert _ratios(rows) == {
        "train_speedup_vs_spikingjelly": 1.5, "train_speedup_vs_snntorch": None, "train_over_ann": 4.0,
        "fused_over_unfused_inference": 0.75, "fused_over_unfused_floor": 0.1875, "fused_over_ann_inference": 3.0,
        "inference_over_ann": 4.0, "peak_train_memory_vs_spikingjelly": 0.5,
        "saved_for_backward_over_ann": 1.25, "saved_for_backward_vs_spikingjelly": 0.25}


def test_bench_command(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "--width", "0.0625", "--input-size", "8", "--batch", "2", "-T", "2", "--reps", "1",
               "--warmup", "0", "--builds", "zoo,ann", "--no-memory", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "check passed" in text and "ANN floor" in text and "SpikingJelly (multi-step)" not in text
    assert json.loads(out.read_text())["rows"]["zoo"]["peak_train_mib"] is None
    assert main(["bench", "--arch", "resnet18", "--reps", "1"]) == 2
    assert "unknown architecture" in capsys.readouterr().err


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
