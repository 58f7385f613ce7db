"""Bad and clumsy inputs to the model API (``zoo.create`` arguments, ``model.T``, ``reset_classifier``,
forward inputs): each refused naming what was expected and what came, or the correct result checked here."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from adapters._checks import value_checks
from tests.support.cli import assert_user_error
from tests.support.models import make_tiny_narrow

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return make_tiny_narrow(T=2)


# ---- model arguments: zoo.create(...) --------------------------------------------------------------------------

BAD_MODEL_ARGS = [
    (dict(T=0), "T must be an integer >= 1, got 0"),
    (dict(T=-1), "T must be an integer >= 1, got -1"),
    (dict(T=2.5), r"T must be an integer >= 1, got 2\.5 \(float\)"),
    (dict(T="4"), r"T must be an integer >= 1, got '4' \(str\)"),
    (dict(T=True), r"T must be an integer >= 1, got True \(bool\)"),
    (dict(num_classes=-1), "num_classes must be an integer >= 0, got -1"),
    (dict(num_classes=2.5), r"num_classes must be an integer >= 0, got 2\.5"),
    (dict(in_chans=0), "in_chans must be an integer >= 1, got 0"),
    (dict(in_chans=-2), "in_chans must be an integer >= 1, got -2"),
    (dict(in_chans=1.5), r"in_chans must be an integer >= 1, got 1\.5"),
]


@pytest.mark.parametrize("kw,needle", BAD_MODEL_ARGS, ids=[str(k) for k, _ in BAD_MODEL_ARGS])
def test_bad_model_argument_is_refused_at_construction(kw, needle):
    assert_user_error(lambda: make_tiny_narrow(**kw), "SpikingResNet", needle)


@pytest.mark.parametrize("value,needle", [(0, "got 0"), (-1, "got -1"), (2.5, r"got 2\.5"), ("3", "got '3'"),
                                          (None, "got None")])
def test_bad_T_assignment_is_refused_and_keeps_the_old_T(model, value, needle):
    def assign():
        model.T = value
    assert_user_error(assign, "T must be an integer >= 1", needle)
    assert model.T == 2


@pytest.mark.parametrize("value", [-1, 2.5])
def test_bad_reset_classifier_is_refused(value):
    assert_user_error(lambda: make_tiny_narrow().reset_classifier(value), "num_classes must be an integer >= 0",
                      str(value))


def test_T_setter_result_matches_the_image_repeated_over_T(model):
    """Setting T=3 on a static image gives the logits of that image presented at 3 steps (eq. 11 input)."""
    x = torch.rand(2, 1, 12, 12)
    model.T = np.int64(3)  # a numpy integer is an integer
    try:
        assert model.T == 3 and type(model.T) is int
        with torch.no_grad():
            want = model(x.unsqueeze(0).expand(3, -1, -1, -1, -1).contiguous())
            got = model(x)
    finally:
        model.T = 2
    assert got.shape == (2, 10)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_num_classes_zero_gives_the_features(model):
    """``num_classes=0`` is timm's feature extractor: the logits are ``forward_head(pre_logits=True)``."""
    m = make_tiny_narrow(num_classes=0)
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        got = m(x)
        want = m.forward_head(m.forward_features(x), pre_logits=True)
    assert got.shape == (2, m.num_features)
    torch.testing.assert_close(got, want)


# ---- forward inputs -----------------------------------------------------------------------------------------------

BAD_INPUTS = [
    ("empty batch", lambda: torch.rand(0, 1, 12, 12), (r"empty input of shape \(0, 1, 12, 12\)", "N >= 1")),
    ("empty batch [T,N]", lambda: torch.rand(2, 0, 1, 12, 12), (r"empty input of shape \(2, 0, 1, 12, 12\)",)),
    ("zero height", lambda: torch.rand(2, 1, 0, 12), (r"empty input of shape \(2, 1, 0, 12\)", "H, W >= 1")),
    ("rank 3", lambda: torch.rand(1, 12, 12), (r"\[N, C, H, W\]", r"got shape \(1, 12, 12\)")),
    ("rank 2", lambda: torch.rand(12, 12), (r"\[T, N, C, H, W\]", r"got shape \(12, 12\)")),
    ("rank 6", lambda: torch.rand(2, 2, 1, 1, 12, 12), (r"got shape \(2, 2, 1, 1, 12, 12\)",)),
    ("3 channels", lambda: torch.rand(2, 3, 12, 12), ("expects 1 input channels, got 3",)),
    ("T mismatch", lambda: torch.rand(3, 2, 1, 12, 12), ("runs T=2", "input has T=3")),
    ("uint8", lambda: torch.zeros(2, 1, 12, 12, dtype=torch.uint8), ("floating-point", "uint8")),
    ("int64", lambda: torch.zeros(2, 1, 12, 12, dtype=torch.int64), ("floating-point", "int64")),
    ("bool", lambda: torch.zeros(2, 1, 12, 12, dtype=torch.bool), ("floating-point", "bool")),
    ("float64", lambda: torch.zeros(2, 1, 12, 12, dtype=torch.float64), ("float32 weights", "input is torch.float64")),
    ("float16", lambda: torch.zeros(2, 1, 12, 12, dtype=torch.float16), ("float32 weights", "input is torch.float16")),
    ("numpy", lambda: np.zeros((2, 1, 12, 12), np.float32), ("expects a torch.Tensor", "ndarray")),
    ("list", lambda: [[0.0]], ("expects a torch.Tensor", "list")),
    ("NaN", lambda: torch.full((2, 1, 12, 12), float("nan")), ("NaN",)),
    ("Inf", lambda: torch.full((2, 1, 12, 12), float("inf")), ("Inf",)),
]


@pytest.mark.parametrize("make,needles", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_forward_input_is_refused_naming_expected_and_got(model, make, needles):
    x = make()
    # NaN/Inf are value checks, opt-in (issue 16: no host synchronisation by default); shape checks always run
    with torch.no_grad(), value_checks():
        assert_user_error(lambda: model(x), *needles)


def test_double_model_with_double_input_runs_like_the_float_model(model):
    """The dtype check compares with the weights, it does not forbid float64: a float64 copy agrees."""
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        got = model.double()(x.double())
        model.float()
        want = model(x)
    torch.testing.assert_close(got.float(), want, rtol=0, atol=1e-5)
