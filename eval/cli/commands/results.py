"""``tdbn-zoo results``: the results table of the shipped checkpoints (``eval.release.results``)."""
from __future__ import annotations

from pathlib import Path

from ._args import positive_int

HELP = "Evaluate every shipped checkpoint (or read OUT/*.json) and write results.csv and results.md."


def _folder(text: str) -> str:
    import argparse

    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"--data-dir expects a folder, got {text!r} (not a folder)")
    return text


def _threads(text: str) -> int:
    import argparse

    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"--threads expects a positive integer, got {text}") from None


def add_arguments(parser) -> None:
    parser.add_argument("--data-dir", type=_folder,
                        help="data root holding each shipped checkpoint's dataset (see eval.data.images)")
    parser.add_argument("--out", default="results", help="folder for the JSON outputs, results.csv and results.md")
    parser.add_argument("--weights", default=None, help="weights folder (default: the package's weights/)")
    parser.add_argument("--threads", type=_threads, default=1)
    parser.add_argument("--from-json", action="store_true", help="rebuild the table from the JSON files in OUT, no evaluation")
    parser.add_argument("--cards", action="store_true",
                        help="also re-render the shipped cards from the measured figures")


def run(args) -> int:
    from eval.release.results import build, rewrite_cards, run_evals, to_markdown
    from zoo.errors import InvalidArgumentError

    if not args.from_json and not args.data_dir:
        raise InvalidArgumentError("--data-dir is required unless --from-json")
    out = Path(args.out)
    if not args.from_json:
        run_evals(args.data_dir, out, args.weights, args.threads)
    rows = build(out, args.weights)
    if args.cards:
        rewrite_cards(out, args.weights)
    print(to_markdown(rows), end="")
    return 0
