"""The Table-4 architectures: sizes and compute against independent counts, the timm contract, backends,
pretrained tags and bad input."""
import json

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

import zoo
from adapters._checks import value_checks
from tests.support.cli import assert_cli_user_error, assert_user_error, run_cli, tree_digest
from tests.support.models import make_tiny_narrow
from zoo import PretrainedUnavailableError, UnknownModelError, UnknownTagError

# Table 4, transcribed: (stem kernel, stem width, stem stride, [(block, width, depth, stride)], head)
TABLE4 = {
    "sresnet17_tdbn": (3, 64, 1, [("basic", 64, 3, 2), ("basic", 128, 4, 2)], [256, 11]),
    "sresnet19_tdbn": (3, 128, 1, [("basic", 128, 3, 1), ("basic", 256, 3, 2), ("basic", 512, 2, 2)], [256, 10]),
    "sresnet34_tdbn": (7, 64, 2, [("basic", w, d, 2) for w, d in [(64, 3), (128, 4), (256, 6), (512, 3)]], [1000]),
    "sresnet34_large_tdbn": (7, 128, 2, [("basic", w, d, 2) for w, d in [(128, 3), (256, 4), (512, 6), (1024, 3)]],
                             [1000]),
    "sresnet50_tdbn": (7, 64, 2, [("bottleneck", w, d, 2) for w, d in [(64, 3), (128, 4), (256, 6), (512, 3)]],
                       [1000]),
}


