"""The evaluation harness: synaptic operations against hand counts, Table 6 and SpikingJelly's counters;
firing rates against the LIF equations; accuracy, energy, speed/memory and the ``tdbn-zoo eval`` command."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import zoo
from adapters import LIF
from eval.cli import main
from eval.data.images import build_dataset
from eval.measure.harness import calibrate_norms, evaluate, evaluate_over_T
from tests.support.cli import assert_cli_user_error, run_cli, tree_digest
from eval.measure.metrics import SpikeRecorder, topk_correct
from eval.measure.profiling import peak_memory
from eval.measure.synops import EnergyModel, OpCounter, ann_macs, conv_accumulates, shape_only_model
from tests.support.cli import assert_user_error


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (see conftest)


def tiny(arch="sresnet19_tdbn", T=2, **kw):
    kw.setdefault("channels", (8, 16, 32) if arch == "sresnet19_tdbn" else (4, 8, 8, 8))
    kw.setdefault("stem_width", 8)
    return zoo.create(arch, T=T, **kw)


# ---------------------------------------------------------------------------------------------- hand counts
def test_conv_accumulates_equal_hand_counts():
    conv = nn.Conv2d(2, 4, 3, 1, 1, bias=False)
    s = torch.zeros(1, 2, 5, 5)
    s[0, 0, 2, 2] = 1  # interior spike: reaches all 3x3 outputs around it -> 9 positions x 4 channels
    s[0, 1, 0, 0] = 1  # corner spike: only 2x2 outputs see it -> 4 x 4
    assert conv_accumulates(conv, s) == 4 * 9 + 4 * 4
    strided = nn.Conv2d(1, 3, 3, 2, 1, bias=False)  # outputs 3x3; output i reads input rows 2i-1..2i+1
    one = torch.zeros(1, 1, 5, 5)
    one[0, 0, 2, 2] = 1  # rows/cols 2: only i = 1 -> 1 position
    assert conv_accumulates(strided, one) == 3 * 1
    one[0, 0, 2, 2], one[0, 0, 1, 1] = 0, 1  # rows/cols 1: i in {0, 1} -> 2 x 2 positions
    assert conv_accumulates(strided, one) == 3 * 4
    depthwise = nn.Conv2d(2, 4, 1, groups=2, bias=False)  # each input channel feeds 2 outputs
    assert conv_accumulates(depthwise, s) == 2 * 2


def test_op_counter_classifies_inputs_and_counts():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, 1, 1, bias=False), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    real = torch.randn(2, 1, 5, 5)
    with OpCounter(net) as ops:
        net(real)
    conv, fc = ops.layers()
    assert ops.images == 2
    assert (conv.input, conv.macs, conv.acs) == ("real", 2 * 4 * 25 * 9, 0)  # 2 images x outputs x fan-in
    assert (fc.input, fc.macs) == ("real", 2 * 3 * 100)
    assert conv.ann_macs_per_image == 4 * 25 * 9 and fc.ann_macs_per_image == 300
    spikes = torch.zeros(3, 1, 5, 5)
    spikes[0, 0, 2, 2] = spikes[2, 0, 0, 0] = 1
    with OpCounter(net[0]) as ops:
        net[0](spikes)
    assert ops.images == 3 and ops.layers()[0].acs == 4 * (9 + 4) and ops.per_image()["acs"] == 4 * 13 / 3
    lin = nn.Linear(6, 5)
    with OpCounter(lin) as ops:
        lin(torch.tensor([[1., 0, 1, 0, 0, 1]]))
    assert ops.layers()[0].acs == 3 * 5  # spikes x fan-out


def test_table6_ann_macs():
    """Table 6 (ANN multiply-accumulates): ResNet-19 at 32x32 2.2e9 (careful count 2.285e9), ResNet-34
    large at 224x224 1.4e10 (1.447e10) -- counted from the layers' shapes by hooks."""
    r19 = ann_macs(zoo.create("sresnet19_tdbn", T=1), (3, 32, 32))
    assert r19 == 2_285_373_952 and round(r19 / 1e9, 3) == 2.285
    r34 = ann_macs(shape_only_model("sresnet34_large_tdbn"), (3, 224, 224))  # uninitialised: shapes suffice
    assert round(r34 / 1e10, 3) == 1.447


