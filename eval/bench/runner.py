"""``run_bench(BenchConfig(...))``: one architecture built several ways, checked to compute the same function,
then timed interleaved (medians): train step, inference, fused inference, and peak training memory.

Builds (``BUILDS``; add one with ``register_build``, e.g. a faster native path to compare later):

- ``zoo``: this zoo's ``SpikingResNet`` (``BenchConfig.zoo_neuron``, native LIF by default); fused = ``zoo.fuse``.
- ``zoo-reference``: the zoo model with the memory-lean training path off (``adapters.lean_training(False)``):
  norm, LIF and conv each save their own tensors for backward; what the lean path saves and costs.
- ``spikingjelly``: the same network from SpikingJelly's multi-step primitives (``eval.bench.reference_models``).
- ``spikingjelly-memopt``: that build with SpikingJelly 2.0's ``memopt`` (level 1: every residual block
  checkpointed, its spike input bit-packed); where memopt cannot run, a note says why and the row is left out.
- ``snntorch``: the same network stepped over T with snnTorch's ``Leaky``.
- ``ann``: the ANN floor: the same convolutions with BN and ReLU at batch N*T; fused = conv-BN folding.

Before timing, every spiking build must give the zoo model's logits from the same weights (float64, eval
mode; SpikingJelly also in train mode) and every fused model its unfused model's logits, on a network
whose every neuron layer fires -- otherwise ``BenchCheckError``. That check runs in float64 without autocast
whatever ``BenchConfig.amp``; float64 takes the LIF's PyTorch path on CUDA, so a second check
(:func:`check_kernels`) runs the float32 builds as timed, on the benchmark's device with its kernels (C++ on
CPU, Triton on CUDA), against the same models on the LIF's PyTorch path (``adapters.lif.pytorch_path``): every
neuron layer's spikes equal, logits and a training step's gradients within ``tol``, in eval and train mode.
The timings and memory figures then run under ``torch.autocast`` when ``amp`` is ``'bf16'`` or ``'fp16'``
(fp16 with a ``GradScaler``, CUDA only).
"""
from __future__ import annotations

import copy
import gc
import time
import weakref
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InvalidArgumentError, ZooError
from zoo.models import width_args

from ..measure.harness import calibrate_norms
from ..measure.metrics import SpikeRecorder
from ..measure.profiling import machine_info, median, peak_memory, time_call
from .reference_models import fuse_conv_bn, mirror

__all__ = ["BenchConfig", "Build", "BUILDS", "BenchCheckError", "BuildUnavailable", "AMP_MODES",
           "register_build", "reference_model", "check_same_function", "check_kernels", "saved_for_backward_bytes",
           "autocast", "run_bench"]


class BenchCheckError(ZooError, RuntimeError):
    """The builds do not compute the same function: no timing is reported."""


class BuildUnavailable(ZooError, RuntimeError):
    """A build that cannot run here (a library or device it needs is missing): ``run_bench`` leaves its row
    out and says why in the notes."""


# --amp: the autocast dtype of the timed and measured passes (None: float32 throughout)
AMP_MODES: dict[str, torch.dtype | None] = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class BenchConfig:
    """What to build and how to time it. ``arch``: an architecture (random weights, norms calibrated) or any
    model name ``zoo.create`` loads (``arch.tag``, a checkpoint folder, ``hf-hub:``, ``local-dir:``: its
    weights, and its T, classes and input channels, :func:`checkpoint_facts`). ``width`` scales an
    architecture's channels and stem (the default quarter-width ResNet-19 keeps one run within about two
    minutes on 2 CPU cores); ``model_kw``: further model arguments (``tdbn-zoo models ARCH``)."""
    arch: str = "sresnet19_tdbn"
    width: float = 0.25
    model_kw: dict = field(default_factory=dict)
    input_size: int = 32
    in_chans: int = 3
    batch: int = 8
    T: int = 4
    num_classes: int = 10
    reps: int = 5
    warmup: int = 1
    device: str = "cpu"
    builds: tuple[str, ...] = ("zoo", "spikingjelly", "spikingjelly-memopt", "snntorch", "ann")
    zoo_neuron: str = "native"
    amp: str = "off"  # a key of AMP_MODES
    memory: bool = True
    seed: int = 0
    tol: float = 1e-6  # max |logit difference| (relative to the logits' scale) in float64
    lr: float = 1e-3


