"""zoo.fuse (eq. 9-10): the BN-free network gives the same spikes and logits as the eval-mode original."""
import re

import pytest
import torch

import zoo
from adapters import ChannelAffine, MultiStepBatchNorm2d, TdBatchNorm1d, TdBatchNorm2d
from tests.support.cli import assert_user_error
from tests.support.models import TINY
from zoo import SpikingResNet

NEURON = re.compile(r"(^|\.)(act\d+|head_act)$")
NORMS = (TdBatchNorm2d, TdBatchNorm1d, MultiStepBatchNorm2d)


def trained_like(model: SpikingResNet, x: torch.Tensor) -> SpikingResNet:
    """Non-trivial eval statistics: running stats = a real batch's statistics, random lambda/beta."""
    model = model.double()
    for m in model.modules():
        if isinstance(m, NORMS):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
        for m in model.modules():
            if isinstance(m, NORMS):
                m.weight.uniform_(0.6, 1.6)
                m.bias.normal_(0.0, 0.2)
    return model.eval()


def spikes_per_layer(model, x):
    out = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: out.__setitem__(n, o))
             for n, m in model.named_modules() if NEURON.search(n)]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return out, logits


def assert_same(model, fused, x):
    a, la = spikes_per_layer(model, x)
    b, lb = spikes_per_layer(fused, x)
    assert a.keys() == b.keys() and len(a) > 3
    rates = []
    for name in a:
        assert torch.equal(a[name], b[name]), f"spikes differ at {name}"
        rates.append(a[name].mean().item())
    assert all(0.0 < r < 1.0 for r in rates[:-1]), rates  # every layer fires, none saturates
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-12)


SIZES = {"sresnet17_tdbn": 8, "sresnet19_tdbn": 8, "sresnet34_tdbn": 16, "sresnet34_large_tdbn": 16,
         "sresnet50_tdbn": 16}


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in ("sresnet34_large_tdbn", "sresnet50_tdbn")
                                  else a for a in zoo.ARCH_CFGS])  # the two widest at 16x16 are the slow ones
def test_fused_equals_unfused_every_architecture(arch):
    model = zoo.create(arch, T=2)
    size = SIZES.get(arch, 8)
    x = torch.rand(2, model.in_chans, size, size, dtype=torch.float64) * 2
    model = trained_like(model, x)
    fused = zoo.fuse(model)
    assert fused.fused and fused.pretrained_cfg["fused"] and fused.model_args["fused"]
    assert not any(isinstance(m, NORMS) for m in fused.modules())
    assert not any(t.is_meta for t in list(fused.parameters()) + list(fused.buffers()))
    assert_same(model, fused, x)


SMALL = dict(TINY, layers=(1, 2), T=3, num_classes=5)  # the tiny test architecture with two blocks in stage 2


@pytest.mark.parametrize("neuron", ["native", "spikingjelly", "snntorch"])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_fused_equals_unfused_every_backend(neuron, block):
    args = dict(SMALL, block=block, neuron=neuron)
    if block == "bottleneck":
        args.update(channels=(4, 8), stem_width=16)  # stage 1 keeps 16 channels: an identity shortcut
    x = torch.rand(3, 2, 3, 8, 8, dtype=torch.float64) * 2  # [T, N, C, H, W] event-like frames
    model = trained_like(SpikingResNet(**args), x)
    fused = zoo.fuse(model)
    assert type(fused.act1) is type(model.act1)
    assert any(isinstance(m, ChannelAffine) for m in fused.modules())  # identity-shortcut tdBN kept as affine
    assert_same(model, fused, x)


def test_fold_is_eq_9_10():
    """W' = lambda*alpha*Vth*W/sqrt(var+eps), B' = lambda*alpha*Vth*(0 - mu)/sqrt(var+eps) + beta, by hand."""
    model = SpikingResNet(**SMALL).eval()
    bn, conv = model.layer2[0].bn2, model.layer2[0].conv2
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    sd = zoo.fuse(model).state_dict()
    lam, beta, mu, var = bn.weight, bn.bias, bn.running_mean, bn.running_var
    scale = lam * bn.alpha * bn.v_th / torch.sqrt(var + bn.eps)
    assert bn.alpha == pytest.approx(2 ** -0.5) and bn.v_th == 0.5
    torch.testing.assert_close(sd["layer2.0.conv2.weight"], conv.weight * scale[:, None, None, None])
    torch.testing.assert_close(sd["layer2.0.conv2.bias"], scale * (0 - mu) + beta)
    assert not any(k.startswith("layer2.0.bn2") for k in sd)


def test_fused_layout_builds_from_its_config():
    model = SpikingResNet(**dict(SMALL, block="bottleneck", channels=(4, 8), stem_width=16))
    fused = zoo.fuse(model)
    rebuilt = SpikingResNet(**fused.model_args)  # model_args is JSON data: what config.json records
    assert rebuilt.fused
    own = {k: v.shape for k, v in rebuilt.state_dict().items()}
    assert own == {k: v.shape for k, v in fused.state_dict().items()}
    assert "conv1.bias" in own and "layer1.0.shortcut.bn.weight" in own and "head_fc.bias" in own
    assert not any("running" in k for k in own)


