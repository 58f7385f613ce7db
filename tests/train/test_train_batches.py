"""How the trainer reads 5-D batches: time-first unless the model's T sits in dim 1 (also when N == T)."""
import torch
from torch.utils.data import DataLoader, TensorDataset

import zoo
from eval.train.trainer import Trainer


def _trainer(T):
    model = zoo.create("sresnet19_narrow_tdbn", T=T, stem_width=4, channels=(4, 4, 4))
    data = DataLoader(TensorDataset(torch.randn(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)), batch_size=4)
    return Trainer(model, data)


def test_time_first_batches_stay_when_batch_size_equals_T():
    x = torch.randn(4, 4, 1, 28, 28)  # [T=4, N=4, ...]: ambiguous by shape, time-first by contract
    out, _ = _trainer(4)._batch((x, torch.zeros(4, dtype=torch.long)))
    assert torch.equal(out, x)


def test_batch_first_frames_are_transposed():
    x = torch.randn(3, 4, 1, 28, 28)  # [N=3, T=4, ...]
    out, _ = _trainer(4)._batch((x, torch.zeros(3, dtype=torch.long)))
    assert torch.equal(out, x.transpose(0, 1))
