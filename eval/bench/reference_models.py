"""A zoo ``SpikingResNet`` rebuilt from another framework's own primitives, with the zoo model's weights:
the baselines of ``tdbn-zoo bench``.

- SpikingJelly, multi-step: ``layer.Conv2d(step_mode='m')``, ``layer.ThresholdDependentBatchNorm2d``,
  ``neuron.LIFNode(step_mode='m')`` on ``[T, N, ...]``, ``functional.reset_net`` after every sequence.
  ``memopt_mirror`` adds SpikingJelly 2.0's ``memopt`` (gradient checkpointing of every residual block with
  its spike input bit-packed) to that build.
- snnTorch, stepped: ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``snn.Leaky`` called once per time step on
  ``[N, ...]`` (the whole network inside the loop over T), membranes reset before every sequence. In
  training, snnTorch's BN therefore normalises over each step's batch, not over T*N as tdBN does (snnTorch
  has no tdBN); in eval mode (running statistics) the function is the same.
- ANN floor: the same convolutions, ``nn.BatchNorm2d`` and ``nn.ReLU`` on the ``T*N`` merged batch.

The neurons are the frameworks' own classes, configured by ``adapters.make_neuron`` (the paper's LIF,
see ``../shared/docs/frameworks.md``). SpikingJelly's tdBN learns ``gamma = lambda * alpha * Vth`` directly,
so the zoo's ``weight * scale`` is copied into it (and into the plain BN weights).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from adapters import MultiStepNorm, make_neuron
from adapters.fusion import NormSlot, named_norm_slots
from adapters.neurons import is_neuron

__all__ = ["Kit", "MirrorResNet", "KITS", "mirror", "memopt_mirror", "fuse_conv_bn"]


@dataclass(frozen=True)
class Kit:
    """How one framework builds each layer, and how its network runs over time:
    ``'multistep'`` (``[T, N, ...]`` through every layer), ``'stepped'`` (the network called once per step)
    or ``'merged'`` (time merged into the batch, stateless activations)."""
    name: str
    mode: str
    conv: Callable[..., nn.Module]  # (in, out, kernel, stride, padding, bias) -> module
    norm: Callable[[nn.Module], nn.Module]  # the zoo norm it replaces -> module
    act: Callable[[dict], nn.Module]  # LIF kwargs -> module
    linear: Callable[..., nn.Module]  # (in, out, bias) -> module
    reset: Callable[[nn.Module], None] = lambda net: None  # clear neuron state between sequences


def _is_2d(zoo_norm: nn.Module) -> bool:
    """Whether a zoo norm normalises conv features ``[T, N, C, H, W]`` (else dense ``[T, N, C]``)."""
    return tuple(zoo_norm.ranks) == (5,)


def _torch_bn(zoo_norm: nn.Module) -> nn.Module:
    return (nn.BatchNorm2d if _is_2d(zoo_norm) else nn.BatchNorm1d)(zoo_norm.num_features, eps=zoo_norm.eps)


def _sj_kit() -> Kit:
    """SpikingJelly's layers. Its ``LIFNode`` picks its implementation per call: on CUDA a fused CUDA or
    Triton kernel only for its built-in surrogates (Sigmoid, ATan, PiecewiseQuadratic, PiecewiseExp,
    SoftSign, SuperSpike, Erf: ``spikingjelly._ops.surrogate``), otherwise its PyTorch reference loop. The
    paper's rectangular surrogate (``surrogate.Rect``) is not among them, so on every device this build runs
    the PyTorch loop, which is SpikingJelly's fastest backend that computes the paper's gradient."""
    from spikingjelly.activation_based import functional, layer

    def norm(zoo_norm):
        if hasattr(zoo_norm, "alpha"):  # tdBN
            cls = layer.ThresholdDependentBatchNorm2d if _is_2d(zoo_norm) else layer.ThresholdDependentBatchNorm1d
            return cls(alpha=zoo_norm.alpha, v_th=zoo_norm.v_th, num_features=zoo_norm.num_features,
                       eps=zoo_norm.eps)
        cls = layer.BatchNorm2d if _is_2d(zoo_norm) else layer.BatchNorm1d
        return cls(zoo_norm.num_features, eps=zoo_norm.eps, step_mode="m")

    return Kit("spikingjelly", "multistep",
               conv=lambda i, o, k, s, p, bias: layer.Conv2d(i, o, k, s, p, bias=bias, step_mode="m"),
               norm=norm, act=lambda lif: make_neuron("spikingjelly", **lif).node,
               linear=lambda i, o, bias: layer.Linear(i, o, bias=bias, step_mode="m"),
               reset=functional.reset_net)


def _snntorch_reset(net: nn.Module) -> None:
    for m in net.modules():  # snntorch.utils.reset only visits direct children
        if is_neuron(m) and hasattr(m, "reset_mem"):
            m.reset_mem()


def _snntorch_kit() -> Kit:
    return Kit("snntorch", "stepped",
               conv=lambda i, o, k, s, p, bias: nn.Conv2d(i, o, k, s, p, bias=bias),
               norm=_torch_bn, act=lambda lif: make_neuron("snntorch", **lif).neuron, linear=nn.Linear,
               reset=_snntorch_reset)


def _ann_kit() -> Kit:
    return Kit("ann", "merged", conv=lambda i, o, k, s, p, bias: nn.Conv2d(i, o, k, s, p, bias=bias),
               norm=_torch_bn, act=lambda lif: nn.ReLU(),
               linear=nn.Linear)


KITS: dict[str, Callable[[], Kit]] = {"spikingjelly": _sj_kit, "snntorch": _snntorch_kit, "ann": _ann_kit}


def _fire(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = act(x)
    return out[0] if isinstance(out, tuple) else out  # snnTorch neurons return (spikes, membrane)


def _conv(kit: Kit, conv: nn.Conv2d) -> nn.Module:
    return kit.conv(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.bias is not None)


class _MirrorShortcut(nn.Module):
    """The zoo ``Shortcut`` in a kit's layers: optional conv, optional norm."""

    def __init__(self, shortcut: nn.Module, kit: Kit):
        super().__init__()
        self.conv = _conv(kit, shortcut.conv) if shortcut.conv is not None else None
        self.bn = kit.norm(shortcut.bn) if shortcut.bn is not None else None

    def norm_slots(self) -> tuple[NormSlot, ...]:
        return (NormSlot("bn", "conv" if self.conv is not None else None),) if self.bn is not None else ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        return self.bn(x) if self.bn is not None else x


