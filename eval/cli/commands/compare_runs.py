"""``tdbn-zoo compare-runs``: tables comparing training runs from their metrics.jsonl (``eval.train.compare_runs``)."""
from __future__ import annotations

HELP = "Compare training runs (their metrics.jsonl): final figures and per-stage firing rates."


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", help="training run folders")
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON instead")


def run(args) -> int:
    import json

    from eval.train.compare_runs import markdown, run_summary

    summaries = [run_summary(r) for r in args.runs]
    print(json.dumps(summaries, indent=2) if args.json else markdown(summaries))
    return 0
