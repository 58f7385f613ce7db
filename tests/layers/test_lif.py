"""The LIF neuron (eq. 2-3, surrogate eq. 16) against a NumPy reference with hand-derived BPTT, and the
SpikingJelly / snnTorch bridges against it."""
import gc

import numpy as np
import pytest
import torch
from torch import nn

from adapters import BACKENDS, LIF, make_neuron, neuron_factory, wrap_neuron

TAU, VTH, WIDTH = 0.25, 0.5, 1.0


def numpy_lif(x, g, tau=TAU, v_th=VTH, a=WIDTH, detach_reset=False):
    """Forward eq. 2-3 and the exact backward of L = sum(g * o) with the rectangular surrogate."""
    T = x.shape[0]
    u, o = np.zeros_like(x), np.zeros_like(x)
    for t in range(T):
        prev = tau * u[t - 1] * (1 - o[t - 1]) if t else 0.0
        u[t] = prev + x[t]
        o[t] = (u[t] > v_th).astype(x.dtype)
    dsig = (np.abs(u - v_th) < a / 2) / a
    du_next = np.zeros_like(x[0])  # dL/du[t+1]
    dx = np.zeros_like(x)
    for t in reversed(range(T)):
        keep = 1 - o[t]
        do = g[t] + (0 if detach_reset or t == T - 1 else du_next * (-tau * u[t]))
        du = do * dsig[t] + (du_next * tau * keep if t < T - 1 else 0)
        dx[t] = du
        du_next = du
    return o, dx


@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_spikes_and_surrogate_gradients_match_reference(backend, detach_reset):
    rng = np.random.default_rng(1)
    x = (rng.normal(0.3, 0.6, size=(8, 3, 40))).astype(np.float64)
    g = rng.normal(size=x.shape)
    o_ref, dx_ref = numpy_lif(x, g, detach_reset=detach_reset)

    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    neuron = make_neuron(backend, tau_decay=TAU, v_th=VTH, surrogate_width=WIDTH, detach_reset=detach_reset).double()
    o = neuron(xt)
    (o * torch.tensor(g)).sum().backward()
    assert o.shape == xt.shape
    assert torch.equal(o.detach(), torch.tensor(o_ref))
    torch.testing.assert_close(xt.grad, torch.tensor(dx_ref), atol=1e-10, rtol=1e-10)


def test_hand_checked_trace():
    # u: 0.4 | 0.25*0.4+0.3 = 0.4 | 0.1+0.6 = 0.7 fire | reset: 0.2 | 0.25*0.2+0.5 = 0.55 fire
    x = torch.tensor([0.4, 0.3, 0.6, 0.2, 0.5]).view(5, 1)
    assert LIF()(x).flatten().tolist() == [0.0, 0.0, 1.0, 0.0, 1.0]
    assert LIF()(torch.tensor([[0.5]])).item() == 0.0  # u == Vth does not fire (strict >)


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_inputs_give_identical_spikes_on_every_backend(backend):
    x = torch.randn(6, 4, 8, 5, 5) * 0.7 + 0.3
    ref = LIF()(x)
    out = make_neuron(backend)(x)
    assert torch.equal(out, ref)
    assert 0.05 < ref.mean() < 0.6  # a meaningful mix of spikes and silence


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_state_leaks_between_calls(backend):
    n = make_neuron(backend)
    x1, x2 = torch.rand(5, 2, 7) + 0.2, torch.rand(5, 3, 7) + 0.2
    first = n(x1)
    n(x2)  # another sequence (even another batch size) in between
    assert torch.equal(n(x1), first)
    assert list(n.state_dict()) == []  # nothing backend-specific is saved


def test_snntorch_neurons_are_not_kept_alive_by_the_class_list():
    from snntorch._neurons.neurons import SpikingNeuron

    before = len(SpikingNeuron.instances)
    for _ in range(5):
        make_neuron("snntorch")
    gc.collect()
    assert len(SpikingNeuron.instances) == before


