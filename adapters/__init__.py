"""tdBN, the iterative LIF neuron and the modified-shortcut residual blocks of Zheng et al. (AAAI 2021),
as multi-step layers on ``[T, N, ...]`` that run with a native neuron, SpikingJelly or snnTorch."""
from .blocks import NORMS, RESIDUAL_ALPHA, BasicBlock, Bottleneck, Shortcut, norm_factory
from .fused import ChannelAffine, FoldedNorm
from .lif import LIF
from .memory_lean import SpikeConv2d, lean_training
from .multistep import seq_apply
from .norm_lif import Residual, fire
from .neurons import BACKENDS, SnnTorchNeuron, SpikingJellyNeuron, make_neuron, neuron_factory, wrap_neuron
from .surrogate import RectSurrogate
from .tdbn import (MultiStepBatchNorm1d, MultiStepBatchNorm2d, MultiStepNorm, TdBatchNorm1d, TdBatchNorm2d,
                   convert_sync_tdbn)

__all__ = [
    "BACKENDS", "NORMS", "RESIDUAL_ALPHA", "LIF", "RectSurrogate", "TdBatchNorm1d", "TdBatchNorm2d",
    "MultiStepBatchNorm1d", "MultiStepBatchNorm2d", "MultiStepNorm", "convert_sync_tdbn", "make_neuron", "neuron_factory",
    "wrap_neuron", "SpikingJellyNeuron", "SnnTorchNeuron", "BasicBlock", "Bottleneck", "Shortcut",
    "norm_factory", "seq_apply", "ChannelAffine", "FoldedNorm", "SpikeConv2d", "lean_training", "fire", "Residual",
]