def calibrated(model, shape=(8, 3, 16, 16)):
    return calibrate_norms(model, [torch.randn(shape) for _ in range(2)])


def test_counts_agree_with_spikingjelly_op_counter():
    """SpikingJelly's SynOpCounter/MACCounter (aten dispatch level) against our module hooks: identical
    spike-driven accumulates per layer; identical conv/linear MACs. SpikingJelly's MAC total also
    counts the norms' affine arithmetic, which folds into the convs at inference (eq. 9-10) and which
    we therefore leave out: that is the whole difference."""
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, MACCounter, SynOpCounter

    torch.manual_seed(0)
    for model in (calibrated(tiny(T=3)), calibrated(tiny("sresnet50_tdbn", T=2), (8, 3, 32, 32))):
        x = torch.randn(3, 3, 16 if model.num_stages == 3 else 32, 16 if model.num_stages == 3 else 32)
        with torch.no_grad(), OpCounter(model) as ours, SpikeRecorder(model) as rec:
            model(x)
        assert rec.mean_firing_rate() > 0.02
        syn, mac = SynOpCounter(), MACCounter()
        with torch.no_grad(), DispatchCounterMode([syn, mac]):
            model(x)
        assert syn.get_total() == sum(l.acs for l in ours.layers()) > 0
        root = type(model).__name__
        for l in ours.layers():
            assert sum(syn.get_counts().get(f"{root}.{l.name}", {}).values()) == l.acs, l.name
        counts = {str(k): v for k, v in mac.get_counts()["Global"].items()}
        bn = counts.pop("aten.native_batch_norm.default", 0)
        assert sum(counts.values()) == sum(l.macs for l in ours.layers()) > 0
        assert mac.get_total() - bn == sum(l.macs for l in ours.layers())


