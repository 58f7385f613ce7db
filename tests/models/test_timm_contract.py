"""timm's model contract, rule by rule (from timm's models/resnet.py, _builder.py, _features_fx.py and
_registry.py): feature widths, forward_features/forward_head, every global pooling, cfg fields, FX tracing,
the features_only wrappers and list_pretrained. Tiny widths and T=1-2 keep every test fast."""
import math

import pytest
import timm
import torch
from timm.layers import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import zoo
from zoo import PretrainedUnavailableError
from zoo.spiking_resnet import ARCH_CFGS, POOL_TYPES
from zoo.tags import TAGS

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {  # each architecture's layout at a few channels per stage
    "sresnet17_tdbn": dict(channels=(4, 8), stem_width=4, head_hidden=8),
    "sresnet19_tdbn": dict(channels=(4, 8, 16), stem_width=4, head_hidden=8),
    "sresnet19_narrow_tdbn": dict(channels=(4, 8, 16), stem_width=4, head_hidden=8),
    "sresnet34_tdbn": dict(channels=(4, 4, 8, 8), stem_width=4),
    "sresnet34_large_tdbn": dict(channels=(4, 4, 8, 8), stem_width=4),
    "sresnet50_tdbn": dict(channels=(2, 2, 4, 4), stem_width=4),
}
FX_KW = dict(tracer_kwargs=dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions()))


def tiny(arch="sresnet19_tdbn", **kw):
    kw = {"T": 2, **TINY[arch], **kw}
    return timm.create_model(arch, **kw)


def warmed(model, x):
    """Non-trivial running statistics, then eval."""
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def test_num_features_is_the_last_stage_and_head_hidden_size_the_classifier_input():
    x = torch.randn(2, 3, 16, 16)
    for arch, hidden in (("sresnet19_tdbn", 8), ("sresnet34_tdbn", None)):
        model = tiny(arch).eval()
        assert model.num_features == TINY[arch]["channels"][-1] * (4 if arch == "sresnet50_tdbn" else 1)
        feats = model.forward_features(x)
        assert feats.dim() == 4 and feats.shape[1] == model.num_features  # timm: channels of forward_features
        assert model.head_hidden_size == (hidden or model.num_features) == model.fc.in_features
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.head_hidden_size)  # timm: the pooled pre-logits


