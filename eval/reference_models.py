"""A zoo ``SpikingResNet`` rebuilt from another framework's own primitives, with the zoo model's weights:
the baselines of ``tdbn-zoo bench``.

- SpikingJelly, multi-step: ``layer.Conv2d(step_mode='m')``, ``layer.ThresholdDependentBatchNorm2d``,
  ``neuron.LIFNode(step_mode='m')`` on ``[T, N, ...]``, ``functional.reset_net`` after every sequence.
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
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from adapters import MultiStepNorm, make_neuron

__all__ = ["Kit", "MirrorResNet", "KITS", "mirror", "fuse_conv_bn"]


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
    from snntorch._neurons.neurons import SpikingNeuron

    for m in net.modules():  # snntorch.utils.reset only visits direct children
        if isinstance(m, SpikingNeuron):
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


class MirrorBlock(nn.Module):
    """A zoo residual block (Fig. 5b) in ``kit``'s layers: convK-normK-actK ..., plus shortcut, act."""

    def __init__(self, block: nn.Module, kit: Kit, lif: dict):
        super().__init__()
        self.num_convs = block.num_convs
        for i in range(1, self.num_convs + 1):
            setattr(self, f"conv{i}", _conv(kit, getattr(block, f"conv{i}")))
            setattr(self, f"bn{i}", kit.norm(getattr(block, f"bn{i}")))
            setattr(self, f"act{i}", kit.act(lif))
        sc = block.shortcut
        self.shortcut = nn.Module()
        self.shortcut.conv = _conv(kit, sc.conv) if sc.conv is not None else None
        self.shortcut.bn = kit.norm(sc.bn) if sc.bn is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sc = x
        if self.shortcut.conv is not None:
            sc = self.shortcut.conv(sc)
        if self.shortcut.bn is not None:
            sc = self.shortcut.bn(sc)
        for i in range(1, self.num_convs + 1):
            x = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x))
            if i < self.num_convs:
                x = _fire(getattr(self, f"act{i}"), x)
        return _fire(getattr(self, f"act{self.num_convs}"), x + sc)


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


_NORM = re.compile(r"^bn(\d*)$")


@torch.no_grad()
def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of a mirror with every ``bnK`` folded into its sibling ``convK`` and ``head_bn``
    into ``head_fc`` (``torch.nn.utils.fusion``); a norm with nothing before it is kept."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, bn in list(parent.named_children()):
            m = _NORM.match(name)
            if m and isinstance(getattr(parent, f"conv{m.group(1)}", None), nn.Conv2d) \
                    and isinstance(bn, nn.BatchNorm2d):
                conv = f"conv{m.group(1)}"
                setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), bn))
                setattr(parent, name, nn.Identity())
            elif name == "head_bn" and isinstance(bn, nn.BatchNorm1d):
                parent.head_fc = fuse_linear_bn_eval(parent.head_fc, bn)
                parent.head_bn = nn.Identity()
    return model
