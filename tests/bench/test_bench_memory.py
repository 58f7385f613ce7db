"""What the activation memory buys (``eval.bench.memory``, ``tdbn-zoo bench --budget-mib``): the affine fits
of bytes saved for backward predict a third, independently measured point, and the largest batch/T follow."""
from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction

import pytest

from eval.bench.memory import MIB, AffineFit, format_memory_budget, measure_saved_bytes, memory_budget
from eval.bench.runner import BenchConfig, reference_model
from eval.cli import main
from tests.support.cli import assert_cli_user_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = BenchConfig(width=1 / 16, input_size=16, batch=2, T=2)


def test_affine_fit_by_hand():
    fit = AffineFit.through((2, 100), (4, 180))  # 20 + 40 v
    assert (fit.slope, fit.intercept) == (40, 20) and fit(7) == 300
    assert fit.largest_within(200) == 4  # 180 fits, 220 does not
    assert fit.largest_within(220) == 5  # exactly the budget fits
    assert fit.largest_within(59) == 0  # not even one
    assert AffineFit.through((1, 10), (4, 20)).slope == Fraction(10, 3)
    with pytest.raises(ValueError, match="two different points"):
        AffineFit.through((2, 100), (2, 120))
    with pytest.raises(ValueError, match="does not grow"):
        AffineFit.through((2, 100), (4, 100)).largest_within(1000)


@pytest.fixture(scope="module")
def budget_result():
    return memory_budget(CFG, budget_mib=4.0)  # the zoo's answer at this size: a batch of a few images


def test_fits_predict_a_third_measured_point(budget_result):
    res = budget_result
    rows = res["rows"]
    assert list(rows) == list(CFG.builds) and res["notes"] == []
    # third points, measured independently: batch 3x (T as fitted) and T 3x (batch as fitted)
    at_b3, _ = measure_saved_bytes(reference_model(CFG), CFG, 3 * CFG.batch)
    cfg_t3 = replace(CFG, T=3 * CFG.T)
    at_t3, _ = measure_saved_bytes(reference_model(cfg_t3), cfg_t3, CFG.batch)
    for n, r in rows.items():
        for fit_key, value, measured in (("batch_fit", 3 * CFG.batch, at_b3[n]), ("T_fit", 3 * CFG.T, at_t3[n])):
            f = r[fit_key]
            predicted = (f["intercept_mib"] + f["slope_mib"] * value) * MIB
            assert predicted == pytest.approx(measured, rel=1e-9, abs=1), (n, fit_key)
        assert r["largest_batch"] >= 1 and r["largest_T"] >= 1
    # and the answer itself: the zoo's largest batch fits the budget, one more image does not
    zb = rows["zoo"]["largest_batch"]
    model = reference_model(CFG)
    fits, _ = measure_saved_bytes(model, replace(CFG, builds=("zoo",)), zb)
    over, _ = measure_saved_bytes(model, replace(CFG, builds=("zoo",)), zb + 1)
    assert fits["zoo"] <= 4 * MIB < over["zoo"]


def test_budget_table(budget_result):
    res = budget_result
    json.dumps(res)
    text = format_memory_budget(res)
    for s in ("What 4 MiB of activation memory", "largest batch (T=2)", "largest T (batch 2)", "this zoo",
              "SpikingJelly + memopt", "zoo vs ANN floor"):
        assert s in text


def test_budget_command(tmp_path, capsys):
    out = tmp_path / "budget.json"
    rc = main(["bench", "--width", "0.0625", "--input-size", "16", "--batch", "2", "-T", "2", "--builds", "zoo,ann",
               "--budget-mib", "2", "--json", str(out)])
    assert rc == 0
    assert "largest batch" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["budget_mib"] == 2 and list(res["rows"]) == ["zoo", "ann"]


@pytest.mark.parametrize("value", ["0", "-5", "nan", "lots"])
def test_budget_must_be_a_positive_number_of_mib(value, capsys):
    assert_cli_user_error(run_cli(["bench", "--budget-mib", value], capsys), "--budget-mib", f"got '{value}'")
