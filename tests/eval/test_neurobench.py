"""eval.measure.neurobench: NeuroBench 2.3's own metrics on a zoo model agree with the zoo's harness (an independent
count: NeuroBench hooks and counts by its own code), on every neuron backend and both data layouts."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("neurobench")
from neurobench.benchmarks import Benchmark  # noqa: E402
from neurobench.metrics.workload import ActivationSparsity, SynapticOperations  # noqa: E402
from neurobench.models import TorchModel  # noqa: E402

import zoo  # noqa: E402
from eval.measure.harness import evaluate  # noqa: E402
from eval.measure.neurobench import argmax, run, wrap  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(neuron="native"):
    model = zoo.create("sresnet19_narrow_tdbn", T=2, channels=(4, 8, 8), stem_width=4, head_hidden=8,
                       neuron=neuron)
    with torch.no_grad():  # running statistics of real activity, so neurons fire at a few percent to tens
        model.train()(torch.randn(8, 1, 16, 16))
    return model.eval()


@pytest.fixture(scope="module")
def loader():
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(6, 1, 16, 16, generator=g), torch.randint(0, 10, (6,), generator=g))
    return DataLoader(data, batch_size=4)  # two batches, the second partial


@pytest.mark.parametrize("neuron", ["native", "spikingjelly", "snntorch"])
def test_neurobench_accumulates_and_firing_rate_equal_the_harness(neuron, loader):
    torch.manual_seed(0)
    model = tiny_model(neuron)
    x, y = loader.dataset.tensors
    frames = DataLoader(TensorDataset(x.unsqueeze(1).repeat(1, 2, 1, 1, 1), y), batch_size=4)  # [N, T, ...]
    ours = {"static": evaluate(model, loader, speed_batches=0), "frames": evaluate(model, frames, speed_batches=0)}
    assert 0.01 < ours["static"].mean_firing_rate < 0.9  # a network that fires: the comparison means something
    for layout in ("static", "frames"):  # NeuroBench's [N, T, C, H, W] layout: the image repeated over T
        nb, zoo_ = run(model, loader, layout), ours[layout]
        assert nb["SynapticOperations"]["Effective_ACs"] == pytest.approx(zoo_.acs, rel=1e-12), layout
        assert 1 - nb["ActivationSparsity"] == pytest.approx(zoo_.mean_firing_rate, rel=1e-9), layout
        assert 100 * nb["ClassificationAccuracy"] == pytest.approx(zoo_.top1), layout
        # real-valued layers: NeuroBench skips zero inputs and zero padding, the zoo counts densely
        assert 0 < nb["SynapticOperations"]["Effective_MACs"] <= zoo_.macs, layout
    # spikes do not depend on the layout; the encoder conv runs once per static image, T times on frames
    assert ours["frames"].acs == ours["static"].acs
    assert ours["frames"].macs > ours["static"].macs


def test_without_registration_neurobench_sees_no_spikes(loader):
    """Why wrap() registers the neuron classes: NeuroBench's plain TorchModel finds none of them."""
    model = tiny_model()
    plain = Benchmark(TorchModel(model), loader, [], [argmax], [[], [ActivationSparsity, SynapticOperations]])
    assert plain.run(quiet=True)["ActivationSparsity"] == 0.0
    nb = wrap(model)
    assert len(nb.activation_layers()) == 1 + 3 * 2 + 3 * 2 + 2 * 2 + 1  # stem, 2 per block, fc-256


def test_bad_arguments_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="layout must be one of static, frames, got 'nchw'"):
        wrap(model, "nchw")
    with pytest.raises(TypeError, match="expected a zoo model"):
        wrap("sresnet19_tdbn")
    with pytest.raises(ValueError, match=r"\[N, T, C, H, W\], got shape \(2, 1, 16, 16\)"):
        wrap(model, "frames")(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="no neuron NeuroBench can hook"):
        wrap(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)))