@dataclass(frozen=True)
class Build:
    """One way to build the benchmarked network from the reference zoo model."""
    name: str
    label: str
    make: Callable[[nn.Module, BenchConfig], nn.Module]
    spiking: bool = True  # must reproduce the zoo model's logits
    train_equal: bool = False  # also in train mode (same batch statistics as tdBN over T*N)
    fuse: Callable[[nn.Module], nn.Module] | None = None  # the BN-free inference copy, where one exists


def _zoo_fuse(model: nn.Module) -> nn.Module:
    from zoo.fuse import fuse
    return fuse(model)


def _spikingjelly_memopt(model: nn.Module, cfg: BenchConfig) -> nn.Module:
    """``memopt_mirror`` probed on a zero image of the benchmark's size (the probe only asks which block
    inputs are strictly binary, and spike inputs are, whatever the image)."""
    from .reference_models import memopt_mirror

    example = torch.zeros(1, cfg.in_chans, cfg.input_size, cfg.input_size, device=next(model.parameters()).device)
    try:
        return memopt_mirror(model, example)
    except ImportError as e:
        raise BuildUnavailable(f"SpikingJelly's memopt is not importable ({e}); it needs spikingjelly >= 2.0") from e
    except RuntimeError as e:
        raise BuildUnavailable(f"SpikingJelly's memopt cannot run here: {e}") from e


class LayerByLayer(nn.Module):
    """The zoo model trained layer by layer (``adapters.lean_training(False)``): the same function as the zoo
    build, with norm, LIF and conv each saving their own tensors for backward (what the lean path avoids)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` -> logits ``[N, classes]``."""
        from adapters import lean_training

        with lean_training(False):
            return self.model(x)


BUILDS: dict[str, Build] = {}


def register_build(build: Build) -> None:
    """Make ``build`` selectable by name (``BenchConfig.builds`` / ``tdbn-zoo bench --builds``)."""
    BUILDS[build.name] = build


for _b in (Build("zoo", "this zoo", lambda m, cfg: m, fuse=_zoo_fuse),
           Build("spikingjelly", "SpikingJelly (multi-step)", lambda m, cfg: mirror(m, "spikingjelly"),
                 train_equal=True),
           Build("spikingjelly-memopt", "SpikingJelly + memopt (level 1)", _spikingjelly_memopt, train_equal=True),
           Build("snntorch", "snnTorch (Leaky stepped)", lambda m, cfg: mirror(m, "snntorch")),
           Build("ann", "ANN floor (ReLU, batch N*T)", lambda m, cfg: mirror(m, "ann"), spiking=False,
                 fuse=fuse_conv_bn)):
    register_build(_b)


def _channels_last(make: Callable[[nn.Module, BenchConfig], nn.Module]) -> Callable:
    return lambda m, cfg: make(m, cfg).to(memory_format=torch.channels_last)


# The same builds with channels-last convolution weights (and so activations): the layout oneDNN prefers on CPU.
register_build(Build("zoo-reference", "this zoo, layer by layer (lean path off)",
                     lambda m, cfg: LayerByLayer(copy.deepcopy(m)), train_equal=True))
register_build(Build("zoo-cl", "this zoo, channels-last", _channels_last(lambda m, cfg: copy.deepcopy(m)),
                     fuse=lambda m: _zoo_fuse(m).to(memory_format=torch.channels_last)))
register_build(Build("ann-cl", "ANN floor, channels-last", _channels_last(lambda m, cfg: mirror(m, "ann")),
                     spiking=False, fuse=lambda m: fuse_conv_bn(m).to(memory_format=torch.channels_last)))


