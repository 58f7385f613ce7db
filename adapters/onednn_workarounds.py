"""A strided 1x1 convolution that keeps clear of a oneDNN heap-corruption bug on CPU.

oneDNN's 1x1 backward-by-weights kernel (``jit_1x1:avx2`` / ``jit_1x1:avx512_core``) runs a strided 1x1
convolution by first copying the strided pixels into a workspace ("reduce to unit stride"); with a
channels-last (NHWC) source and fewer input channels than its channel block (8 on AVX2, 16 on AVX-512) it
writes past that workspace: heap corruption ("free(): invalid pointer", "corrupted size vs. prev_size",
segfaults), hangs or wrong weight gradients (uxlfoundation/oneDNN#6035, open; reproduced with the oneDNN
3.12 of torch 2.14 on AVX2, eager mode, no compiler involved: ``nn.Conv2d(4, 4, 1, stride=2)`` on a
channels-last ``[2, 4, 8, 8]`` input, backward). Eager PyTorch lays NCHW tensors out NCHW and never takes
that path, but inductor converts every CPU convolution to channels-last (``decide_layout_opt``), so
``torch.compile`` of a narrow model with a projection shortcut (``in_channels < 16``) corrupts the heap in
its first backward.

A 1x1 convolution without padding at stride ``s`` is exactly a stride-1 1x1 convolution of the input
subsampled at stride ``s`` (what the kernel's workspace holds), which oneDNN runs with another kernel. This
module applies that reformulation only where the bug can strike (CPU, 1x1, stride > 1, no padding, fewer
than 16 input channels, and a channels-last input or a graph being compiled); ``SpikeConv2d`` (every conv of
a residual block) applies it inside its forward, so the module's hooks still see the original input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# oneDNN's largest fp32 channel block (AVX-512: 16; AVX2: 8). Input channels below it take the faulty path.
ONEDNN_IC_BLOCK = 16


def needs_unit_stride(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether ``conv(x)`` (``x``: ``[B, C, H, W]``) could reach the faulty oneDNN kernel in its backward."""
    return (x.device.type == "cpu" and conv.kernel_size == (1, 1) and conv.stride != (1, 1)
            and conv.padding == (0, 0) and conv.groups == 1 and conv.in_channels < ONEDNN_IC_BLOCK
            and (torch.compiler.is_compiling() or x.is_contiguous(memory_format=torch.channels_last)))


def unit_stride(conv: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(input, stride)`` to convolve ``x`` (``[B, C, H, W]``) with ``conv``'s weights: ``(x, conv.stride)``,
    or where :func:`needs_unit_stride` says the strided kernel is unsafe, ``x`` subsampled at the stride and
    stride 1 (the same function)."""
    if not needs_unit_stride(conv, x):
        return x, conv.stride
    sh, sw = conv.stride
    return x[:, :, ::sh, ::sw], (1, 1)
