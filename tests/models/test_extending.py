"""A new block and a new neuron type, defined here, outside the package, in one place each: the zoo fuses,
unfuses, exports to NIR and measures them without any change to its own files (the module-owned
transformations of ``adapters.fusion`` / ``adapters.nir_export`` and the neuron protocol of
``adapters.neurons``)."""
import nir
import numpy as np
import pytest
import torch
from snntorch.import_nir import import_from_nir
from torch import nn

import zoo
from adapters import RESIDUAL_ALPHA, ChannelAffine, TdBatchNorm1d, TdBatchNorm2d, seq_apply
from adapters.fusion import NormSlot
from adapters.neurons import copy_neurons, is_neuron, lif_params, neuron_modules
from eval.measure.metrics import SpikeRecorder
from tests.support.models import TINY
from tests.support.nir import run_imported
from zoo import SpikingResNet
from zoo.to_nir import to_nir

pytestmark = pytest.mark.usefixtures("one_thread")


class HardLIF(nn.Module):
    """A new neuron type: the paper's LIF written out step by step (no surrogate; enough for inference)."""
    is_spiking_neuron = True

    def __init__(self, k: float = 0.5, v_th: float = 0.4):
        super().__init__()
        self.k, self.v_th = k, v_th

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, out = torch.zeros_like(x[0]), []
        for x_t in x:
            u = self.k * u * (1 - out[-1]) + x_t if out else x_t
            out.append((u > self.v_th).to(x.dtype))
        return torch.stack(out)

    def lif_params(self):
        return self.k, self.v_th


class ConvResidual(nn.Module):
    """A new block: ``x -> act(tdBN(conv3x3(x)) + x)``, its transformations declared here."""

    def __init__(self, channels: int, neuron: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.norm = TdBatchNorm2d(channels, alpha=RESIDUAL_ALPHA)
        self.act = neuron

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(seq_apply(self.conv, x)) + x)

    def norm_slots(self):
        return (NormSlot("norm", "conv", RESIDUAL_ALPHA),)

    def to_nir(self, graph, name, src, shape):
        x, x_shape = graph.conv(f"{name}.conv", self.conv, src, shape)
        return graph.neuron(f"{name}.act", self.act, x_shape, x, src)  # two inputs: the residual add


SMALL = dict(TINY, layers=(1, 2), T=4, num_classes=5)  # the tiny test architecture with two blocks in stage 2


def model_with_new_parts() -> SpikingResNet:
    model = SpikingResNet(**SMALL).double()
    model.layer2[1] = ConvResidual(16, HardLIF()).double()  # 16 -> 16 channels, same place as the old block
    model.act1 = HardLIF(k=0.25, v_th=0.5)
    return model


def trained_like(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Running statistics of a real batch, random lambda/beta: a fold that is not the identity."""
    norms = [m for m in model.modules() if isinstance(m, (TdBatchNorm1d, TdBatchNorm2d))]
    for m in norms:
        m.momentum = 1.0
    with torch.no_grad():
        model.train()(x)
        for m in norms:
            m.weight.uniform_(0.8, 1.6)
            m.bias.normal_(0.0, 0.2)
    return model.eval()


def spikes(model: nn.Module, x: torch.Tensor):
    """Every neuron's output (found through the neuron protocol) and the logits."""
    out = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: out.__setitem__(n, o)) for n, m in neuron_modules(model)]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return out, logits