def test_user_neurons_instance_or_factory_are_wrapped():
    import snntorch
    from spikingjelly.activation_based import neuron, surrogate

    x = torch.randn(5, 2, 6) + 0.3
    ref = LIF()(x)
    sj_single_step = neuron.LIFNode(tau=1 / (1 - TAU), decay_input=False, v_threshold=VTH, v_reset=0.0,
                                    surrogate_function=surrogate.Rect(alpha=1.0))  # step_mode 's'
    for spec in (sj_single_step, lambda: snntorch.Leaky(beta=TAU, threshold=VTH, reset_mechanism="zero")):
        make = neuron_factory(spec)
        a, b = make(), make()
        assert a is not b
        assert torch.equal(a(x), ref) and torch.equal(a(x), ref)  # run twice: state is reset


def test_plain_multistep_module_passes_through():
    m = nn.Identity()
    assert wrap_neuron(m) is m


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown neuron backend 'brian'.*native, spikingjelly, snntorch"):
        make_neuron("brian")
    with pytest.raises(ValueError, match="tau_decay"):
        LIF(tau_decay=1.5)
    with pytest.raises(ValueError, match="v_th"):
        LIF(v_th=0)
    with pytest.raises(TypeError, match="floating-point"):
        LIF()(torch.ones(3, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\[T, N, \.\.\.\]"):
        LIF()(torch.ones(3))
    with pytest.raises(TypeError, match="backend name"):
        neuron_factory(3)


@pytest.fixture(params=["kernel", "torch"])
def fast_path(request, monkeypatch):
    """Run a test on the compiled CPU kernel and on the PyTorch fallback."""
    import adapters.lif as lif

    if request.param == "torch":
        monkeypatch.setattr(lif, "_use_kernel", lambda x: None)
    else:
        assert lif._use_kernel(torch.zeros(1)) is not None, "the compiled LIF kernel did not build"
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_fast_path_is_spike_identical_and_gradient_equal_to_the_reference_loop(detach_reset, dtype, fast_path):
    from adapters.lif import lif_multistep, lif_reference

    x = (torch.randn(6, 4, 16, 9, 9) * 0.8 + 0.25).to(dtype)
    g = torch.randn_like(x)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fast = lif_multistep(xa, 0.25, 0.5, 1.0, detach_reset)
    ref = lif_reference(xb, 0.25, 0.5, 1.0, detach_reset)
    assert torch.equal(fast, ref)
    (fast * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # the inference path computes the same spikes without saving anything
        assert torch.equal(lif_multistep(x, 0.25, 0.5, 1.0, detach_reset), ref)


def test_fast_path_saves_one_membrane_or_two_masks(fast_path):
    from adapters.lif import lif_multistep

    x = torch.randn(4, 2, 8, requires_grad=True)
    full = lif_multistep(x * 1, detach_reset=False)
    assert [t.dtype for t in full.grad_fn.saved_tensors] == [torch.float32]
    detached = lif_multistep(x * 1, detach_reset=True)
    assert [t.dtype for t in detached.grad_fn.saved_tensors] == [torch.bool, torch.bool]


@pytest.mark.parametrize("detach_reset", [False, True])
def test_channels_last_steps_keep_their_layout_and_values(detach_reset, fast_path):
    x = torch.randn(3, 2, 8, 5, 5) * 0.8 + 0.25
    g = torch.randn_like(x)
    cl = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)  # [T, N, C, H, W] with NHWC steps
    assert not cl.is_contiguous() and cl[0].is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, x)
    xa, xb = x.clone().requires_grad_(True), cl.clone().requires_grad_(True)
    neuron = LIF(detach_reset=detach_reset)
    ya, yb = neuron(xa), neuron(xb)
    assert torch.equal(ya, yb)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-6, rtol=1e-6)
    if fast_path == "kernel":
        assert yb[0].is_contiguous(memory_format=torch.channels_last)  # no layout round trip