def _arch_kwargs(cfg: BenchConfig) -> dict:
    kw = width_args(cfg.arch, cfg.width)
    return {**dict(kw, channels=tuple(kw["channels"])), **cfg.model_kw}


def names_a_model(name: str) -> bool:
    """Whether ``name`` is a model with weights (``arch.tag``, a folder, a file, ``hf-hub:``, ``local-dir:``)
    rather than a bare architecture."""
    from zoo import ARCH_CFGS

    return name not in ARCH_CFGS


def checkpoint_facts(name: str, **model_kw) -> dict:
    """``{'T', 'num_classes', 'in_chans', 'input_size'}`` of the model ``name`` loads (its checkpoint's), for
    a :class:`BenchConfig` that times that model."""
    import zoo

    model = zoo.create(name, pretrained=True, **model_kw)
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size") or (model.in_chans, 32, 32)
    return dict(T=model.T, num_classes=model.num_classes, in_chans=model.in_chans, input_size=int(size[-1]))


def reference_model(cfg: BenchConfig) -> nn.Module:
    """The zoo model every build copies, in eval mode on ``cfg.device``: ``cfg.arch`` at ``cfg.width`` with
    norms calibrated on random batches (random init statistics would silence the deeper layers), or the
    model ``cfg.arch`` names with its weights (a fused checkpoint gets its norms back by ``zoo.unfuse``, which
    computes the same function in eval mode, so every framework builds the same network)."""
    import zoo

    torch.manual_seed(cfg.seed)
    shape = (max(cfg.batch, 8), cfg.in_chans, cfg.input_size, cfg.input_size)
    if names_a_model(cfg.arch):
        model = zoo.create(cfg.arch, pretrained=True, T=cfg.T, neuron=cfg.zoo_neuron, **cfg.model_kw).to(cfg.device)
        if model.fused:
            model = zoo.unfuse(model, torch.randn(shape, device=cfg.device))
        return model.eval()
    try:
        model = zoo.create(cfg.arch, T=cfg.T, num_classes=cfg.num_classes, in_chans=cfg.in_chans,
                           neuron=cfg.zoo_neuron, **_arch_kwargs(cfg)).to(cfg.device)
    except RuntimeError as e:  # torch's CPU allocator has no error type of its own: give it one (MemoryError)
        if "can't allocate memory" not in str(e):
            raise
        raise MemoryError(f"{cfg.arch} at width {cfg.width}: {e}") from e
    return calibrate_norms(model, [torch.randn(shape, device=cfg.device) for _ in range(2)])


@torch.no_grad()
def check_same_function(models: dict[str, nn.Module], x: torch.Tensor, tol: float = 1e-6) -> dict:
    """Max ``|logit difference|`` of each spiking build against ``models['zoo']`` (eval mode, float64; also
    train mode where ``Build.train_equal``) and of each build's fused copy (``Build.fuse``, made from a
    float64 copy, so float32 folding round-off cannot flip a spike) against its unfused model. Raises
    BenchCheckError on a difference above ``tol`` (relative to the logits' scale) or when a neuron layer of
    the zoo model never fires (the comparison would prove nothing)."""
    x = x.double()
    diffs: dict[str, float] = {}
    failures = []

    def compare(key, out, ref):
        d = float((out - ref).abs().max())
        diffs[key] = d
        if not d <= tol * max(1.0, float(ref.abs().max())):
            failures.append(f"{key}: max |diff| {d:.3g}")

    zoo_model = copy.deepcopy(models["zoo"]).double().eval()
    with SpikeRecorder(zoo_model) as rec:
        ref = zoo_model(x)
    silent = [a.name for a in rec.layers() if a.spikes == 0]
    if silent:
        raise BenchCheckError(f"the check would be vacuous: zoo neuron layers {', '.join(silent)} never fire on "
                              f"the check batch; use a larger batch or input size")
    for name, model in models.items():
        b = BUILDS[name]
        if name != "zoo" and b.spiking:
            m = copy.deepcopy(model).double().eval()
            compare(f"{name} vs zoo (eval)", m(x), ref)
            if b.train_equal:
                z = copy.deepcopy(models["zoo"]).double().train()
                compare(f"{name} vs zoo (train)", m.train()(x), z(x))
        if b.fuse is not None:
            base = copy.deepcopy(model).double().eval()
            try:
                f = b.fuse(base)
            except ImportError:  # reported by run_bench
                continue
            compare(f"{name} fused vs unfused", f(x), base(x))
    if failures:
        raise BenchCheckError("the builds do not compute the same function from the same weights: "
                              + "; ".join(failures))
    return dict(max_abs_diff=diffs, tol=tol, min_firing_rate=min(a.firing_rate for a in rec.layers()))