def test_forward_features_is_the_time_mean_of_the_per_step_spikes():
    model = warmed(tiny(), torch.randn(4, 3, 16, 16))
    x = torch.randn(2, 3, 16, 16)
    steps = model.forward_features_steps(x)
    assert steps.shape == (2, 2, 16, 4, 4) and set(steps.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(model.forward_features(x), steps.mean(0), rtol=0, atol=0)
    # the per-step head input is forward exactly; per-step logits average to the logits (eq. 11)
    assert torch.equal(model.forward_head(steps), model(x))
    torch.testing.assert_close(model.forward_steps(x).mean(0), model(x))


def test_forward_head_on_the_rate_map_is_exact_for_a_linear_head():
    """ResNet-34/50 (no spiking fc-256): averaging over T commutes with average pooling and the classifier."""
    model = warmed(tiny("sresnet34_tdbn"), torch.randn(4, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x))
    # by hand: rate map -> spatial mean -> fc
    rate = model.forward_features(x)
    torch.testing.assert_close(model(x), model.fc(rate.mean((2, 3))))


@pytest.mark.parametrize("pool", POOL_TYPES)
def test_every_timm_pooling_in_create_model_and_reset_classifier(pool):
    x = torch.randn(2, 3, 64, 64)  # a 2x2 last stage, where max and average pooling differ
    model = tiny("sresnet34_tdbn", num_classes=0, global_pool=pool).eval()
    spikes = model.forward_features_steps(x)  # [T, N, C, H, W]
    flat = spikes.flatten(3)
    by_hand = {"avg": flat.mean(-1), "max": flat.amax(-1)}
    by_hand["avgmax"] = (by_hand["avg"] + by_hand["max"]) / 2
    by_hand["catavgmax"] = torch.cat([by_hand["avg"], by_hand["max"]], -1)
    kind = pool.removeprefix("fast") or "avg"
    if pool == "":
        want = spikes.mean(0)  # no pooling: the rate map, spatial size pool-free
        assert model(x).shape == (2, model.num_features, 2, 2)
    else:
        want = by_hand[kind].mean(0)  # pooled per step, then eq. 11's mean over T
    torch.testing.assert_close(model(x), want)
    assert model.head_hidden_size == want.shape[1]
    # the same pooling set later on a default model, with a classifier
    other = tiny("sresnet34_tdbn").eval()
    other.load_state_dict(model.state_dict(), strict=False)
    other.reset_classifier(0, pool)
    torch.testing.assert_close(other(x), want)
    if pool:
        other.reset_classifier(5, pool)
        assert other(x).shape == (2, 5) and other.fc.in_features == other.head_hidden_size


def test_no_pooling_runs_the_spiking_fc_layer_per_location():
    """timm's heads turn their pre-logits fc into a 1x1 conv without pooling; so does fc-256 here."""
    model = warmed(tiny("sresnet19_tdbn"), torch.randn(4, 3, 16, 16))
    x = torch.randn(2, 3, 16, 16)
    spikes = model.forward_features_steps(x)  # [T, N, C, 4, 4]
    model.reset_classifier(0, "")
    out = model(x)
    assert out.shape == (2, 8, 4, 4)
    # location (i, j) alone through fc-256 as a pooled vector gives the same spikes (eval norm is per-sample)
    for i, j in ((0, 0), (3, 1)):
        loc = spikes[..., i, j]  # [T, N, C]
        ref = model.head_act(model.head_bn(model.head_fc(loc))).mean(0)
        torch.testing.assert_close(out[..., i, j], ref)


def test_bad_pooling_is_refused_at_the_boundary():
    with pytest.raises(ValueError, match="global_pool must be one of.*'avg'.*got 'mean'"):
        tiny(global_pool="mean")
    with pytest.raises(ValueError, match="global_pool=''.*num_classes=0.*got num_classes=10"):
        tiny(global_pool="")
    model = tiny()
    with pytest.raises(ValueError, match="num_classes=0.*got num_classes=3"):
        model.reset_classifier(3, "")


def test_catavgmax_gives_the_spiking_fc_layer_a_wider_input():
    model = tiny("sresnet19_tdbn", global_pool="catavgmax")
    assert model.head_fc.in_features == 2 * model.num_features and model.head_hidden_size == 8
    model.reset_classifier(4, "avg")
    assert model.head_fc.in_features == model.num_features
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    assert model.model_args["global_pool"] == "avg"  # recorded: zoo.fuse / checkpoints rebuild the same head


def test_cfgs_carry_pool_size_first_conv_and_classifier():
    """timm's cfg fields: the last stage's map at ``input_size`` is ``pool_size`` for every tag."""
    for tag in TAGS:
        arch = tag.partition(".")[0]
        model = timm.create_model(tag, T=1, **TINY[arch]).eval()
        cfg = model.pretrained_cfg
        with torch.no_grad():
            feats = model.forward_features(torch.zeros(1, *cfg["input_size"]))
        assert tuple(feats.shape[-2:]) == tuple(cfg["pool_size"]), tag
        sd = model.state_dict()
        assert f"{cfg['first_conv']}.weight" in sd and f"{cfg['classifier']}.weight" in sd
        assert cfg["num_classes"] == model.num_classes


def _fx(model, nodes=None):
    train_nodes, eval_nodes = get_graph_node_names(model, **FX_KW)
    nodes = nodes or [eval_nodes[-1]]
    return create_feature_extractor(model, return_nodes=nodes, **FX_KW), eval_nodes


@pytest.mark.parametrize("neuron", ["native", "spikingjelly", "snntorch"])
def test_fx_traces_the_static_image_and_event_paths(neuron):
    model = warmed(tiny(neuron=neuron), torch.randn(4, 3, 16, 16))
    graph, nodes = _fx(model)
    assert "act1" in nodes and "layer1.0.act1" in nodes  # neurons are single nodes (leaf modules)
    for x in (torch.randn(2, 3, 16, 16), torch.randn(2, 2, 3, 16, 16)):  # static image, event frames
        with torch.inference_mode():
            assert torch.equal(next(iter(graph(x).values())), model(x))
    # the traced model keeps the input checks
    with pytest.raises(ValueError, match="expects 3 input channels"):
        graph(torch.randn(2, 1, 16, 16))


def test_fx_backward_in_training_mode():
    model = tiny(num_classes=5).train()
    train_nodes, _ = get_graph_node_names(model, **FX_KW)
    graph = create_feature_extractor(model, return_nodes=[train_nodes[-1]], **FX_KW)
    out = next(iter(graph(torch.randn(2, 3, 16, 16)).values()))
    assert out.shape == (2, 5)
    out.mean().backward()
    assert all(p.grad is not None for p in graph.parameters())


def test_features_only_fx_equals_the_getter():
    getter = tiny(features_only=True)
    fx = tiny(features_only=True, feature_cls="fx")
    missing, _ = fx.graph_module.load_state_dict(getter.model.state_dict(), strict=False)
    assert not missing  # every traced layer got the getter's weights
    assert fx.feature_info.channels() == getter.feature_info.channels() == [4, 4, 8, 16]
    x = torch.randn(2, 3, 16, 16)
    getter.eval(), fx.eval()
    a, b = getter(x), fx(x)
    assert [t.shape for t in a] == [t.shape for t in b] == [(2, 4, 16, 16), (2, 4, 16, 16), (2, 8, 8, 8),
                                                            (2, 16, 4, 4)]
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
        assert set((v * 2).unique().tolist()) <= {0.0, 1.0, 2.0}  # T=2 firing rates


def test_list_pretrained_names_exactly_the_tags_with_weights():
    listed = timm.list_pretrained("sresnet*")
    assert listed == sorted(t for t in TAGS if zoo.pretrained.loadable(t)) and listed  # all shipped here
    assert set(listed) <= set(zoo.list_pretrained())
    assert timm.list_models("sresnet*") == sorted(ARCH_CFGS)  # every architecture stays registered
    missing = sorted(set(TAGS) - set(listed))
    assert "sresnet19_tdbn.cifar10_t6" in missing
    with pytest.MonkeyPatch.context() as mp:  # the zoo's error, naming the command that trains it
        import huggingface_hub.constants as c
        mp.setattr(c, "HF_HUB_OFFLINE", True)
        with pytest.raises(PretrainedUnavailableError, match="tdbn-zoo train --preset sresnet19_tdbn.cifar10_t6"):
            timm.create_model("sresnet19_tdbn.cifar10_t6", pretrained=True)


def test_features_only_with_pretrained_weights():
    """timm's test_model_features_pretrained on a shipped tag: the weights reach the wrapped model and its
    last feature map is the full pretrained model's rate map."""
    tag = "sresnet19_narrow_tdbn.fashion_mnist_t4"
    feats = timm.create_model(tag, pretrained=True, features_only=True).eval()
    full = timm.create_model(tag, pretrained=True).eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(feats(x)[-1], full.forward_features(x))
    assert math.prod(feats(x)[-1].shape[-2:]) == math.prod(full.pretrained_cfg["pool_size"])
