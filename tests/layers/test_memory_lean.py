"""Memory-lean training (adapters.norm_lif, adapters.memory_lean): the same spikes and gradients as the
layer-by-layer path, bit for bit, with only the norm inputs and bool spikes saved for backward."""
import copy

import pytest
import torch
import torch.nn.functional as F

import zoo
from adapters import LIF, MultiStepBatchNorm1d, SpikeConv2d, TdBatchNorm2d, lean_training
from adapters._checks import value_checks
from adapters.norm_lif import Residual, fire
from eval.bench.runner import saved_for_backward_bytes
from eval.measure.metrics import SpikeRecorder
from zoo.spiking_resnet import ARCH_CFGS

pytestmark = pytest.mark.usefixtures("one_thread")


def _layer(dtype, residual, detach_reset, layout, seed=0):
    """A norm -> LIF layer's inputs; returns a function running it and the tensors to compare."""
    g = torch.Generator().manual_seed(seed)
    shape = (3, 2, 6, 5, 5)
    bn, bn_s = TdBatchNorm2d(6).to(dtype), TdBatchNorm2d(6, alpha=2 ** -0.5).to(dtype)
    with torch.no_grad():
        for m in (bn, bn_s):
            m.weight.copy_(torch.rand(6, generator=g, dtype=dtype) + 0.5)
            m.bias.copy_(torch.rand(6, generator=g, dtype=dtype) - 0.5)
    z = torch.randn(shape, generator=g, dtype=dtype)
    if layout == "channels_last":
        z = z.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, shape[:2])
    elif layout == "expanded":  # the stem: one conv output repeated over T
        z = z[:1].expand(shape)
    z.requires_grad_(True)
    x = torch.randint(0, 2, shape, generator=g).to(dtype).requires_grad_(True)
    lif = LIF(detach_reset=detach_reset)
    grad = torch.randn(shape, generator=g, dtype=dtype)

    def run():
        res = None if residual is None else Residual(x, bn_s if residual == "norm" else None, binary=True)
        s = fire(lif, bn, z, res)
        s.backward(grad)
        return [s, z.grad, x.grad, bn.weight.grad, bn.bias.grad, bn_s.weight.grad, bn_s.bias.grad,
                bn.running_mean, bn.running_var, bn_s.running_mean, bn_s.running_var]
    return run


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("residual", [None, "norm", "raw"])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "expanded"])
def test_fused_layer_is_bit_identical_to_layer_by_layer(dtype, residual, detach_reset, layout):
    with lean_training(True):
        lean = _layer(dtype, residual, detach_reset, layout)()
    with lean_training(False):
        ref = _layer(dtype, residual, detach_reset, layout)()
    assert 0 < float(ref[0].detach().mean()) < 1  # the layer fires, and not everywhere
    for a, b in zip(lean, ref):
        assert (a is None and b is None) or torch.equal(a, b)