# ---------------------------------------------------------------------------------------------- firing rates
class TwoLIF(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = LIF(0.25, 0.5), LIF(0.25, 0.5)

    def forward(self, x):
        return self.b(self.a(x) * 0.45)


def test_firing_rates_match_the_lif_equations():
    """u[t] = 0.25 u[t-1] (1 - o[t-1]) + x, fire when u > 0.5. Constant 0.45: 0.45, 0.5625 (fire), 0.45,
    0.5625 (fire) -> 2 spikes in 4 steps. Constant 0.6: fires every step. Constant 0.3: never."""
    x = torch.tensor([0.45, 0.6, 0.3]).view(1, 1, 3).expand(4, 2, 3).contiguous()  # [T=4, N=2, 3 neurons]
    net = TwoLIF()
    with SpikeRecorder(net) as rec:
        net(x)
    a, b = rec.layers()
    assert (a.name, a.neurons, a.images, a.steps) == ("a", 3, 2, 4)
    assert a.spikes == 2 * (2 + 4 + 0) and a.firing_rate == pytest.approx(6 / 12)
    assert a.spikes_per_neuron == pytest.approx(6 / 3)  # Fig. 6's quantity: spikes per neuron over T
    # layer b sees 0.45 only when a fired: neuron 0 (a fires at t=1,3): u = 0, .45, .1125, .478 -> none;
    # neuron 1 (a always fires): 0.45 constant -> 2 spikes; neuron 2: no input
    assert b.spikes == 2 * 2
    assert rec.mean_firing_rate() == pytest.approx((12 + 4) / (2 * 24))


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    assert topk_correct(logits, torch.tensor([1, 1, 0]), (1, 2, 5)) == {1: 1, 2: 2, 5: 3}


# ---------------------------------------------------------------------------------------------- evaluate
def test_evaluate_on_shipped_images_matches_direct_computation():
    torch.manual_seed(0)
    data = torch.utils.data.Subset(build_dataset("fashion-mnist-subset"), range(12))
    model = calibrated(tiny(T=2, in_chans=1), (8, 1, 28, 28))
    r = evaluate(model, data, batch_size=5, speed_batches=1, T=3)
    assert model.T == 2  # restored
    x = torch.stack([data[i][0] for i in range(12)])
    y = torch.tensor([data[i][1] for i in range(12)])
    model.T = 3
    with torch.no_grad(), OpCounter(model) as ops:
        logits = model(x)
    assert r.images == 12 and r.T == 3
    assert r.top1 == pytest.approx(100 * (logits.argmax(1) == y).float().mean().item())
    assert r.top5 == pytest.approx(100 * topk_correct(logits, y, (5,))[5] / 12)
    per = ops.per_image()
    assert r.acs == pytest.approx(per["acs"]) and r.macs == pytest.approx(per["macs"])
    assert r.ann_macs == ann_macs(model, (1, 28, 28))
    assert r.energy["snn_pj"] == pytest.approx(0.9 * r.acs + 4.6 * r.macs)
    assert r.energy["ann_pj"] == pytest.approx(4.6 * r.ann_macs)
    assert len(r.layers) == 18 and 0 < r.mean_firing_rate < 1
    assert r.speed["batch_size"] == 5 and r.speed["latency_ms"] > 0 and r.speed["peak_memory_mb"] > 0
    e = evaluate_over_T(model, data, [1, 2], max_images=5, speed_batches=0, energy=EnergyModel(1.0, 2.0))
    assert [q.T for q in e] == [1, 2] and e[0].images == 5 and e[0].speed == {}
    assert e[0].energy["snn_pj"] == pytest.approx(e[0].acs + 2 * e[0].macs)


def test_peak_memory_counts_tensor_allocations():
    def work():
        a = torch.ones(1_000_000)  # 4 MB live ...
        b = a * 2  # ... plus 4 MB
        del a, b
        return torch.ones(250_000)  # 1 MB, after the peak
    peak = peak_memory(work)
    assert 8_000_000 <= peak < 8_500_000


# ---------------------------------------------------------------------------------------------- command line
def test_eval_command_json_and_plots(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["eval", "sresnet19_narrow_tdbn", "--data", "fashion-mnist-subset", "--random-weights", "-T", "1", "2",
               "--max-images", "6", "--batch-size", "3", "--speed-batches", "1", "--calibrate-batches", "1",
               "--json", str(out), "--plots", str(tmp_path / "plots")])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert [r["T"] for r in doc["results"]] == [1, 2]
    r = doc["results"][1]
    assert r["images"] == 6 and r["energy"]["e_ac_pj"] == 0.9 and r["synaptic_layers"][0]["input"] == "real"
    for png in ("firing_rates.png", "accuracy_vs_T.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc = main(["eval", "sresnet19_narrow_tdbn", "--data", "fashion-mnist-subset", "--random-weights",
               "--max-images", "4", "--speed-batches", "0", "--calibrate-batches", "1"])
    text = capsys.readouterr().out
    assert rc == 0 and "top-1" in text and "accumulates" in text and "| layer" in text


def test_eval_command_user_errors(capsys, tmp_path):
    assert main(["eval", "sresnet19_tdbn", "--data", "svhn"]) == 2
    assert "unknown dataset 'svhn'" in capsys.readouterr().err
    assert main(["eval", "sresnet19_tdbn", "--data", "fashion-mnist-subset"]) == 2  # no checkpoint available
    assert "sresnet19_tdbn" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--data", "mnist"]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["eval", "sresnet19_narrow_tdbn", "--data", f"mnist:{tmp_path}", "--random-weights"]) == 2
    assert "looked for" in capsys.readouterr().err