def table4_count(arch, in_chans, size):
    """Conv + fc weights and ANN multiply-accumulates, counted from the table (no model code)."""
    k, width, stride, stages, head = TABLE4[arch]
    weights = macs = 0

    def conv(cin, cout, kk, s, hw):
        nonlocal weights, macs
        out = (hw + 2 * (kk // 2) - kk) // s + 1
        weights += cin * cout * kk * kk
        macs += cin * cout * kk * kk * out * out
        return out

    hw = conv(in_chans, width, k, stride, size)
    cin = width
    for block, w, depth, s in stages:
        for j in range(depth):
            st = s if j == 0 else 1
            cout = w if block == "basic" else 4 * w
            if block == "basic":
                h2 = conv(cin, w, 3, st, hw)
                conv(w, w, 3, 1, h2)
            else:
                conv(cin, w, 1, 1, hw)
                h2 = conv(w, w, 3, st, hw)
                conv(w, cout, 1, 1, h2)
            if st != 1 or cin != cout:
                conv(cin, cout, 1, st, hw)
            cin, hw = cout, h2
    for n in head:
        weights += cin * n
        macs += cin * n
        cin = n
    return weights, macs


def conv_fc_weights(model):
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def model_macs(model, x):
    """ANN-equivalent MACs measured from the model's own layers on one forward at T=1."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total[0] += out[0].numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
        else:
            total[0] += m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return total[0] // x.shape[0]


def test_paper_reference_counts():
    # the issue's figures, independently of the model: weights exact, MACs vs Table 6's 2.2e9 / 1.4e10
    assert table4_count("sresnet19_tdbn", 3, 32)[0] == 12_687_232
    assert table4_count("sresnet34_large_tdbn", 3, 224)[0] == 86_092_160
    assert table4_count("sresnet19_tdbn", 3, 32)[1] == pytest.approx(2.285e9, rel=1e-3)
    assert table4_count("sresnet34_large_tdbn", 3, 224)[1] == pytest.approx(1.447e10, rel=1e-3)


@pytest.mark.parametrize("arch", list(TABLE4))
def test_architectures_match_table4(arch):
    model = zoo.create(arch, T=1)
    c, h, _ = model.pretrained_cfg["input_size"]
    size = 32 if h > 64 else h  # ResNet-34/50 checked at 32x32 here (fast); 224x224 below for 34-large
    weights, macs = table4_count(arch, c, size)
    assert conv_fc_weights(model) == weights
    assert model_macs(model.eval(), torch.rand(1, c, size, size)) == macs


@pytest.mark.slow
def test_resnet34_large_macs_at_224():
    model = zoo.create("sresnet34_large_tdbn", T=1).eval()
    assert conv_fc_weights(model) == 86_092_160
    assert model_macs(model, torch.rand(1, 3, 224, 224)) == pytest.approx(1.447e10, rel=1e-3)


def test_table4_details():
    r19 = zoo.create("sresnet19_tdbn")
    assert (r19.T, r19.num_classes, r19.in_chans) == (6, 10, 3)
    assert r19.head_fc.out_features == 256 and r19.fc.in_features == 256
    assert [getattr(r19, f"layer{i}")[0].conv1.stride[0] for i in (1, 2, 3)] == [1, 2, 2]
    r17 = zoo.create("sresnet17_tdbn")
    assert (r17.T, r17.num_classes, r17.in_chans) == (40, 11, 2)
    r34 = zoo.create("sresnet34_tdbn")
    assert r34.conv1.kernel_size == (7, 7) and r34.conv1.stride == (2, 2) and r34.head_fc is None
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for m in r34.modules())
    assert zoo.create("sresnet50_tdbn").fc.in_features == 2048


def small(arch="sresnet19_tdbn", **kw):
    kw.setdefault("T", 2)
    return zoo.create(arch, **kw)


def test_static_input_equals_the_same_frame_at_every_step():
    model = small().eval()
    x = torch.randn(2, 3, 16, 16)
    logits = model(x)
    assert logits.shape == (2, 10)
    torch.testing.assert_close(model(x.unsqueeze(0).repeat(2, 1, 1, 1, 1)), logits)
    steps = model.forward_steps(x)
    assert steps.shape == (2, 2, 10)
    torch.testing.assert_close(steps.mean(0), logits, atol=1e-5, rtol=1e-5)  # eq. 11


def test_no_state_leaks_between_calls():
    model = small().eval()
    x = torch.randn(2, 3, 16, 16)
    first = model(x)
    model(torch.randn(3, 3, 16, 16))
    assert torch.equal(model(x), first)


def test_timm_contract():
    model = timm.create_model("sresnet19_tdbn", T=2)
    assert isinstance(model, zoo.SpikingResNet)
    x = torch.randn(2, 3, 16, 16)
    logits = model(x)
    logits.sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad
    model.eval()
    feats = model.forward_features_steps(x)
    assert feats.shape == (2, 2, 512, 4, 4) and set(feats.unique().tolist()) <= {0.0, 1.0}
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, model.head_hidden_size) == (2, 256)
    torch.testing.assert_close(model.fc(pre), model.forward_head(feats), atol=1e-5, rtol=1e-5)
    sd = model.state_dict()
    cfg = model.pretrained_cfg
    assert f"{cfg['first_conv']}.weight" in sd and f"{cfg['classifier']}.weight" in sd
    model.reset_classifier(0)
    assert model(x).shape == (2, 256)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7)
    assert "sresnet34_large_tdbn.in1k_t6" in zoo.list_pretrained("sresnet*")  # timm lists loadable tags only


def test_in1k_models_at_small_size_forward_and_backward():
    for arch in ("sresnet34_tdbn", "sresnet50_tdbn"):
        model = small(arch, T=1)  # 64x64: the last stage is 2x2, so its batch statistics are not degenerate
        y = model(torch.randn(2, 3, 64, 64))
        assert y.shape == (2, 1000) and torch.isfinite(y).all()
        y.logsumexp(1).sum().backward()
        assert model.conv1.weight.grad.abs().sum() > 0


def test_one_state_dict_gives_the_same_logits_on_every_backend():
    ref = small(T=3)
    for _ in range(2):
        ref(torch.randn(4, 3, 16, 16))  # non-trivial running statistics
    ref.eval()
    x = torch.randn(2, 3, 16, 16)
    expected = ref(x)
    for backend in ("spikingjelly", "snntorch"):
        other = small(T=3, neuron=backend)
        other.load_state_dict(ref.state_dict(), strict=True)
        assert torch.equal(other.eval()(x), expected), backend


def test_model_args_are_json_and_recorded():
    model = small(v_th=0.4, tau_decay=0.5, surrogate_width=0.8, identity_norm=False, norm="bn")
    args = json.loads(json.dumps(model.model_args))
    assert args["v_th"] == 0.4 and args["identity_norm"] is False and args["norm"] == "bn" and args["T"] == 2
    rebuilt = zoo.SpikingResNet(**args)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert model.layer1[0].act1.v_th == 0.4 and model.layer1[0].shortcut.bn is None
    torch.testing.assert_close(rebuilt.eval()(torch.randn(1, 3, 8, 8) * 0), model.eval()(torch.randn(1, 3, 8, 8) * 0))


def test_pretrained_tags_cover_every_paper_result():
    expected = {"sresnet19_tdbn.cifar10_t6": (93.16, 6), "sresnet19_tdbn.cifar10_t4": (92.92, 4),
                "sresnet19_tdbn.cifar10_t2": (92.34, 2), "sresnet19_tdbn.cifar10dvs_t10": (67.8, 10),
                "sresnet17_tdbn.dvsgesture_t40": (96.87, 40), "sresnet34_tdbn.in1k_t6": (63.72, 6),
                "sresnet34_large_tdbn.in1k_t6": (67.05, 6), "sresnet50_tdbn.in1k_t6": (64.88, 6)}
    assert set(expected) <= set(zoo.list_pretrained())
    for name, (top1, T) in expected.items():
        arch = name.split(".")[0]
        model = zoo.create(name, T=1) if arch != "sresnet17_tdbn" else zoo.create(name)
        cfg = model.pretrained_cfg
        assert cfg["paper_top1"] == top1 and cfg["T"] == T and cfg["tag"] == name.split(".")[1]
        assert cfg["hf_hub_id"].endswith(name) and cfg["recipe"]["lr"] == 0.1 and cfg["recipe"]["momentum"] == 0.9
        assert cfg["mean"] and cfg["std"] and cfg["dataset"]
    assert zoo.create("sresnet19_tdbn.cifar10_t4").T == 4
    assert zoo.create("sresnet34_large_tdbn", T=1).pretrained_cfg["tag"] == "in1k_t6"  # the default tag
    dvs = zoo.create("sresnet19_tdbn.cifar10dvs_t10")
    assert (dvs.in_chans, dvs.T) == (2, 10)
    assert zoo.create("sresnet19_tdbn.cifar10_t2").pretrained_cfg["recipe"]["lr_step_epochs"] == 35
    assert zoo.create("sresnet50_tdbn", T=1).pretrained_cfg["recipe"]["lr_step_epochs"] == 45


def test_a_tag_can_fix_layout_arguments():
    """``model_args`` of a tag (the Fashion-MNIST checkpoint's 32-channel stem) build that layout; arguments
    given explicitly win; the architecture's own default (its first tag, mnist_t2) keeps ARCH_CFGS."""
    assert zoo.create("sresnet19_narrow_tdbn").conv1.out_channels == zoo.ARCH_CFGS["sresnet19_narrow_tdbn"]["stem_width"]
    fashion = zoo.create("sresnet19_narrow_tdbn.fashion_mnist_t2")
    assert fashion.conv1.out_channels == 32 and fashion.model_args["stem_width"] == 32
    assert fashion.layer1[0].conv1.in_channels == 32
    assert zoo.create("sresnet19_narrow_tdbn.fashion_mnist_t2", stem_width=8).conv1.out_channels == 8


def test_pretrained_without_checkpoint_raises_with_the_train_command():
    with pytest.raises(PretrainedUnavailableError, match="tdbn-zoo train --preset sresnet19_tdbn.cifar10_t2"):
        zoo.create("sresnet19_tdbn.cifar10_t2", pretrained=True)
    with pytest.raises(PretrainedUnavailableError):
        timm.create_model("sresnet50_tdbn.in1k_t6", pretrained=True, T=1)


def test_pretrained_file_adapts_first_conv_and_drops_head(tmp_path):
    src = small().eval()
    path = tmp_path / "model.safetensors"
    save_file(src.state_dict(), str(path))
    same = zoo.create("sresnet19_tdbn", pretrained=True, T=2, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(same(x), src(x))
    adapted = zoo.create("sresnet19_tdbn", pretrained=True, T=2, in_chans=2, num_classes=5,
                         pretrained_cfg_overlay=dict(file=str(path)))
    assert adapted.conv1.weight.shape[1] == 2 and adapted.fc.out_features == 5
    w = src.conv1.weight
    torch.testing.assert_close(adapted.conv1.weight, w[:, :2] * 3 / 2)  # timm's adapt_input_conv: 3 -> 2 channels
    torch.testing.assert_close(adapted.layer2[0].conv1.weight, src.layer2[0].conv1.weight)
    assert adapted(torch.randn(1, 2, 16, 16)).shape == (1, 5)


def test_bad_names_and_inputs_are_named():
    with pytest.raises(UnknownModelError, match="Did you mean sresnet19_tdbn"):
        zoo.create("sresnet91_tdbn")
    with pytest.raises(UnknownTagError, match="sresnet19_tdbn.cifar10_t6"):
        zoo.create("sresnet19_tdbn.cifar100_t6")
    with pytest.raises(UnknownTagError, match="Did you mean sresnet19_tdbn.cifar10_t6"):
        zoo.create("sresnet19_tdbn.cifar10_t5")
    model = small()
    with pytest.raises(ValueError, match="expects 3 input channels, got 2.*in_chans=2"):
        model(torch.randn(1, 2, 16, 16))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\].*\[T, N, C, H, W\].*got shape \(3, 16, 16\)"):
        model(torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match="runs T=2 time steps but the input has T=5.*T=5"):
        model(torch.randn(5, 1, 3, 16, 16))
    with pytest.raises(TypeError, match="floating-point.*uint8"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    model(torch.full((1, 3, 16, 16), float("inf")))  # a training forward reads no values by default (no host sync)
    with value_checks(), pytest.raises(ValueError, match="Inf"):
        model(torch.full((1, 3, 16, 16), float("inf")))
    with torch.no_grad(), pytest.raises(ValueError, match="Inf"):  # inference still refuses by default
        model(torch.full((1, 3, 16, 16), float("inf")))
    model.T = 5  # documented: change T on the model to run longer event sequences
    assert model(torch.randn(5, 1, 3, 16, 16)).shape == (1, 10)


def test_features_only_gives_firing_rate_maps_per_stage():
    model = timm.create_model("sresnet19_tdbn", features_only=True, T=2)
    assert model.feature_info.channels() == [128, 128, 256, 512]
    assert model.feature_info.reduction() == [1, 1, 2, 4]
    x = torch.randn(2, 3, 16, 16)
    feats = model(x)
    assert [tuple(f.shape) for f in feats] == [(2, 128, 16, 16), (2, 128, 16, 16), (2, 256, 8, 8), (2, 512, 4, 4)]
    # the last map is the firing rate of the last stage's spikes: compare with the full model's features
    full = zoo.create("sresnet19_tdbn", T=2)
    full.load_state_dict(model.model.state_dict(), strict=False)
    torch.testing.assert_close(feats[-1], full.forward_features(x))
    assert all(((f * 2) == (f * 2).round()).all() for f in feats)  # T=2: rates in {0, 0.5, 1}
    pruned = timm.create_model("sresnet34_tdbn", features_only=True, T=1, out_indices=(1, 2))
    assert not hasattr(pruned.model, "layer3") and isinstance(pruned.model.fc, nn.Identity)  # head pruned
    assert [f.shape[1] for f in pruned(torch.randn(2, 3, 64, 64))] == [64, 128]


# ---- tdbn-zoo models: every argument and its default, the names --model-kw takes ----------------------------
def test_models_command_lists_every_argument_with_the_default_create_gives(capsys):
    import inspect
    import json as _json

    from eval.cli import main
    from zoo.spiking_resnet import SpikingResNet

    assert main(["models", "sresnet19_narrow_tdbn", "--json"]) == 0
    doc = _json.loads(capsys.readouterr().out)
    names = [k for k in inspect.signature(SpikingResNet.__init__).parameters if k != "self"]
    assert list(doc["arguments"]) == names  # every argument, in the constructor's order
    built = zoo.create("sresnet19_narrow_tdbn").model_args  # what zoo.create(arch) really builds
    for k, v in doc["arguments"].items():
        assert built[k] == v, k
    assert doc["tags"]["sresnet19_narrow_tdbn.fashion_mnist_t2"]["model_args"] == {"stem_width": 32}
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert all(f"{a}:" in text for a in zoo.ARCH_CFGS) and "sresnet19_tdbn.cifar10_t2" in text
    assert main(["models", "sresnet19_tdbn"]) == 0
    assert "stem_width       128" in capsys.readouterr().out


def test_an_unknown_model_argument_names_the_valid_ones(tmp_path, capsys):
    from eval.cli import main
    from zoo.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"no model argument 'width'; its arguments are block, layers, "
                                                   r"channels, strides, stem_width"):
        zoo.create("sresnet19_tdbn", width=0.25)
    assert main(["train", "--preset", "sresnet19_tdbn.cifar10_t2", "--out", str(tmp_path / "r"),
                 "--model-kw", "width=0.25"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model argument 'width'" in err[0] and "stem_width" in err[0]
    assert not (tmp_path / "r").exists()  # refused before any data or model


def test_width_means_the_same_in_every_command():
    """--width scales the architecture's stem and stages, as bench always did, and train/eval take it too."""
    from eval.bench.runner import BenchConfig, _arch_kwargs
    from eval.cli.commands._args import model_kwargs

    kw = model_kwargs(["head_hidden=8"], "sresnet19_tdbn", 0.25)
    assert kw == dict(channels=[32, 64, 128], stem_width=32, head_hidden=8)
    assert _arch_kwargs(BenchConfig(width=0.25)) == dict(channels=(32, 64, 128), stem_width=32)
    assert model_kwargs(["stem_width=5"], "sresnet19_tdbn", 0.25)["stem_width"] == 5  # --model-kw wins
# ---- model arguments out of range: one check for zoo.create, a config.json and --model-kw ----------------------
OUT_OF_RANGE = [
    (dict(drop_rate=-1.0), r"drop_rate must be a number in \[0, 1\), got -1\.0"),
    (dict(drop_rate=1.0), r"drop_rate must be a number in \[0, 1\)"),
    (dict(T=10 ** 18), r"T must be an integer in \[1, 10000\], got 1000000000000000000"),
    (dict(T=float("inf")), r"T must be an integer >= 1, got inf"),
    (dict(stem_width=0), r"stem_width must be an integer >= 1"),
    (dict(channels=[4, 1 << 20, 8]), r"channels\[1\] must be an integer in \[1, 65536\]"),
    (dict(layers=[100_000, 1, 1]), r"layers\[0\] must be an integer in \[1, 1000\]"),  # minutes to build
    (dict(strides=[0, 2, 2]), r"strides\[0\] must be an integer >= 1"),
    (dict(v_th="nan"), r"v_th must be a finite number, got 'nan'"),  # a word: '>' on a str was a TypeError
    (dict(tau_decay=2), r"tau_decay must lie in \[0, 1\], got 2"),
]


@pytest.mark.parametrize("kw,needle", OUT_OF_RANGE, ids=[str(k) for k, _ in OUT_OF_RANGE])
def test_model_arguments_out_of_range_everywhere_they_enter(kw, needle, tmp_path, capsys):
    from zoo.errors import CheckpointError, InvalidArgumentError

    err = assert_user_error(lambda: make_tiny_narrow(**kw), needle)
    assert isinstance(err, InvalidArgumentError)
    # a checkpoint whose config.json says it: refused naming the file, before any tensor is allocated
    folder = zoo.save_pretrained(make_tiny_narrow(), tmp_path / "ckpt", tag="sresnet19_narrow_tdbn.fashion_mnist_t2")
    config = json.loads((folder / "config.json").read_text())
    config["model_args"].update(kw)
    (folder / "config.json").write_text(json.dumps(config))
    err = assert_user_error(lambda: zoo.create(str(folder), pretrained=True), r"config\.json", needle)
    assert isinstance(err, CheckpointError)
    # tdbn-zoo train --model-kw: the same words, before any data is read
    before = tree_digest(tmp_path)
    argv = ["train", "--preset", "sresnet19_narrow_tdbn.fashion_mnist_t2", "--data-dir", tmp_path / "none",
            "--out", tmp_path / "run"] + [a for k, v in kw.items() for a in ("--model-kw", f"{k}={json.dumps(v)}")]
    assert_cli_user_error(run_cli(argv, capsys), "--model-kw", needle)
    assert tree_digest(tmp_path) == before


def test_model_kw_T_infinite_or_given_twice_is_one_clear_line(tmp_path, capsys):
    base = ["train", "--preset", "sresnet19_narrow_tdbn.fashion_mnist_t2", "--data-dir", tmp_path, "--out",
            tmp_path / "run"]
    assert_cli_user_error(run_cli([*base, "--model-kw", "T=1e400"], capsys), "--model-kw", "T must be", "inf")
    assert_cli_user_error(run_cli([*base, "--T", "4", "--model-kw", "T=2"], capsys), "--T 4", "--model-kw T=2",
                          "once")
    assert not (tmp_path / "run").exists()


def test_an_empty_model_name_is_refused_in_the_users_terms():
    for name in ("", "  "):
        assert_user_error(lambda: zoo.create(name), "model name is empty", "architecture")


@pytest.mark.parametrize("content,needles", [
    ("[" * 200_000 + "]" * 200_000, ["nested too deeply"]),
    ('{"architecture": "sresnet19_narrow_tdbn", "pad": "' + "x" * (2 << 20) + '"}', ["larger than", "1048576"]),
    ("", ["empty"]),
], ids=["nested 200,000 deep", "over 1 MiB", "empty"])
def test_a_hostile_config_json_is_refused_naming_the_file(tmp_path, content, needles):
    folder = zoo.save_pretrained(make_tiny_narrow(), tmp_path / "ckpt", tag="sresnet19_narrow_tdbn.fashion_mnist_t2")
    (folder / "config.json").write_text(content)
    assert_user_error(lambda: zoo.create(str(folder), pretrained=True), r"config\.json", *needles)