def test_fuse_leaves_the_model_alone_and_refuses_what_it_cannot_fold():
    model = SpikingResNet(**SMALL).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    zoo.fuse(model)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(TypeError, match="SpikingResNet"):
        zoo.fuse(torch.nn.Linear(2, 2))

    class Scale(torch.nn.Module):  # a user norm without folded_affine()
        def __init__(self, n, alpha=1.0):
            super().__init__()

        def forward(self, x):
            return 2 * x

    with pytest.raises(TypeError, match="folded_affine"):
        zoo.fuse(SpikingResNet(**dict(SMALL, norm=Scale)))


# --- zoo.unfuse: norms back in a fused network, for training -----------------------------------------------
def spikes_in_mode(model, x, training: bool):
    model.train(training)
    return spikes_per_layer(model, x)


@pytest.mark.parametrize("norm", ["tdbn", "bn"])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_unfuse_gives_the_fused_spikes_in_training_and_eval_mode(norm, block):
    args = dict(SMALL, block=block, norm=norm)
    if block == "bottleneck":
        args.update(channels=(4, 8), stem_width=16)
    x = torch.rand(3, 4, 3, 8, 8, dtype=torch.float64) * 2
    fused = zoo.fuse(trained_like(SpikingResNet(**args), x))
    calib, other = x[:, :2], x[:, 2:]
    plain = zoo.unfuse(fused, calib)
    assert not plain.fused and plain.training and plain.model_args["norm"] == norm
    assert sum(isinstance(m, NORMS) for m in plain.modules()) == len(
        [n for n, _ in SpikingResNet(**args).named_modules() if re.search(r"(^|\.)(head_)?bn\d*$", n)])
    # training mode, batch statistics of the calibration batch: the fused network's spikes and logits
    a, la = spikes_in_mode(fused, calib, False)
    b, lb = spikes_in_mode(zoo.unfuse(fused, calib), calib, True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-10)
    # eval mode, running statistics: the same on any input
    a, la = spikes_in_mode(fused, other, False)
    b, lb = spikes_in_mode(plain, other, False)
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-10)


def test_unfuse_sets_lambda_from_the_calibration_statistics():
    """By hand for the encoding layer: tdBN in training mode normalises conv1's current by its batch std and
    scales by alpha*Vth = 0.5, so lambda = std / 0.5 and beta = the fused current's mean restore it."""
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2  # static images: the same current at every step
    fused = zoo.fuse(trained_like(SpikingResNet(**SMALL), x))
    plain = zoo.unfuse(fused, x)
    current = torch.nn.functional.conv2d(x, fused.conv1.weight, padding=1)  # no bias
    mean, var = current.mean((0, 2, 3)), current.var((0, 2, 3), unbiased=False)
    torch.testing.assert_close(plain.bn1.weight.detach(), torch.sqrt(var + 1e-5) / 0.5)
    torch.testing.assert_close(plain.bn1.bias.detach(), mean + fused.conv1.bias)
    torch.testing.assert_close(plain.bn1.running_mean, mean)
    torch.testing.assert_close(plain.bn1.running_var, var)
    torch.testing.assert_close(plain.conv1.weight, fused.conv1.weight)
    assert plain.head_fc.bias.abs().sum() == 0  # the folded bias moved into head_bn's beta


def test_unfuse_refuses_bad_input_and_copies_an_unfused_model():
    model = SpikingResNet(**SMALL)
    fused = zoo.fuse(model)
    for bad in (torch.zeros(3, 0, 3, 8, 8), torch.zeros(8, 8), "images"):
        with pytest.raises(ValueError, match="calibration batch"):
            zoo.unfuse(fused, bad)
    with pytest.raises(ValueError, match="norm"):
        zoo.unfuse(fused, torch.rand(2, 3, 8, 8), norm="layernorm")
    with pytest.raises(TypeError, match="SpikingResNet"):
        zoo.unfuse(torch.nn.Linear(2, 2), torch.rand(2, 2))
    copy_ = zoo.unfuse(model, torch.rand(2, 3, 8, 8))
    assert copy_ is not model and all(torch.equal(v, model.state_dict()[k]) for k, v in copy_.state_dict().items())


def test_trainer_refuses_a_fused_model():
    from eval.train.trainer import Trainer
    with pytest.raises(ValueError, match="zoo.unfuse"):
        Trainer(zoo.fuse(SpikingResNet(**SMALL)), [])


@pytest.mark.parametrize("stat,value,needle", [("running_var", float("nan"), "non-finite"),
                                               ("running_mean", float("inf"), "non-finite"),
                                               ("running_var", -0.5, "negative running variance")])
def test_fuse_refuses_statistics_that_cannot_fold(stat, value, needle):
    model = SpikingResNet(layers=(1,), channels=(4,), strides=(1,), stem_width=4, head_hidden=None, num_classes=3,
                          T=2).eval()
    getattr(model.layer1[0].bn1, stat)[1] = value
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert_user_error(lambda: zoo.fuse(model), "zoo.fuse", r"layer1\.0\.bn1", needle)
    torch.testing.assert_close(model.state_dict(), before, rtol=0, atol=0, equal_nan=True)  # left untouched