class MirrorBlock(nn.Module):
    """A zoo residual block (Fig. 5b) in ``kit``'s layers: the block's own ``branch()`` of (conv, norm,
    neuron), plus shortcut, with the zoo's attribute names."""

    def __init__(self, block: nn.Module, kit: Kit, lif: dict):
        super().__init__()
        self.branch = tuple(block.branch())
        for conv, bn, act in self.branch:
            setattr(self, conv, _conv(kit, getattr(block, conv)))
            setattr(self, bn, kit.norm(getattr(block, bn)))
            setattr(self, act, kit.act(lif))
        self.shortcut = _MirrorShortcut(block.shortcut, kit)

    def norm_slots(self) -> tuple[NormSlot, ...]:
        return tuple(NormSlot(bn, conv) for conv, bn, _ in self.branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sc = self.shortcut(x)
        for i, (conv, bn, act) in enumerate(self.branch):
            x = getattr(self, bn)(getattr(self, conv)(x))
            if i < len(self.branch) - 1:
                x = _fire(getattr(self, act), x)
        return _fire(getattr(self, self.branch[-1][2]), x + sc)


class MirrorResNet(nn.Module):
    """A zoo ``SpikingResNet`` in ``kit``'s layers, with the zoo's parameter names. ``forward``:
    ``[N, C, H, W]`` (static, repeated over ``T``) or ``[T, N, C, H, W]`` -> logits ``[N, K]`` (mean over T)."""

    def __init__(self, model: nn.Module, kit: Kit):
        super().__init__()
        if getattr(model, "fused", False):
            raise ValueError("mirror() needs an unfused zoo model (with its norms), not a zoo.fuse() copy")
        lif = {k: model.model_args[k] for k in ("tau_decay", "v_th", "surrogate_width", "detach_reset")}
        self.kit, self.T, self.num_stages = kit, model.T, model.num_stages
        self.conv1 = _conv(kit, model.conv1)
        self.bn1 = kit.norm(model.bn1)
        self.act1 = kit.act(lif)
        for i in range(1, model.num_stages + 1):
            self.add_module(f"layer{i}", nn.Sequential(*[MirrorBlock(b, kit, lif)
                                                         for b in getattr(model, f"layer{i}")]))
        self.head_fc = self.head_bn = self.head_act = None
        if model.head_fc is not None:  # fc-256 (ResNet-17/19), with its norm where the zoo model has one
            self.head_fc = kit.linear(model.head_fc.in_features, model.head_fc.out_features, True)
            self.head_bn = kit.norm(model.head_bn) if getattr(model, "head_bn", None) is not None else None
            self.head_act = kit.act(lif)
        self.fc = kit.linear(model.fc.in_features, model.fc.out_features, True)

    def norm_slots(self) -> tuple[NormSlot, ...]:
        """The stem's norm and (where present) the head's, as on the zoo model."""
        return (NormSlot("bn1", "conv1"),) + ((NormSlot("head_bn", "head_fc", dim=1),)
                                              if self.head_bn is not None else ())

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        """One pass in the kit's layout: ``[T, N, ...]``, ``[N, ...]`` (one step) or ``[T*N, ...]``."""
        x = _fire(self.act1, self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        x = x.mean(dim=(-2, -1))
        if self.head_fc is not None:
            x = self.head_fc(x)
            x = _fire(self.head_act, self.head_bn(x) if self.head_bn is not None else x)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = self.T
        steps = x.unsqueeze(0).repeat(T, *([1] * x.dim())) if x.dim() == 4 else x
        mode = self.kit.mode
        if mode == "merged":
            return self._body(steps.flatten(0, 1)).unflatten(0, (T, -1)).mean(0)
        self.kit.reset(self)
        try:
            if mode == "multistep":
                return self._body(steps).mean(0)
            return torch.stack([self._body(steps[t]) for t in range(T)]).mean(0)
        finally:
            self.kit.reset(self)  # drop the last membranes and the graph they hold


def zoo_state_for_mirror(model: nn.Module) -> dict[str, torch.Tensor]:
    """The zoo model's state dict with each norm's weight multiplied by its fixed scale (alpha * Vth for
    tdBN), the ``gamma`` that plain BN and SpikingJelly's tdBN learn."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, m in model.named_modules():
        if isinstance(m, MultiStepNorm):
            sd[f"{name}.weight"] = sd[f"{name}.weight"] * m.scale
    return sd


def mirror(model: nn.Module, framework: str) -> MirrorResNet:
    """``model`` (a zoo SpikingResNet) rebuilt with ``framework``'s layers ('spikingjelly', 'snntorch',
    'ann') and its weights and running statistics, in the same train/eval mode."""
    if framework not in KITS:
        raise ValueError(f"unknown framework {framework!r}; choose one of {', '.join(KITS)}")
    ref = MirrorResNet(model, KITS[framework]())
    param = next(model.parameters())
    ref.to(device=param.device, dtype=param.dtype)
    ref.load_state_dict(zoo_state_for_mirror(model), strict=True)
    return ref.train(model.training)


def memopt_mirror(model: nn.Module, example: torch.Tensor, level: int = 1) -> MirrorResNet:
    """The SpikingJelly mirror of ``model`` with ``spikingjelly.activation_based.memopt.optimize_memory``
    applied, as SpikingJelly's own SEW-ResNet applies it: every residual block (``MirrorBlock``) is a
    checkpoint target, its spike input stored bit-packed (``BitSpikeCompressor``, chosen by memopt's probe
    forward on ``example``, ``[N, C, H, W]``) and its inside recomputed in backward. Level 1 by default:
    levels 2-4 search the CUDA allocator's peak (memopt raises ``RuntimeError`` without CUDA) and their
    choices depend on the allocator, not only on the network.

    Raises ``ImportError`` where SpikingJelly has no ``memopt`` (before 2.0)."""
    from spikingjelly.activation_based import memopt

    ref = mirror(model, "spikingjelly")
    memopt.optimize_memory(ref, MirrorBlock, lambda m: m(example), level=level)
    return ref


@torch.no_grad()
def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of a mirror with every declared norm (``norm_slots()``, as on the zoo model) that is
    a torch BatchNorm folded into the conv or linear before it (``torch.nn.utils.fusion``); a norm with
    nothing before it is kept."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    model = copy.deepcopy(model).eval()
    for _, module, slot in list(named_norm_slots(model)):
        if slot.layer is None:
            continue
        layer, bn = getattr(module, slot.layer), getattr(module, slot.norm)
        if isinstance(layer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, slot.layer, fuse_conv_bn_eval(layer, bn))
        elif isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
            setattr(module, slot.layer, fuse_linear_bn_eval(layer, bn))
        else:
            continue
        setattr(module, slot.norm, nn.Identity())
    return model
