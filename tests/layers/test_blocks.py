"""Residual blocks (Fig. 5b): structure, every backend, one state_dict for all, and the init statistics
the paper designs tdBN for."""
import math

import pytest
import torch

from adapters import (BACKENDS, LIF, BasicBlock, Bottleneck, MultiStepBatchNorm2d, TdBatchNorm2d,
                      make_neuron)

BLOCKS = [(BasicBlock, dict(in_channels=8, channels=8, stride=1)),
          (BasicBlock, dict(in_channels=8, channels=16, stride=2)),
          (Bottleneck, dict(in_channels=8, channels=4, stride=2)),
          (Bottleneck, dict(in_channels=16, channels=4, stride=1))]


def spikes(*shape, p=0.3):
    return (torch.rand(*shape) < p).float()


def test_basic_block_is_fig_5b():
    b = BasicBlock(8, 16, stride=2)
    assert (b.conv1.kernel_size, b.conv1.stride, b.conv2.kernel_size) == ((3, 3), (2, 2), (3, 3))
    assert b.bn1.alpha == 1.0
    assert b.bn2.alpha == pytest.approx(1 / math.sqrt(2)) and b.shortcut.bn.alpha == pytest.approx(1 / math.sqrt(2))
    assert b.shortcut.conv.kernel_size == (1, 1) and b.shortcut.conv.stride == (2, 2)
    ident = BasicBlock(8, 8)
    assert ident.shortcut.conv is None and isinstance(ident.shortcut.bn, TdBatchNorm2d)
    assert BasicBlock(8, 8, identity_norm=False).shortcut.bn is None
    assert BasicBlock(8, 16, 2, identity_norm=False).shortcut.bn is not None  # projections keep their norm
    bt = Bottleneck(8, 4, 2)
    assert bt.bn3.alpha == pytest.approx(1 / math.sqrt(2)) and bt.bn2.alpha == 1.0 and bt.conv3.out_channels == 16
    assert bt.conv2.stride == (2, 2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls,kw", BLOCKS)
def test_forward_backward_on_every_backend(cls, kw, backend):
    block = cls(**kw, neuron=backend)
    x = spikes(3, 2, kw["in_channels"], 8, 8).requires_grad_(True)
    y = block(x)
    out_ch = kw["channels"] * cls.expansion
    assert y.shape == (3, 2, out_ch, 8 // kw["stride"], 8 // kw["stride"])
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    (y * torch.randn_like(y)).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("cls,kw", BLOCKS)
def test_one_state_dict_identical_outputs_on_all_backends(cls, kw):
    ref = cls(**kw, neuron="native")
    for _ in range(3):  # non-trivial running statistics
        ref(spikes(3, 4, kw["in_channels"], 6, 6))
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, TdBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    sd = ref.state_dict()
    ref.eval()
    x = spikes(4, 2, kw["in_channels"], 6, 6)
    expected = ref(x)
    assert 0 < expected.mean() < 1
    for backend in ("spikingjelly", "snntorch"):
        other = cls(**kw, neuron=backend)
        other.load_state_dict(sd, strict=True)
        other.eval()
        assert set(other.state_dict()) == set(sd)
        assert torch.equal(other(x), expected), backend


@pytest.mark.parametrize("cls,kw", [(BasicBlock, dict(in_channels=32, channels=32)),
                                    (BasicBlock, dict(in_channels=32, channels=64, stride=2)),
                                    (Bottleneck, dict(in_channels=32, channels=16, stride=2))])
def test_neuron_inputs_start_at_mean_zero_std_vth(cls, kw):
    """The paper's motivation: with alpha = 1 and 1/sqrt(2) every neuron input starts ~ N(0, Vth^2)."""
    v_th = 0.5
    block = cls(**kw, v_th=v_th)
    seen = {}
    for name, m in block.named_modules():
        if isinstance(m, LIF):
            m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].detach()))
    block(spikes(4, 16, kw["in_channels"], 8, 8, p=0.2))
    assert len(seen) == cls.num_convs
    for name, u in seen.items():
        assert abs(u.mean().item()) < 0.02 * v_th, name
        assert u.std().item() == pytest.approx(v_th, rel=0.05), name


def test_without_shortcut_norm_the_final_input_is_not_normalised():
    # the contrast that motivates the extra tdBN: the raw spike identity adds its own mean and variance
    block = BasicBlock(32, 32, identity_norm=False)
    seen = {}
    block.act2.register_forward_hook(lambda m, inp, out: seen.setdefault("u", inp[0]))
    block(spikes(4, 16, 32, 8, 8, p=0.2))
    assert seen["u"].mean().item() == pytest.approx(0.2, abs=0.02)


def test_norm_and_neuron_injection():
    bn_block = BasicBlock(4, 4, norm="bn")
    assert isinstance(bn_block.bn2, MultiStepBatchNorm2d) and bn_block.bn2.scale == 1.0
    made = []

    def my_norm(num_features, alpha=1.0):
        made.append(alpha)
        return TdBatchNorm2d(num_features, alpha=alpha, v_th=1.0)

    BasicBlock(4, 8, 2, norm=my_norm)
    assert sorted(made) == sorted([1.0, 1 / math.sqrt(2), 1 / math.sqrt(2)])
    custom = BasicBlock(4, 4, neuron=lambda: make_neuron("native", v_th=0.3))
    assert custom.act1.v_th == 0.3 and custom.act1 is not custom.act2
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        BasicBlock(4, 4, norm="layer")


def test_block_rejects_bad_input():
    block = BasicBlock(4, 8, 2)
    with pytest.raises(ValueError, match=r"BasicBlock expects a multi-step tensor of shape \[T, N, C, H, W\]"):
        block(torch.rand(2, 4, 8, 8))
    with pytest.raises(ValueError, match="expects 4 channels at dim 2"):
        block(torch.rand(2, 2, 3, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        block(torch.ones(2, 2, 4, 8, 8, dtype=torch.uint8))
