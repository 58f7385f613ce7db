"""Training where users train: bf16 autocast for every architecture, no host synchronisation in a step."""
import pytest
import torch
from torch.overrides import TorchFunctionMode

import zoo
from adapters._checks import value_checks
from zoo.spiking_resnet import ARCH_CFGS

# Tensor methods that copy a value to the host (a GPU stream stalls on each; a compiled graph breaks)
HOST_READS = {"item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy"}


class HostReads(TorchFunctionMode):
    """Records every host read of a tensor value made inside the block."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def tiny(arch: str, **kw) -> torch.nn.Module:
    """``arch``'s layout (block type, stem, head) at width 4, one block per stage."""
    stages = len(ARCH_CFGS[arch]["layers"])
    args = dict(channels=(4,) * stages, stem_width=4, layers=(1,) * stages, T=2, num_classes=5)
    if ARCH_CFGS[arch]["head_hidden"]:
        args["head_hidden"] = 8
    return zoo.create(arch, **{**args, **kw})


@pytest.mark.parametrize("arch", sorted(ARCH_CFGS))
def test_bf16_autocast_training_step(arch):
    model = tiny(arch, in_chans=3)
    conv_dtypes = []
    model.conv1.register_forward_hook(lambda m, a, out: conv_dtypes.append(out.dtype))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(2, 3, 16, 16))
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor([1, 3]))
    loss.backward()
    opt.step()
    assert conv_dtypes == [torch.bfloat16]  # autocast did reach the convs
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name
    after = model.state_dict()
    for name in after:  # running statistics stay float32 and finite, and moved
        if name.endswith(("running_mean", "running_var")):
            assert after[name].dtype == torch.float32 and torch.isfinite(after[name]).all(), name
    assert not torch.equal(before["bn1.running_mean"], after["bn1.running_mean"])
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])


def test_a_training_step_reads_no_tensor_values_unless_checks_are_on():
    model = tiny("sresnet19_narrow_tdbn", in_chans=1)
    x = torch.randn(2, 1, 16, 16)
    with HostReads() as reads:
        model(x).sum().backward()
    assert reads.calls == []
    with HostReads() as reads, value_checks():  # opt-in: the input and every tdBN's statistics are checked
        model(x).sum().backward()
    assert len(reads.calls) >= 1 + sum(1 for m in model.modules() if hasattr(m, "running_mean"))


def test_trainer_reads_its_counters_only_when_it_logs():
    from eval.train.trainer import TrainConfig, Trainer

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(16, 1, 8, 8, generator=g), torch.arange(16) % 3)
    counts = {}
    for steps in (2, 8):  # log only at the epoch's last step: the reads must not grow with the steps
        model = zoo.SpikingResNet(layers=(1,), channels=(4,), strides=(1,), stem_width=4, head_hidden=None,
                                  in_chans=1, num_classes=3, T=2)
        cfg = TrainConfig(epochs=1, batch_size=2, lr=0.1, log_every_steps=steps, max_steps_per_epoch=steps,
                          progress=False)
        trainer = Trainer(model, data, None, cfg)
        with HostReads() as reads:
            rec = trainer.train_epoch()
        counts[steps] = len(reads.calls)
        assert 0 < rec["firing_rate"] < 1 and rec["loss"] > 0
    assert counts[2] == counts[8]


def _compiled_matches_eager(arch: str, backend: str, detach_reset: bool = False) -> None:
    import copy

    torch._dynamo.reset()  # every model shares SpikingResNet.forward's code object: a fresh recompile budget
    torch.manual_seed(0)
    eager = tiny(arch, in_chans=1, detach_reset=detach_reset)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True, backend=backend)  # any graph break raises
    x = torch.randn(2, 1, 16, 16)
    y_c, y_e = compiled(x), eager(x)
    torch.testing.assert_close(y_c, y_e, atol=1e-6, rtol=1e-5)
    (y_c * torch.arange(5.0)).sum().backward()
    (y_e * torch.arange(5.0)).sum().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)
    torch.testing.assert_close(compiled_model.bn1.running_var, eager.bn1.running_var)
    eager.eval(), compiled.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), atol=1e-6, rtol=1e-5)


def test_torch_compile_fullgraph_matches_eager_in_train_and_eval():
    """The LIF kernels are torch.library custom ops (fake implementation + registered autograd): dynamo
    traces the whole model as one graph and AOTAutograd differentiates it with the kernel's own backward."""
    _compiled_matches_eager("sresnet19_narrow_tdbn", "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(set(ARCH_CFGS) - {"sresnet19_narrow_tdbn"}))
def test_torch_compile_fullgraph_every_architecture(arch):
    _compiled_matches_eager(arch, "aot_eager", detach_reset=arch == "sresnet50_tdbn")
