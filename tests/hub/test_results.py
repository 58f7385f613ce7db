"""results/results.csv (eval.release.results): the builder against a hand-written eval output, and the committed
table against the shipped model cards it must agree with."""
import csv
import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from eval.release import results
from tests.support.cli import CliResult, assert_cli_user_error
from zoo import manifest

ROOT = Path(__file__).parents[2]
RESULTS = ROOT / "results"

# a `tdbn-zoo eval --json` document written by hand (only the fields the table reads, plus noise it must ignore)
HAND_DOC = {
    "args": {"model": "weights/x", "data": "mnist:/data", "split": "test"},
    "results": [{"model": "weights/x", "data": "mnist (test)", "T": 2, "images": 8, "top1": 87.5, "top5": 100.0,
                 "mean_firing_rate": 0.123456, "acs": 1234567.4, "macs": 359424.6, "ann_macs": 1.0,
                 "energy": {"e_ac_pj": 0.9, "e_mac_pj": 4.6, "snn_pj": 2764551.0, "ann_pj": 12345678.0},
                 "speed": {"batch_size": 64, "repeats": 5, "latency_ms": 41.26, "throughput_img_s": 1551.0},
                 "layers": [], "synaptic_layers": [], "machine": {}, "confusion": []}],
}


def test_row_from_a_hand_written_eval_output():
    assert results.row("arch.tag", HAND_DOC, params=823274) == {
        "model": "arch.tag", "dataset": "mnist/test", "images": 8, "top1": 87.5, "top5": 100.0, "T": 2,
        "params": 823274, "acs_per_image": 1234567, "macs_per_image": 359425, "energy_uj_per_image": 2.765,
        "ann_energy_uj_per_image": 12.35, "mean_firing_rate": 0.1235, "latency_ms": 41.3, "batch_size": 64}
    no_speed = json.loads(json.dumps(HAND_DOC))
    no_speed["results"][0].update(speed={}, top5=None)
    r = results.row("arch.tag", no_speed, params=1)
    assert (r["latency_ms"], r["batch_size"], r["top5"]) == (None, None, None)
    text = results.to_csv([r])
    assert text.splitlines()[0] == ",".join(results.COLUMNS)
    assert text.splitlines()[1] == "arch.tag,mnist/test,8,87.5,,2,1,1234567,359425,2.765,12.35,0.1235,,"
    assert "| arch.tag | mnist/test | 8 | 87.5 | - | 2 | 1 | 1,234,567 |" in results.to_markdown([r])


def _csv_rows():
    with open(RESULTS / "results.csv", newline="") as f:
        return {r["model"]: r for r in csv.DictReader(f)}


def test_results_csv_is_the_table_of_the_committed_eval_outputs():
    assert (RESULTS / "results.csv").read_text() == results.to_csv(results.rows_from(RESULTS))
    assert (RESULTS / "results.md").read_text() == results.to_markdown(results.rows_from(RESULTS))


def test_results_csv_agrees_with_every_shipped_card():
    rows, shipped = _csv_rows(), results.shipped()
    assert set(rows) == set(shipped) and len(shipped) >= 3
    for name, (ckpt, dataset) in shipped.items():
        r = rows[name]
        card = ModelCard.load(ckpt / manifest.CARD_NAME)
        figs = {e.metric_name: e.metric_value for e in card.data.eval_results}
        assert abs(float(r["top1"]) - figs["top1"]) <= 0.01, name
        assert float(r["mean_firing_rate"]) == pytest.approx(figs["mean_firing_rate"], abs=1e-4), name
        assert float(f"{float(r['acs_per_image']):.4g}") == figs["accumulates_per_image"], name
        assert float(f"{float(r['macs_per_image']):.4g}") == figs["macs_per_image"], name
        assert "synaptic_ops_per_image" not in figs
        assert r["dataset"] == f"{dataset}/test" and int(r["images"]) == 10000  # the full test set
        assert f"{int(r['params']):,} parameters" in card.text
        assert f"T = {r['T']};" in card.text


@pytest.mark.parametrize("argv, needles", [
    (["--data-dir", "/no/such/folder"], ["--data-dir expects a folder", "/no/such/folder"]),
    ([], ["--data-dir is required"]),
    (["--from-json", "--out", "/no/such/results"], ["no eval output", "/no/such/results"]),
    (["--from-json", "--threads", "0"], ["--threads expects a positive integer, got 0"]),
])
def test_bad_arguments_are_one_line_errors(argv, needles, capsys):
    try:
        rc = results.main(argv)
    except SystemExit as e:
        rc = int(e.code or 0)
    out = capsys.readouterr()
    assert_cli_user_error(CliResult(rc, out.out, out.err), *needles)