def test_fused_checkpoint_folder_same_spikes_and_ops(tmp_path, capsys):
    """A fused checkpoint folder (zoo.save_pretrained) evaluates through ``tdbn-zoo eval <folder>`` with the
    unfused model's accuracy, firing rates and synaptic operations (eq. 9-10 changes no spike)."""
    from zoo.checkpoints import save_pretrained

    torch.manual_seed(0)
    model = calibrated(zoo.create("sresnet19_narrow_tdbn", T=2, channels=(8, 8, 8), stem_width=8),
                       (8, 1, 28, 28)).double()
    data = torch.utils.data.Subset(build_dataset("fashion-mnist-subset"), range(8))
    loader = [(torch.stack([data[i][0] for i in range(8)]).double(), torch.tensor([data[i][1] for i in range(8)]))]
    unfused = evaluate(model, loader, speed_batches=0)
    save_pretrained(model.float(), tmp_path / "ckpt")
    fused = evaluate(zoo.create(f"local-dir:{tmp_path / 'ckpt'}", pretrained=True).double(), loader, speed_batches=0)
    assert fused.top1 == unfused.top1
    assert [a["spikes"] for a in fused.layers] == [a["spikes"] for a in unfused.layers]
    assert fused.acs == unfused.acs and fused.macs == unfused.macs and fused.ann_macs == unfused.ann_macs
    assert main(["eval", str(tmp_path / "ckpt"), "--data", "fashion-mnist-subset", "--max-images", "4",
                 "--speed-batches", "0", "--brief"]) == 0
    assert "4 images, T=2" in capsys.readouterr().out


def test_encoding_layer_counts_as_macs_whatever_the_batch_holds():
    """Event-count frames are 0/1 in some batches and not in others: the totals must not depend on batching."""
    from eval.measure.synops import OpCounter, conv_fan_in

    model = zoo.create("sresnet19_tdbn", T=2, in_chans=2, stem_width=8, channels=(8, 16, 32)).eval()
    binary = (torch.rand(2, 3, 2, 8, 8) < 0.3).float()
    counts = binary.clone()
    counts[0, 0, 0, 0, 0] = 2.0  # one pixel with two events
    per_batch = []
    for frames in (binary, counts):
        with OpCounter(model) as ops, torch.no_grad():
            model(frames)
        stem = next(r for r in ops.layers() if r.name == "conv1")
        per_batch.append((stem.input, stem.acs, stem.macs))
    expected_macs = 2 * 3 * 8 * 8 * 8 * conv_fan_in(model.conv1)  # T*N * out elements * fan-in
    assert per_batch == [("real", 0, expected_macs)] * 2


