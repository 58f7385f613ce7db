"""Training where users train: bf16 autocast for every architecture, no host synchronisation in a step."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import zoo
from adapters._checks import value_checks
from tests.support.compiled_vs_eager import compiled_gradients_match_eager_float64, compiled_matches_eager, tiny
from zoo.spiking_resnet import ARCH_CFGS

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "support" / "compiled_vs_eager.py"  # also run as a script, in a subprocess

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


def test_torch_compile_fullgraph_matches_eager_in_train_and_eval():
    """The LIF kernels are torch.library custom ops (fake implementation + registered autograd): dynamo
    traces the whole model as one graph and AOTAutograd differentiates it with the kernel's own backward."""
    compiled_matches_eager("sresnet19_narrow_tdbn", "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(set(ARCH_CFGS) - {"sresnet19_narrow_tdbn"}))
def test_torch_compile_fullgraph_every_architecture(arch):
    compiled_matches_eager(arch, "aot_eager", detach_reset=arch == "sresnet50_tdbn")


# One model per family: basic blocks with the fc-256 head, an identity and two projection shortcuts (ResNet-17/19);
# basic blocks behind the 7x7 stride-2 stem, no hidden head (ResNet-34); bottlenecks, with the detached reset's
# two-mask backward (ResNet-50). Every tiny model has 4-channel strided 1x1 shortcuts (see
# adapters.onednn_workarounds).
INDUCTOR_FAMILIES = ("sresnet19_tdbn", "sresnet34_tdbn", "sresnet50_tdbn:detach_reset")


@pytest.mark.slow
def test_torch_compile_default_inductor_backend_matches_eager_for_every_family():
    """The default backend generates C++ kernels and lays convolutions out channels-last: training step
    (outputs, gradients, running statistics) and eval forward equal to eager within float32 reordering
    (tolerances in compiled_vs_eager). A subprocess: a crash in generated or library code (heap corruption
    aborts the process) fails this test only. The three families share one process (C++ compilation dominates:
    309 s of user CPU on the project's 2-core machine with an empty inductor cache, see README)."""
    proc = subprocess.run([sys.executable, str(SCRIPT), *INDUCTOR_FAMILIES,
                           "--backend", "inductor"], cwd=REPO, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    done = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("OK ")]
    assert proc.returncode == 0 and done == list(INDUCTOR_FAMILIES), (
        f"exit {proc.returncode}, matched {done}; last lines:\n{proc.stdout[-500:]}\n{proc.stderr[-3000:]}")


@pytest.mark.parametrize("family", INDUCTOR_FAMILIES)
def test_compiled_float64_gradients_equal_eager_for_every_family(family):
    """aot_eager, float64: logits and every gradient to 1e-9 of the largest gradient, one model per family."""
    arch, _, option = family.partition(":")
    compiled_gradients_match_eager_float64(arch, "aot_eager", detach_reset=bool(option))


@pytest.mark.slow
def test_inductor_float64_gradients_equal_eager_for_every_family():
    """inductor, float64: the forward and the lean backward see the same normalised input (the norms' statistics
    in an opaque op), so the gradients agree to 1e-9 of the largest, every family. A subprocess, as above."""
    proc = subprocess.run([sys.executable, str(SCRIPT), *INDUCTOR_FAMILIES, "--backend",
                           "inductor", "--float64"], cwd=REPO, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    done = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("OK ")]
    assert proc.returncode == 0 and done == list(INDUCTOR_FAMILIES), (
        f"exit {proc.returncode}, matched {done}; last lines:\n{proc.stdout[-500:]}\n{proc.stderr[-3000:]}")