def _spikes_logits_grads(model: nn.Module, x: torch.Tensor, train: bool):
    """Every native LIF layer's spikes, the logits and (``train``: one backward of their sum of squares) every
    parameter's gradient of ``model`` on ``x``."""
    from adapters.lif import LIF

    spikes = []
    hooks = [m.register_forward_hook(lambda m, i, o: spikes.append(o.detach())) for m in model.modules()
             if isinstance(m, LIF)]
    try:
        model.train(train)
        with torch.set_grad_enabled(train):
            logits = model(x)
        grads = []
        if train:
            logits.square().sum().backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
    finally:
        for h in hooks:
            h.remove()
    return spikes, logits.detach(), grads


#: The tolerance of the float32 kernels against the float32 PyTorch path, about 80 float32 ulps (eps 1.2e-7) of
#: the scale. It leaves room for the different summation order of a training step's gradient reductions (1.3e-6
#: was measured on the shipped sresnet19_narrow_tdbn.fashion_mnist_t2 with every spike equal); a wrong kernel is
#: far past it.
KERNEL_TOL = 1e-5


def check_kernels(models: dict[str, nn.Module], x: torch.Tensor, tol: float = KERNEL_TOL) -> dict:
    """The float32 spiking builds with native LIF layers, as timed (the LIF kernels of ``x``'s device), against
    copies of themselves on the LIF's PyTorch path: in eval and in train mode every LIF layer's spikes are
    equal, and the logits and a training step's gradients agree to ``tol`` of their scale. Raises
    BenchCheckError otherwise; returns the largest relative difference per build and mode."""
    from adapters.lif import LIF, pytorch_path

    def rel(a, b):
        return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))

    diffs, failures = {}, []
    for name, model in models.items():
        if not (BUILDS[name].spiking and any(isinstance(m, LIF) for m in model.modules())):
            continue  # no native LIF: nothing of this build runs the zoo's kernels
        for train in (False, True):
            m, m_ref = copy.deepcopy(model).float(), copy.deepcopy(model).float()
            s, out, g = _spikes_logits_grads(m, x.float(), train)
            with pytorch_path():
                s_ref, out_ref, g_ref = _spikes_logits_grads(m_ref, x.float(), train)
            key = f"{name} kernels vs PyTorch path ({'train' if train else 'eval'})"
            diffs[key] = d = max([rel(out, out_ref)] + [rel(a, b) for a, b in zip(g, g_ref)])
            flipped = sum(int((a != b).sum()) for a, b in zip(s, s_ref))
            if flipped or len(s) != len(s_ref) or len(g) != len(g_ref) or not d <= tol:
                failures.append(f"{key}: {flipped} spikes differ, max relative |diff| {d:.3g}")
    if failures:
        raise BenchCheckError("the timed float32 builds' kernels do not compute the PyTorch path's function: "
                              + "; ".join(failures))
    return diffs