def test_fused_layer_gradient_matches_autograd_of_the_equations():
    """Independent of both implementations: the paper's equations in float64, differentiated by autograd
    with the rectangular surrogate (adapters.lif.lif_reference), agree with the fused node."""
    from adapters.lif import lif_reference

    torch.manual_seed(3)
    z = torch.randn(4, 2, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(5, dtype=torch.float64) + 0.5).requires_grad_(True)
    bn = TdBatchNorm2d(5).double()
    with torch.no_grad():
        bn.weight.copy_(w)
    grad = torch.randn(4, 2, 5, 3, 3, dtype=torch.float64)
    s = fire(LIF(), bn, z)
    s.backward(grad)
    dims = (0, 1, 3, 4)
    mean, var = z.mean(dims, keepdim=True), z.var(dims, unbiased=False, keepdim=True)
    y = 0.5 * w.view(1, 1, 5, 1, 1) * (z - mean) / torch.sqrt(var + 1e-5)   # alpha * Vth = 0.5
    s_ref = lif_reference(y, 0.25, 0.5, 1.0)
    gz, gw = torch.autograd.grad(s_ref, (z, w), grad)
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(z.grad, gz, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(bn.weight.grad, gw, rtol=1e-9, atol=1e-12)


def test_fused_layer_saves_only_the_norm_input_and_bool_spikes():
    shape = (4, 2, 6, 5, 5)
    z = torch.randn(shape, requires_grad=True)
    x = torch.randint(0, 2, shape).float().requires_grad_(True)
    bn, bn_s = TdBatchNorm2d(6), TdBatchNorm2d(6)
    params = torch.nn.ModuleList([bn, bn_s])
    saved = saved_for_backward_bytes(lambda: fire(LIF(), bn, z, Residual(x, bn_s, binary=True)), params)
    # z in float32 + x as bool (the scaled weights weight*alpha*Vth are 2 x 6 floats, each norm's batch mean
    # and invstd 2 x 2 x 6 floats)
    assert saved == z.numel() * 4 + x.numel() + 2 * 6 * 4 + 4 * 6 * 4
    with lean_training(False):
        ref = saved_for_backward_bytes(lambda: fire(LIF(), bn, z, Residual(x, bn_s, binary=True)), params)
    assert ref >= 3 * z.numel() * 4  # layer by layer: z, x and the membranes, all float32


def test_spike_conv_saves_bool_input_and_matches_conv2d():
    torch.manual_seed(0)
    conv = SpikeConv2d(4, 6, 3, stride=2, padding=1, bias=True)
    ref = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=True)
    ref.load_state_dict(conv.state_dict())
    x = torch.randint(0, 2, (3, 4, 9, 9)).float()
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    grad = torch.randn(3, 6, 5, 5)
    assert saved_for_backward_bytes(lambda: conv(xa), conv) == x.numel()  # one byte per spike
    conv(xa).backward(grad)
    ref(xb).backward(grad)
    assert torch.equal(xa.grad, xb.grad)
    assert torch.equal(conv.weight.grad, ref.weight.grad) and torch.equal(conv.bias.grad, ref.bias.grad)


def test_spike_conv_refuses_non_binary_input_with_value_checks_on():
    conv = SpikeConv2d(2, 2, 1)
    with value_checks(), pytest.raises(ValueError, match="expects spikes"):
        conv(torch.full((1, 2, 3, 3), 0.5))
    conv(torch.full((1, 2, 3, 3), 0.5))  # by default no host read in training: the contract is the caller's


def test_dense_head_norm_fuses_too():
    """``[T, N, C]`` (the fc-256 head's 1-D tdBN) through the same node."""
    def run():
        torch.manual_seed(1)
        bn = MultiStepBatchNorm1d(7)
        z = torch.randn(3, 4, 7, requires_grad=True)
        s = fire(LIF(), bn, z)
        s.sum().backward()
        return s, z.grad, bn.running_var
    with lean_training(True):
        lean = run()
    with lean_training(False):
        ref = run()
    assert all(torch.equal(a, b) for a, b in zip(lean, ref))


def _tiny(arch, **kw):
    stages = len(ARCH_CFGS[arch]["layers"])
    args = dict(channels=(4,) * stages, stem_width=4, layers=(2,) + (1,) * (stages - 1), T=2, num_classes=5)
    if ARCH_CFGS[arch]["head_hidden"]:
        args["head_hidden"] = 8
    return zoo.create(arch, **{**args, **kw})


