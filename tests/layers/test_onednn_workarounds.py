"""adapters.onednn_workarounds: strided 1x1 convolutions kept clear of oneDNN's faulty backward-by-weights kernel
(uxlfoundation/oneDNN#6035: channels-last source, fewer input channels than the kernel's block, stride > 1)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adapters.memory_lean import SpikeConv2d, lean_training
from adapters.onednn_workarounds import needs_unit_stride, unit_stride

ROOT = Path(__file__).resolve().parents[2]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("conv, layout, expected", [
    (nn.Conv2d(4, 8, 1, stride=2, bias=False), channels_last, True),  # the faulty case
    (nn.Conv2d(15, 8, 1, stride=(1, 2)), channels_last, True),
    (nn.Conv2d(4, 8, 1, stride=2), torch.Tensor.contiguous, False),  # eager NCHW: another kernel, hooks kept
    (nn.Conv2d(16, 8, 1, stride=2), channels_last, False),  # a full channel block
    (nn.Conv2d(4, 8, 1, stride=1), channels_last, False),  # unit stride: no workspace
    (nn.Conv2d(4, 8, 3, stride=2, padding=1), channels_last, False),  # not 1x1
    (nn.Conv2d(4, 8, 1, stride=2, padding=1), channels_last, False),  # padded: not a subsampling
])
def test_only_the_faulty_case_is_reformulated(conv, layout, expected):
    x = layout(torch.randn(2, conv.in_channels, 8, 8))
    assert needs_unit_stride(conv, x) is expected


@pytest.mark.parametrize("lean", [True, False])
def test_spike_conv_reformulates_and_computes_the_same_function(lean):
    # float64 (no oneDNN) against torch's own strided convolution, odd sizes and unequal strides
    conv = SpikeConv2d(4, 6, 1, stride=(2, 3)).double()
    x = channels_last(torch.randint(0, 2, (3, 4, 9, 10)).double()).requires_grad_()
    sub, stride = unit_stride(conv, x)
    assert stride == (1, 1) and torch.equal(sub, x[:, :, ::2, ::3])
    seen = []
    conv.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    with lean_training(lean):
        y = conv(x)
    assert seen == [x.shape]  # the module's hooks see its real input
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
    ref = F.conv2d(x, conv.weight, conv.bias, stride=(2, 3))
    ref_grads = torch.autograd.grad(ref, (x, conv.weight, conv.bias), g)
    assert y.shape == ref.shape == (3, 6, 5, 4)
    torch.testing.assert_close(y, ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


# One thread: without the workaround this aborts the process ("corrupted size vs. prev_size") in the first
# backward on this project's AVX2 CPU; with two threads the overflow can go unnoticed (oneDNN#6035 reports
# hangs and wrong weight gradients there), which the comparison with the NCHW run would catch.
CHANNELS_LAST_BLOCK = """
import torch
from adapters import BasicBlock
torch.manual_seed(0)
nchw, nhwc = BasicBlock(4, 4, stride=2), BasicBlock(4, 4, stride=2)
nhwc.load_state_dict(nchw.state_dict())
x = torch.rand(2, 2, 4, 16, 16).round()
x_cl = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (2, 2))
for _ in range(3):
    for block, inp in ((nchw, x), (nhwc, x_cl)):
        block.zero_grad()
        block(inp).sum().backward()
    for (name, p), q in zip(nchw.named_parameters(), nhwc.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)
print("OK")
"""


def test_a_channels_last_block_trains_as_the_nchw_one():
    """Channels-last spikes (what inductor gives every convolution on CPU) through a block whose projection
    shortcut has 4 input channels: runs in a subprocess, as heap corruption aborts the process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHANNELS_LAST_BLOCK], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