def test_channels_last_model_gives_the_same_logits():
    import zoo

    model = zoo.create("sresnet19_tdbn", T=2, stem_width=16, channels=(16, 32, 64)).eval()
    x = torch.randn(2, 3, 16, 16)
    ref = model(x)
    assert torch.equal(model.to(memory_format=torch.channels_last)(x), ref)


# Layouts a custom op's input takes inside a compiled graph (inductor picks channels-last for CPU convolutions)
LAYOUTS = {
    "contiguous": lambda t: t.contiguous(),
    "channels-last steps": lambda t: t.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3),
    "transposed": lambda t: t.transpose(3, 4).contiguous().transpose(3, 4),
    "expanded over T": lambda t: t[:1].expand_as(t),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_custom_ops_pass_torch_library_opcheck(layout, fast_path):
    """``torch.library.opcheck`` of ``tdbn_zoo::lif_fwd``/``lif_bwd``: each fake implementation gives the real
    outputs' sizes, strides, dtypes and storage offsets (torch.compile plans its buffers from them), no output
    aliases an input or another output; on contiguous inputs also that the registered autograd and AOT tracing
    agree with eager (the slow part, layout-independent)."""
    from torch.library import opcheck

    x = LAYOUTS[layout](torch.randn(2, 3, 4, 5, 6))
    checks = {"test_utils": ("test_schema", "test_faketensor")} if layout != "contiguous" else {}
    for detach_reset in (False, True):
        for save in (False, True):  # save=True only with autograd on, as lif_multistep calls it
            opcheck(torch.ops.tdbn_zoo.lif_fwd.default,
                    (x.detach().requires_grad_(save), 0.25, 0.5, 1.0, detach_reset, save), **checks)
        _, a, b = torch.ops.tdbn_zoo.lif_fwd(x, 0.25, 0.5, 1.0, detach_reset, True)
        for grad_layout in ("contiguous", "channels-last steps"):
            grad = LAYOUTS[grad_layout](torch.randn(2, 3, 4, 5, 6))
            opcheck(torch.ops.tdbn_zoo.lif_bwd.default,
                    (grad, a, b if detach_reset else a, 0.25, 0.5, 1.0, detach_reset), **checks)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_backward_from_input_currents_is_the_saved_membrane_backward_bit_for_bit(layout, detach_reset, dtype):
    """``lif_backward_from_input`` (the memory-lean path's backward: no membranes saved; on CPU one kernel that
    reruns the recurrence in cache) gives the bits of ``lif_fwd`` then ``lif_bwd`` on ``x + x2``, with the
    second current in another layout than the first and the gradient in a third, for T = 1 and T = 5."""
    from adapters.lif import _use_kernel, lif_backward_from_input

    assert getattr(_use_kernel(torch.zeros(1)), "lif_backward_recompute", None) is not None
    for T in (1, 5):
        torch.manual_seed(T)
        x = LAYOUTS[layout]((torch.randn(T, 3, 4, 5, 6) * 0.8 + 0.2).to(dtype))
        x2 = LAYOUTS["channels-last steps"]((torch.randn(T, 3, 4, 5, 6) * 0.3).to(dtype))
        grad = LAYOUTS["transposed"](torch.randn(T, 3, 4, 5, 6, dtype=dtype))
        for second in (None, x2):
            u = x if second is None else x + second
            _, a, b = torch.ops.tdbn_zoo.lif_fwd(u, 0.25, 0.5, 1.0, detach_reset, True)
            expected = torch.ops.tdbn_zoo.lif_bwd(grad, a, b if detach_reset else a, 0.25, 0.5, 1.0, detach_reset)
            got = lif_backward_from_input(grad, x, second, 0.25, 0.5, 1.0, detach_reset)
            assert got.dtype == dtype and torch.equal(got, expected)
            assert 0 < int((got != 0).sum()) < got.numel()  # windows hit and missed: the test can fail