@pytest.mark.parametrize("arch", ["sresnet19_tdbn", "sresnet34_tdbn", "sresnet50_tdbn"])
def test_training_step_of_every_block_type_is_bit_identical(arch):
    model = _tiny(arch)
    ref = copy.deepcopy(model)
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 3])
    counts = []
    for m, lean in ((model, True), (ref, False)):
        m.train()
        with lean_training(lean), SpikeRecorder(m) as rec:
            loss = F.cross_entropy(m(x), y)
            loss.backward()
        counts.append([(a.name, a.spikes) for a in rec.layers()])
    assert counts[0] == counts[1] and len(counts[0]) > 3  # the neurons' forward hooks still fire
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad), name
    for (name, b), c in zip(model.named_buffers(), ref.buffers()):
        assert torch.equal(b, c), name
    full = _tiny(arch).train()
    lean_bytes = saved_for_backward_bytes(lambda: F.cross_entropy(full(x), y), full)
    with lean_training(False):
        ref_bytes = saved_for_backward_bytes(lambda: F.cross_entropy(full(x), y), full)
    assert lean_bytes < 0.6 * ref_bytes


@pytest.mark.parametrize("neuron", ["spikingjelly", "snntorch"])
def test_other_neuron_backends_train_unfused_with_the_same_gradients(neuron):
    """The fused node is the native LIF's; SpikingJelly/snnTorch neurons take the layer-by-layer path and
    still give the native model's gradients (float64: the backends sum in different orders)."""
    native = _tiny("sresnet19_tdbn").double().train()
    other = _tiny("sresnet19_tdbn", neuron=neuron).double().train()
    other.load_state_dict(native.state_dict())
    x, y = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.tensor([1, 3])
    for m in (native, other):
        F.cross_entropy(m(x), y).backward()
    for (name, p), q in zip(native.named_parameters(), other.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_bf16_autocast_training_is_the_same_with_and_without_the_lean_path():
    model = _tiny("sresnet19_tdbn")
    ref = copy.deepcopy(model)
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 3])
    for m, lean in ((model, True), (ref, False)):
        with lean_training(lean):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(m(x).float(), y)
            loss.backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad), name


@pytest.mark.parametrize("case", ["shortcut_norm"] + [pytest.param(c, marks=pytest.mark.slow) for c in
                                                       ("plain", "shortcut_raw_detached", "expanded", "channels_last")])
def test_fused_op_registration_passes_opcheck(case):
    """torch.library.opcheck: schema, fake implementation (shapes, strides, dtypes) against the real one,
    autograd registration and AOT dispatch -- what torch.compile relies on."""
    shape = (3, 2, 6, 5, 5)
    z = torch.randn(shape)
    if case == "expanded":
        z = z[:1].expand(shape)
    if case == "channels_last":
        z = z.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, shape[:2])
    z.requires_grad_(True)
    w, b = torch.rand(6, requires_grad=True), torch.rand(6, requires_grad=True)
    x = torch.randint(0, 2, shape).float().requires_grad_(True)
    ws, bs = torch.rand(6, requires_grad=True), torch.rand(6, requires_grad=True)
    with torch.no_grad():
        u, mean, invstd = torch.ops.aten.native_batch_norm(z.detach().flatten(0, 1), w, b, None, None, True, 0.0,
                                                           1e-5)
        u = u.unflatten(0, shape[:2])
        mean_s, invstd_s = torch.ops.aten.native_batch_norm(x.detach().flatten(0, 1), ws, bs, None, None, True, 0.0,
                                                            1e-5)[1:]
    shortcut = {"shortcut_norm": (x, ws, bs, 1e-5, mean_s, invstd_s, True),
                "shortcut_raw_detached": (x, None, None, 0.0, None, None, True)}
    zs, wsa, bsa, eps_s, ms, ivs, binary = shortcut.get(case, (None, None, None, 0.0, None, None, False))
    for stats in ((mean, invstd), (None, None)):  # the forward's statistics reused, or recomputed
        args = (u, z, w, b, 1e-5, *stats, zs, wsa, bsa, eps_s, *((ms, ivs) if stats[0] is not None else stats),
                binary, 0.25, 0.5, 1.0, case == "shortcut_raw_detached")
        torch.library.opcheck(torch.ops.tdbn_zoo.norm_lif_fwd.default, args)