def test_eval_on_your_own_image_folder_gives_per_class_accuracy_and_confusion(tmp_path, capsys):
    """--data folder:PATH (torchvision ImageFolder layout): read with the checkpoint's channels, side and
    normalisation; per-class accuracy and the confusion matrix equal a hand count of the model's predictions."""
    from PIL import Image

    colours = {"dark": [(20, 20, 20), (40, 30, 20)], "light": [(230, 230, 230), (200, 220, 240), (250, 240, 230)]}
    for name, rgbs in colours.items():
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i, rgb in enumerate(rgbs):
            Image.new("RGB", (20, 14), rgb).save(tmp_path / "imgs" / name / f"{i}.png")
    torch.manual_seed(0)
    model = zoo.create("sresnet19_narrow_tdbn", num_classes=2, stem_width=4, channels=[4, 4, 8], head_hidden=8)
    calibrate_norms(model, [torch.randn(8, 1, 12, 12) for _ in range(2)])
    folder = zoo.save_pretrained(model, tmp_path / "ckpt", tag="sresnet19_narrow_tdbn.mine",
                                 cfg=dict(input_size=(1, 12, 12), mean=(0.5,), std=(0.25,)))
    out = tmp_path / "plots"
    assert main(["eval", str(folder), "--data", f"folder:{tmp_path / 'imgs'}", "--json", "-", "--plots", str(out),
                 "--speed-batches", "0"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # by hand: grey level of each flat image (PIL's L conversion), normalised, at 12x12
    loaded = zoo.create(f"local-dir:{folder}", pretrained=True).eval()
    confusion = [[0, 0], [0, 0]]
    for label, rgbs in enumerate(colours.values()):
        for r, g, b in rgbs:
            grey = (r * 299 + g * 587 + b * 114) // 1000  # ITU-R 601-2 luma, as PIL's convert("L")
            x = torch.full((1, 1, 12, 12), (grey / 255 - 0.5) / 0.25)
            with torch.no_grad():
                confusion[label][int(loaded(x).argmax(1))] += 1
    assert doc["label_names"] == ["dark", "light"]
    assert doc["results"][0]["confusion"] == confusion
    rows = doc["per_class"][0]
    assert [(r["name"], r["samples"], r["correct"]) for r in rows] == [
        ("dark", 2, confusion[0][0]), ("light", 3, confusion[1][1])]
    assert (out / "confusion.png").stat().st_size > 0
    assert main(["eval", str(folder), "--data", f"folder:{tmp_path / 'none'}"]) == 2
    assert "no such folder" in capsys.readouterr().err
    # a checkpoint that names its classes: folders named otherwise would score class i against class j
    named = zoo.save_pretrained(model, tmp_path / "named", tag="sresnet19_narrow_tdbn.mine",
                                cfg=dict(input_size=(1, 12, 12), mean=(0.5,), std=(0.25,), label_names=["cat", "dog"]))
    before = tree_digest(tmp_path)
    assert_cli_user_error(run_cli(["eval", named, "--data", f"folder:{tmp_path / 'imgs'}"], capsys),
                          r"predicts the classes \['cat', 'dog'\]", r"class folders \['dark', 'light'\]")
    assert tree_digest(tmp_path) == before


def test_run_evaluation_returns_what_the_eval_command_prints(tmp_path, capsys):
    """``run_evaluation`` (the library function behind ``tdbn-zoo eval``), called directly, gives the results,
    class names and per-class rows that the command's --json prints for the same run (at two T)."""
    from PIL import Image

    from eval.measure.run_eval import EvalOptions, run_evaluation

    for name, grey in (("dark", (10, 50)), ("light", (200, 240, 250))):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i, g in enumerate(grey):
            Image.new("L", (12, 12), g).save(tmp_path / "imgs" / name / f"{i}.png")
    torch.manual_seed(1)
    model = calibrated(tiny("sresnet19_narrow_tdbn", T=2, num_classes=2, channels=(4, 8, 8)), (8, 1, 12, 12))
    folder = zoo.save_pretrained(model, tmp_path / "ckpt", cfg=dict(input_size=(1, 12, 12), mean=(0.4,), std=(0.3,)))
    data = f"folder:{tmp_path / 'imgs'}"
    assert main(["eval", str(folder), "--data", data, "-T", "1", "2", "--speed-batches", "0", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    out = run_evaluation(EvalOptions(str(folder), data, T=[1, 2], speed_batches=0))
    assert out["plots"] == [] and out["label_names"] == doc["label_names"] == ["dark", "light"]
    assert out["per_class"] == doc["per_class"]
    drop = lambda r: {k: v for k, v in r.items() if k != "machine"}  # noqa: E731
    assert [drop(r.to_dict()) for r in out["results"]] == [drop(r) for r in doc["results"]]
    assert [r.T for r in out["results"]] == [1, 2] and sum(map(sum, out["results"][0].confusion)) == 5


@pytest.mark.parametrize("label,needle", [(10, "label 10, outside the model's 10 classes"),
                                          (-1, "label -1, outside"),
                                          (2.5, "integer class ids")])
def test_evaluate_names_a_label_outside_the_classes(label, needle):
    torch.manual_seed(0)
    model = tiny(num_classes=10).eval()
    x = torch.rand(3, 3, 8, 8)
    y = torch.tensor([1, 2, label]) if isinstance(label, int) else torch.tensor([1.0, 2.0, label])
    assert_user_error(lambda: evaluate(model, [(x, y)], speed_batches=0), needle, r"\(0\.\.9\)" if
                      isinstance(label, int) else "float")