def test_the_neuron_protocol_recognises_a_new_neuron_type():
    model = model_with_new_parts()
    names = [n for n, _ in neuron_modules(model)]
    assert names[0] == "act1" and "layer2.1.act" in names and "layer2.1.act1" not in names
    assert is_neuron(HardLIF()) and not is_neuron(nn.ReLU())
    assert lif_params(model.layer2[1].act) == (0.5, 0.4)
    with pytest.raises(ValueError, match="NIR's LIF cannot express"):
        lif_params(nn.ReLU())
    twin = SpikingResNet(**SMALL)
    twin.layer2[1] = ConvResidual(16, nn.Identity())
    twin.layer2[1].act = HardLIF(0.9, 0.9)
    copy_neurons(model, twin)
    assert twin.layer2[1].act.k == 0.5 and twin.layer2[1].act is not model.layer2[1].act
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2
    with SpikeRecorder(model.eval()) as rec:  # the firing-rate metrics see the new neurons
        with torch.no_grad():
            model(x)
    recorded = {a.name: a for a in rec.layers()}
    assert set(recorded) == set(names)
    want = spikes(model, x)[0]["layer2.1.act"]
    assert recorded["layer2.1.act"].spikes == want.sum().item() > 0


def test_a_new_block_fuses_unfuses_and_exports_to_nir(tmp_path):
    x = torch.rand(4, 4, 3, 8, 8, dtype=torch.float64) * 2  # [T, N, C, H, W]
    model = trained_like(model_with_new_parts(), x)
    block = model.layer2[1]
    # fuse: eq. 9-10 by hand on the new block, and the whole network spike for spike
    fused = zoo.fuse(model)
    fb = fused.layer2[1]
    a = block.norm.weight * block.norm.scale / torch.sqrt(block.norm.running_var + block.norm.eps)
    torch.testing.assert_close(fb.conv.weight, block.conv.weight * a[:, None, None, None])
    torch.testing.assert_close(fb.conv.bias, block.norm.bias - a * block.norm.running_mean)
    assert isinstance(fb.norm, nn.Identity) and type(fb.act) is HardLIF
    assert not any(isinstance(m, (TdBatchNorm1d, TdBatchNorm2d)) for m in fused.modules())
    assert any(isinstance(m, ChannelAffine) for m in fused.modules())  # layer1.0's identity shortcut
    want, want_logits = spikes(model, x)
    got, got_logits = spikes(fused, x)
    assert want.keys() == got.keys() and "layer2.1.act" in got
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert 0 < want["layer2.1.act"].mean() < 1
    torch.testing.assert_close(got_logits, want_logits, rtol=0, atol=1e-10)
    # unfuse: the new block gets its tdBN back, with the alpha it declared, and agrees with the fused net
    calib, other = x[:, :2], x[:, 2:]
    plain = zoo.unfuse(fused, calib)
    ub = plain.layer2[1]
    assert isinstance(ub.norm, TdBatchNorm2d) and ub.norm.alpha == pytest.approx(RESIDUAL_ALPHA)
    assert ub.conv.bias is None and plain.training
    a_, la = spikes(fused, other)
    b_, lb = spikes(plain.eval(), other)
    assert all(torch.equal(a_[k], b_[k]) for k in a_)
    torch.testing.assert_close(lb, la, rtol=0, atol=1e-10)
    # NIR: the block's own nodes, its residual add, its neuron's parameters; an independent runner agrees
    graph = to_nir(fused, (3, 8, 8))
    assert {"layer2.1.conv", "layer2.1.act"} <= set(graph.nodes)
    assert sorted(s for s, d in graph.edges if d == "layer2.1.act") == ["layer2.0.act2", "layer2.1.conv"]
    node = graph.nodes["layer2.1.act"]
    dt = graph.metadata["dt"]
    assert isinstance(node, nir.LIF) and np.allclose(node.tau, dt / 0.5) and np.allclose(node.v_threshold, 0.4)
    frames = (torch.rand(4, 2, 3, 8, 8) < 0.4).float()
    fused32 = fused.float()
    with torch.no_grad():
        want_steps = fused32.forward_steps(frames)
    torch.testing.assert_close(run_imported(import_from_nir(graph), frames), want_steps, rtol=0, atol=1e-5)
    # a float32 network unfuses to float32 (statistics are gathered in float64, stored in the model's dtype)
    plain32 = zoo.unfuse(fused32, frames)
    assert {t.dtype for t in list(plain32.parameters()) + list(plain32.buffers()) if t.is_floating_point()} == {
        torch.float32}