def autocast(amp: str, device: torch.device | str):
    """``torch.autocast`` to ``AMP_MODES[amp]`` on ``device`` (disabled for ``'off'``)."""
    dtype = AMP_MODES[amp]
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, amp: str = "off",
               scaler: torch.amp.GradScaler | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step: forward and loss under ``autocast(amp)``, backward and step outside it (as torch's AMP
    recipe), through ``scaler`` where one is given (fp16). Returns the (detached) logits and loss."""
    with autocast(amp, x.device):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return logits.detach(), loss.detach()


def saved_for_backward_bytes(fn: Callable[[], object], model: nn.Module | None = None) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs and that are still held
    when it returns (with its result), the parameters of ``model`` left out (they live anyway): the
    activation memory of training. Counted with ``torch.autograd.graph.saved_tensors_hooks``:
    deterministic, the same on every device, unlike an allocator's peak. A graph that ``fn`` builds and
    drops on the way (snnTorch's detached reset signal) is freed before backward and not counted; counting
    it would also let a later tensor at its freed address hide behind it."""
    params = {(p.device, p.untyped_storage().data_ptr()) for p in (model.parameters() if model else ())}
    saved: list[tuple[weakref.ref, tuple, int]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        key = (t.device, s.data_ptr())
        if key not in params:
            saved.append((weakref.ref(t), key, s.nbytes()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()  # noqa: F841 (holds the graph, and so what it saved, while the storages are counted)
    gc.collect()  # a dropped graph in a reference cycle
    live = {key: nbytes for ref, key, nbytes in saved if ref() is not None}
    return sum(live.values())


def training_forward_saved_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: str = "off") -> int:
    """``saved_for_backward_bytes`` of one training forward of ``model`` on ``x`` ``[N, C, H, W]`` with its
    cross-entropy against ``y`` ``[N]`` (the loss is part of what backward needs), under ``autocast(amp)``;
    the graph is dropped unused."""
    model.train()

    def forward():
        with autocast(amp, x.device):
            return F.cross_entropy(model(x), y)

    return saved_for_backward_bytes(forward, model)


def check_config(cfg: BenchConfig) -> torch.device:
    """Refuse a configuration ``run_bench`` cannot honour (``ValueError`` naming expected and got), before any
    model is built; returns the device."""
    unknown = [b for b in cfg.builds if b not in BUILDS]
    if unknown or "zoo" not in cfg.builds:
        raise InvalidArgumentError(f"builds must include 'zoo' and be among {', '.join(BUILDS)}; got {', '.join(cfg.builds)}")
    if min(cfg.batch, cfg.T, cfg.reps, cfg.input_size) < 1 or cfg.warmup < 0:
        raise InvalidArgumentError("batch, T, reps and input size must be >= 1 and warmup >= 0")
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError("--device cuda was asked for but no CUDA device is available")
    if cfg.amp not in AMP_MODES:
        raise InvalidArgumentError(f"amp must be one of {', '.join(AMP_MODES)}; got {cfg.amp!r}")
    if cfg.amp == "fp16" and device.type != "cuda":
        raise InvalidArgumentError(f"--amp fp16 needs a CUDA device (fp16 autocast with a GradScaler), got device "
                                   f"{cfg.device!r}; use --amp bf16 on the CPU")
    return device


def make_builds(model: nn.Module, cfg: BenchConfig) -> tuple[dict[str, nn.Module], list[str]]:
    """Every build of ``cfg.builds`` made from ``model`` (``'zoo'`` first) and the notes on those that cannot
    run here (``BuildUnavailable``), which are left out."""
    models, notes = {}, []
    for n in ["zoo"] + [b for b in cfg.builds if b != "zoo"]:
        try:
            models[n] = BUILDS[n].make(model, cfg)
        except BuildUnavailable as e:
            notes.append(f"{n}: not run ({e})")
    if torch.device(cfg.device).type == "cuda" and any(n.startswith("spikingjelly") for n in models):
        notes.append("SpikingJelly's LIFNode runs its PyTorch loop here: its CUDA and Triton LIF kernels accept "
                     "only its built-in smooth surrogates, not the paper's rectangular one (surrogate.Rect)")
    return models, notes


def run_bench(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> dict:
    """Build, check, time. Returns a JSON-able dict: config, machine, check, per-build medians (ms) and all
    samples, peak training memory (MiB) and the ratios."""
    start = time.perf_counter()
    say = log or (lambda s: None)
    log = lambda s: say(f"[{time.perf_counter() - start:5.1f} s] {s}")  # noqa: E731
    device = check_config(cfg)
    machine = machine_info(device)  # the load average at the start; the end's is added below
    model = reference_model(cfg)
    models, notes = make_builds(model, cfg)
    names = list(models)
    fused = {}
    for n in names:
        if BUILDS[n].fuse is not None:
            try:
                fused[n] = BUILDS[n].fuse(models[n])
            except ImportError as e:
                notes.append(f"{n}: no fused inference ({e})")
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    x = torch.randn(cfg.batch, cfg.in_chans, cfg.input_size, cfg.input_size, generator=g).to(device)
    y = torch.randint(0, cfg.num_classes, (cfg.batch,), generator=g).to(device)
    log("checking that the builds compute the same function ...")
    check = check_same_function(models, x[:4], cfg.tol)  # 4 images suffice; float64 convs are slow on CPU
    log("checking the float32 builds' kernels against the PyTorch path ...")
    check["kernels_max_abs_diff"] = check_kernels(models, x[:4])  # float32: KERNEL_TOL, not the float64 tol

    opts = {n: torch.optim.SGD(m.parameters(), lr=cfg.lr, momentum=0.9) for n, m in models.items()}
    # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none
    scalers = {n: torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16") for n in names}

    def train(n):
        models[n].train()
        opts[n].zero_grad(set_to_none=True)
        train_step(models[n], opts[n], x, y, cfg.amp, scalers[n])

    @torch.no_grad()
    def infer(m):
        with autocast(cfg.amp, device):
            m(x)

    samples: dict[str, dict[str, list[float]]] = {n: dict(train=[], infer=[], fused_infer=[]) for n in names}
    log(f"timing {cfg.warmup} warm-up + {cfg.reps} interleaved train steps per build ...")
    for r in range(cfg.warmup + cfg.reps):
        for n in names[r % len(names):] + names[:r % len(names)]:  # rotate the order every repetition
            t = time_call(lambda: train(n), device)
            if r >= cfg.warmup:
                samples[n]["train"].append(t)
    for m in models.values():
        m.eval()
    variants = [(n, "infer", models[n]) for n in names] + [(n, "fused_infer", fused[n]) for n in names if n in fused]
    log(f"timing {cfg.warmup} warm-up + {cfg.reps} interleaved inference passes per build ...")
    for r in range(cfg.warmup + cfg.reps):
        k = r % len(variants)
        for n, key, m in variants[k:] + variants[:k]:
            t = time_call(lambda: infer(m), device)
            if r >= cfg.warmup:
                samples[n][key].append(t)
    memory, saved = {}, {}
    if cfg.memory:
        log("measuring peak training memory ...")
        for n in names:
            models[n].train()
            opts[n].zero_grad(set_to_none=True)
            memory[n] = peak_memory(lambda: train_step(models[n], opts[n], x, y, cfg.amp, scalers[n]),
                                    device) / 2 ** 20
            saved[n] = training_forward_saved_bytes(models[n], x, y, cfg.amp) / 2 ** 20
    rows = {n: dict(label=BUILDS[n].label,
                    train_ms=1e3 * median(samples[n]["train"]), infer_ms=1e3 * median(samples[n]["infer"]),
                    fused_infer_ms=1e3 * median(samples[n]["fused_infer"]) if samples[n]["fused_infer"] else None,
                    peak_train_mib=memory.get(n), saved_for_backward_mib=saved.get(n), samples_ms={k: [1e3 * t for t in v] for k, v in samples[n].items()})
            for n in names}
    if "load_avg_1min" in machine:
        machine["load_avg_1min_end"] = machine_info(device)["load_avg_1min"]
    return dict(config=asdict(cfg), arch_kwargs={k: list(model.model_args[k]) if k == "channels" else
                                                 model.model_args[k] for k in ("stem_width", "channels")},
                machine=machine, seconds=time.perf_counter() - start, check=check, rows=rows,
                ratios=_ratios(rows), notes=notes)


def model_text(config: dict) -> str:
    """What was timed, for a table's head: ``arch at width xW`` (random weights) or the model's name (its own
    weights and widths)."""
    if names_a_model(config["arch"]):
        return f"{config['arch']} (its weights)"
    return f"{config['arch']} at width x{config['width']}"


def _ratios(rows: dict) -> dict:
    """The comparisons issue 8 sets goals on (None where a build was not run)."""
    def r(a, b):
        return a / b if (a is not None and b) else None

    z, sj, sjm, snn, ann, ref = (rows.get(n, {}) for n in ("zoo", "spikingjelly", "spikingjelly-memopt", "snntorch",
                                                           "ann", "zoo-reference"))
    return {
        "train_speedup_vs_spikingjelly": r(sj.get("train_ms"), z["train_ms"]),
        "train_speedup_vs_snntorch": r(snn.get("train_ms"), z["train_ms"]),
        "train_over_ann": r(z["train_ms"], ann.get("train_ms")),
        "fused_over_unfused_inference": r(z.get("fused_infer_ms"), z["infer_ms"]),
        # the least fused/unfused can be: a fused SNN costing no more than the ANN's folded convs + ReLU
        "fused_over_unfused_floor": r(ann.get("fused_infer_ms"), z["infer_ms"]),
        "fused_over_ann_inference": r(z.get("fused_infer_ms"), ann.get("infer_ms")),
        "inference_over_ann": r(z["infer_ms"], ann.get("infer_ms")),
        "peak_train_memory_vs_spikingjelly": r(z.get("peak_train_mib"), sj.get("peak_train_mib")),
        "saved_for_backward_over_ann": r(z.get("saved_for_backward_mib"), ann.get("saved_for_backward_mib")),
        "saved_for_backward_vs_spikingjelly": r(z.get("saved_for_backward_mib"), sj.get("saved_for_backward_mib")),
        "saved_for_backward_vs_layer_by_layer": r(z.get("saved_for_backward_mib"), ref.get("saved_for_backward_mib")),
        "train_over_layer_by_layer": r(z["train_ms"], ref.get("train_ms")),
        "train_speedup_vs_spikingjelly_memopt": r(sjm.get("train_ms"), z["train_ms"]),
        "saved_for_backward_vs_spikingjelly_memopt": r(z.get("saved_for_backward_mib"),
                                                       sjm.get("saved_for_backward_mib")),
        "memopt_saved_for_backward_over_ann": r(sjm.get("saved_for_backward_mib"), ann.get("saved_for_backward_mib")),
    }


def format_bench(res: dict) -> str:
    """The README table and the ratio lines."""
    from ..measure.profiling import describe_machine
    from ..measure.report import fmt_num, format_table

    c, rows = res["config"], res["rows"]
    ann = rows.get("ann", {})
    zoo_mem = rows["zoo"]["peak_train_mib"]

    def rel(v, ref):
        return f"{v / ref:.2f}x" if (v is not None and ref) else "-"

    table = format_table(
        ["build", "train step (ms)", "/ ANN", "inference (ms)", "/ ANN", "fused inference (ms)", "/ ANN",
         "peak train memory (MiB)", "/ zoo", "saved for backward (MiB)", "/ ANN"],
        [[r["label"], r["train_ms"], rel(r["train_ms"], ann.get("train_ms")), r["infer_ms"],
          rel(r["infer_ms"], ann.get("infer_ms")), r["fused_infer_ms"], rel(r["fused_infer_ms"], ann.get("infer_ms")),
          r["peak_train_mib"], rel(r["peak_train_mib"], zoo_mem), r.get("saved_for_backward_mib"),
          rel(r.get("saved_for_backward_mib"), ann.get("saved_for_backward_mib"))] for r in rows.values()])
    a = res["arch_kwargs"]
    head = (f"{model_text(c)} (stem {a['stem_width']}, stages {'-'.join(map(str, a['channels']))}), "
            f"input {c['in_chans']}x{c['input_size']}x{c['input_size']}, batch {c['batch']}, T={c['T']}, "
            f"{c['num_classes']} classes; medians of {c['reps']} interleaved repetitions after {c['warmup']} warm-up"
            + _amp_text(c.get("amp", "off")))
    diffs = ", ".join(f"{k} {fmt_num(v)}" for k, v in res["check"]["max_abs_diff"].items())
    ratio_text = {"train_speedup_vs_spikingjelly": "train step: zoo is {:.2f}x as fast as SpikingJelly",
                  "train_speedup_vs_snntorch": "train step: zoo is {:.2f}x as fast as snnTorch",
                  "train_over_ann": "train step: zoo / ANN floor = {:.2f}",
                  "inference_over_ann": "inference: zoo / ANN floor = {:.2f}",
                  "fused_over_unfused_inference": "inference: zoo fused / zoo unfused = {:.2f}",
                  "fused_over_unfused_floor": "inference: ANN floor with BN folded / zoo unfused = {:.2f} (the "
                                              "lowest fused / unfused can reach: the convolutions alone)",
                  "fused_over_ann_inference": "inference: zoo fused / ANN floor (unfused) = {:.2f}",
                  "peak_train_memory_vs_spikingjelly": "peak training memory: zoo / SpikingJelly = {:.2f}",
                  "saved_for_backward_over_ann": "saved for backward: zoo / ANN floor = {:.2f}",
                  "saved_for_backward_vs_spikingjelly": "saved for backward: zoo / SpikingJelly = {:.2f}",
                  "saved_for_backward_vs_layer_by_layer": "saved for backward: zoo (lean) / zoo layer by layer = {:.2f}",
                  "train_over_layer_by_layer": "train step: zoo (lean) / zoo layer by layer = {:.2f}",
                  "train_speedup_vs_spikingjelly_memopt": "train step: zoo is {:.2f}x as fast as SpikingJelly + memopt",
                  "saved_for_backward_vs_spikingjelly_memopt": "saved for backward: zoo / SpikingJelly + memopt = {:.2f}",
                  "memopt_saved_for_backward_over_ann": "saved for backward: SpikingJelly + memopt / ANN floor = {:.2f}"}
    lines = [head, f"machine: {describe_machine(res['machine'])}; whole run {res['seconds']:.0f} s",
             f"check passed (same logits from the same weights, float64; max |diff|): {diffs}", "", table, ""]
    lines += [ratio_text[k].format(v) for k, v in res["ratios"].items() if v is not None]
    lines += [f"note: {n}" for n in res["notes"]]
    return "\n".join(lines)


def _amp_text(amp: str) -> str:
    return "" if amp == "off" else (f"; train steps and inference under torch.autocast({amp})"
                                    + (" with a GradScaler" if amp == "fp16" else ""))


def format_summary(results: list[dict]) -> str:
    """One table over several ``run_bench`` results (e.g. T = 2/4/6, with and without AMP): a row per run and
    build, times relative to the same run's ANN floor; the machine of the first run above it."""
    from ..measure.profiling import describe_machine
    from ..measure.report import format_table

    rows = []
    for res in results:
        c, ann = res["config"], res["rows"].get("ann", {})
        for r in res["rows"].values():
            rel = r["train_ms"] / ann["train_ms"] if ann.get("train_ms") else None
            rows.append([str(c["T"]), c.get("amp", "off"), r["label"], r["train_ms"], f"{rel:.2f}x" if rel else "-",
                         r["infer_ms"], r["saved_for_backward_mib"], r["peak_train_mib"]])
    head = ""
    if results:
        c = results[0]["config"]
        head = (f"{model_text(c)}, input {c['in_chans']}x{c['input_size']}x{c['input_size']}, "
                f"batch {c['batch']}; machine: {describe_machine(results[0]['machine'])}\n\n")
    return head + format_table(["T", "AMP", "build", "train step (ms)", "/ ANN", "inference (ms)",
                                "saved for backward (MiB)", "peak train memory (MiB)"], rows, align="lll" + "r" * 5)
