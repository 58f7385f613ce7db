"""NIR export: the LIF parameter mapping against NIR's own equations, and a round trip through snnTorch's
NIR importer (an independent implementation) that reproduces the fused ResNet's outputs."""
import numpy as np
import nir
import pytest
import torch
from snntorch.import_nir import import_from_nir

import zoo
from adapters import LIF, make_neuron
from eval.cli import main as cli
from tests.support.cli import assert_user_error, run_cli
from tests.support.models import TINY
from tests.support.nir import run_imported
from zoo import SpikingResNet
from zoo.to_nir import DEFAULT_DT, _lif_node, export_nir, to_nir

SHIPPED = "sresnet19_narrow_tdbn.fashion_mnist_t2"  # a shipped checkpoint (weights/), T=2, 1x28x28, 10 classes


def euler(node, current: np.ndarray, dt: float) -> np.ndarray:
    """NIR's LIF/IF ODE (``tau dv/dt = (v_leak - v) + r I``, ``dv/dt = r I``), forward Euler with step dt,
    ``z = v > v_threshold``, then ``v = v_reset`` where it fired: written from NIR's docstrings."""
    v, out = np.zeros_like(current[0]), []
    for i in current:
        if isinstance(node, nir.LIF):
            v = v + dt / node.tau * ((node.v_leak - v) + node.r * i)
        else:
            v = v + dt * node.r * i
        z = v > node.v_threshold
        v = np.where(z, node.v_reset, v)
        out.append(z.astype(np.float64))
    return np.stack(out)


@pytest.mark.parametrize("k", [0.0, 0.25, 0.9, 1.0])
@pytest.mark.parametrize("dt", [DEFAULT_DT, 1.0])
def test_lif_mapping_reproduces_the_paper_neuron(k, dt):
    x = torch.randn(40, 64, dtype=torch.float64)
    lif = LIF(tau_decay=k, v_th=0.5)
    node = _lif_node(lif, (64,), dt)
    assert isinstance(node, nir.IF if k == 1.0 else nir.LIF)
    spikes = lif(x).numpy()
    assert 0.05 < spikes.mean() < 0.95
    np.testing.assert_array_equal(euler(node, x.numpy(), dt), spikes)


SMALL = dict(TINY, layers=(1, 2), T=4, num_classes=5)  # the tiny test architecture with two blocks in stage 2


def fused_small(**kw):
    model = SpikingResNet(**{**SMALL, **kw})
    for m in model.modules():
        if hasattr(m, "running_var"):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.rand(4, model.in_chans, 8, 8) * 2)
        for m in model.modules():
            if hasattr(m, "running_var"):
                m.weight.uniform_(0.8, 1.6)
    return zoo.fuse(model.eval())


@pytest.mark.parametrize("kw", [dict(), dict(block="bottleneck", channels=(4, 8), stem_width=16),
                                dict(identity_norm=False, head_hidden=None, neuron="spikingjelly")])
def test_round_trip_through_snntorch_importer_reproduces_the_fused_model(kw, tmp_path):
    fused = fused_small(**kw)
    path = export_nir(fused, tmp_path / "net.nir", input_size=(3, 8, 8))
    graph = nir.read(str(path))
    adds = [dst for dst in graph.nodes if sum(d == dst for _, d in graph.edges) == 2]
    assert len(adds) == sum(len(getattr(fused, f"layer{i}")) for i in (1, 2))  # one residual add per block
    assert graph.metadata["dt"] == DEFAULT_DT and graph.metadata["T"] == 4
    x = (torch.rand(4, 3, 3, 8, 8) < 0.4).float()  # [T, N, C, H, W] event-like frames
    rates = []
    hooks = [m.register_forward_hook(lambda mod, i, o: rates.append(o.mean().item()))
             for n, m in fused.named_modules() if n.split(".")[-1].startswith(("act", "head_act"))]
    with torch.no_grad():
        want = fused.forward_steps(x)
    for h in hooks:
        h.remove()
    assert all(0 < r < 1 for r in rates), rates  # every layer fires: the comparison is not of silence
    got = run_imported(import_from_nir(graph), x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_what_nir_cannot_express_is_refused(tmp_path):
    fused = fused_small()
    with pytest.raises(ValueError, match="NIR has no batch norm"):
        to_nir(SpikingResNet(**SMALL), (3, 8, 8))
    with pytest.raises(ValueError, match="input_size"):
        to_nir(SpikingResNet(**SMALL, fused=True))
    from spikingjelly.activation_based import neuron as sj
    odd = SpikingResNet(**SMALL, neuron=sj.IFNode(v_reset=None))  # soft reset: no NIR equivalent
    with pytest.raises(ValueError, match="NIR's LIF cannot express"):
        export_nir(odd, tmp_path / "x.nir", (3, 8, 8))
    assert not (tmp_path / "x.nir").exists()
    with pytest.raises(ValueError, match="channels"):
        to_nir(fused, (2, 8, 8))
    snn = make_neuron("snntorch", tau_decay=0.3, v_th=0.7)
    node = _lif_node(snn, (3,), 1.0)
    assert np.allclose(node.tau, 1 / 0.7) and np.allclose(node.v_threshold, 0.7)


def test_export_nir_command_on_a_checkpoint_folder(tmp_path, capsys):
    fused = fused_small()
    folder = zoo.save_pretrained(fused, tmp_path / "ckpt", tag="sresnet19_tdbn.cifar10_t2")
    out = tmp_path / "net.nir"
    assert cli(["export-nir", str(folder), str(out), "--input-size", "3", "8", "8"]) == 0
    # the command says how to run what it wrote (a user found the recipe only in this file's tests)
    assert f"zoo.to_nir.run_nir({str(out)!r}, images)" in capsys.readouterr().out
    x = (torch.rand(4, 2, 3, 8, 8) < 0.4).float()
    torch.testing.assert_close(run_imported(import_from_nir(nir.read(str(out))), x), fused.forward_steps(x),
                               rtol=0, atol=1e-5)
    assert cli(["export-nir", str(folder / "model.safetensors"), str(out)]) == 2  # a file, not a folder


def test_run_nir_on_a_batch_matches_the_models_predictions(tmp_path):
    """The documented way to run an export (zoo.to_nir.run_nir, snnTorch's importer): on a static batch it
    gives the fused model's logits (eq. 11: mean over T) and predictions, and on frames its per-step outputs."""
    from zoo.to_nir import run_nir

    fused = fused_small()
    path = export_nir(fused, tmp_path / "net.nir", input_size=(3, 8, 8))
    images = torch.rand(5, 3, 8, 8) * 2
    with torch.no_grad():
        want = fused(images)
    got = run_nir(path, images)  # T from the graph's metadata
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert torch.equal(got.argmax(1), want.argmax(1))
    frames = (torch.rand(4, 2, 3, 8, 8) < 0.4).float()
    logits, steps = run_nir(nir.read(str(path)), frames, steps=True)
    torch.testing.assert_close(steps, fused.forward_steps(frames), rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, steps.mean(0))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\] or \[T, N, C, H, W\]"):
        run_nir(path, torch.rand(3, 8, 8))


def test_export_nir_dt_sets_the_euler_time_constants(tmp_path, capsys):
    """``--dt 0.5``: every LIF node has ``tau = dt / (1 - k)`` and ``r = tau / dt`` (forward Euler of the paper's
    ``u[t] = k u[t-1] + I[t]``, k = tau_decay = 0.25)."""
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
    fused = zoo.create(SHIPPED, pretrained=True)
    assert_user_error(lambda: to_nir(fused, dt=dt), "dt must be a finite number > 0", f"got {dt!r}")