def test_training_norm_equals_torch_batch_norm_bit_for_bit():
    """The multi-step norm's training output and running statistics are F.batch_norm's on the T*N merged
    batch with weight * alpha * Vth (the kernel the fused node recomputes y with in backward)."""
    torch.manual_seed(2)
    bn = TdBatchNorm2d(6, alpha=0.7)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-1, 1)
    x = torch.randn(3, 4, 6, 7, 7) * 2 + 0.5
    rm, rv = torch.zeros(6), torch.ones(6)
    ref = F.batch_norm(x.flatten(0, 1), rm, rv, bn.weight * 0.35, bn.bias, True, 0.1, 1e-5).unflatten(0, (3, 4))
    assert torch.equal(bn.train()(x), ref)
    assert torch.equal(bn.running_mean, rm) and torch.equal(bn.running_var, rv)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sequence", "transposed"])
def test_backward_rebuilds_the_norm_from_the_forward_statistics_bit_for_bit(dtype, layout):
    """Backward rebuilds ``y`` from the forward's batch mean and invstd (no second statistics pass) in the
    layouts ATen's CPU kernel walks directly, and recomputes everything elsewhere: either way the bits of the
    norm module's training output. Channel counts and image sizes leave vector tails."""
    from adapters.norm_lif import _normalise, _transform_only

    torch.manual_seed(3)
    for C, HW in ((6, 5), (19, 7), (40, 3)):
        x = torch.randn(3, 4, C, HW, HW) * torch.rand(C, 1, 1) * 5 + torch.randn(C, 1, 1)
        x[:, :, 0] = 0.25  # a constant channel: variance 0
        flat = x.flatten(0, 1).to(dtype)
        if layout == "channels_last":
            flat = flat.contiguous(memory_format=torch.channels_last)
        elif layout == "sequence":  # TdBatchNorm1d's [T*N, C, L]
            flat = flat.flatten(2)
        elif layout == "transposed":
            flat = flat.transpose(2, 3)
        bn = (TdBatchNorm2d(C) if flat.dim() == 4 else MultiStepBatchNorm1d(C)).train()
        if dtype == torch.float64:
            bn.double()  # bfloat16 input keeps float32 parameters, as under autocast
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-1, 1)
            y = bn(flat.unflatten(0, (3, 4)))
        mean, invstd = bn.batch_stats
        assert _transform_only(flat) == (layout != "transposed")
        rebuilt, m, s = _normalise(flat.unflatten(0, (3, 4)), bn.scaled_weight().detach(), bn.bias.detach(), bn.eps,
                                   mean, invstd)
        assert torch.equal(rebuilt, y) and torch.equal(m, mean) and torch.equal(s, invstd)


def test_fused_backward_runs_no_statistics_pass_on_cpu(monkeypatch):
    """The point of keeping the forward's statistics: backward's only batch-norm kernel calls are the
    transform (eval mode), never a training-mode call that reduces over the batch again."""
    calls = []
    native = torch.native_batch_norm

    def record(*args):
        calls.append(args[5])  # training
        return native(*args)

    for layout in ("contiguous", "channels_last"):
        s, _z, x = _fired(layout)
        calls.clear()
        monkeypatch.setattr(torch, "native_batch_norm", record)
        s.backward(torch.ones_like(s))
        monkeypatch.undo()
        assert calls == [False, False], layout  # the main norm and the shortcut norm, transform only


def _fired(layout):
    shape = (3, 2, 16, 6, 6)
    z = torch.randn(shape)
    if layout == "channels_last":
        z = z.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, shape[:2])
    z.requires_grad_(True)
    x = torch.randint(0, 2, shape).float().requires_grad_(True)
    bn, bn_s = TdBatchNorm2d(16), TdBatchNorm2d(16)
    with lean_training(True):
        return fire(LIF(), bn, z, Residual(x, bn_s, binary=True)), z, x
