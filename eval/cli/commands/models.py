"""``tdbn-zoo models [ARCH]``: the architectures, their pretrained tags, and every model argument with its
default -- the names ``--model-kw KEY=JSON`` takes in ``train``, ``eval``, ``bench`` and ``reproduce``.

Example::

    tdbn-zoo models                    # architectures and their tags
    tdbn-zoo models sresnet19_tdbn     # its arguments with defaults, and what each tag changes
    tdbn-zoo models sresnet19_tdbn --json
"""
from __future__ import annotations

HELP = "List architectures, their tags, and every model argument with its default (the --model-kw names)."


def add_arguments(parser) -> None:
    parser.add_argument("arch", nargs="?", help="an architecture (or arch.tag): list its arguments and defaults")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def describe(arch: str) -> dict:
    """``{'arch', 'summary', 'arguments': {name: default}, 'tags': {arch.tag: {...}}}`` of ``arch``."""
    import zoo.models
    from zoo.models import model_arguments
    from zoo.tags import TAGS

    tags = {}
    for name, t in TAGS.items():
        if name.split(".")[0] == arch:
            tags[name] = dict(dataset=t.get("dataset"), T=t.get("T"), input_size=list(t.get("input_size", [])),
                              num_classes=t.get("num_classes"), paper_top1=t.get("paper_top1"),
                              model_args=t.get("model_args") or {})
    doc = (getattr(zoo.models, arch).__doc__ or "").strip().splitlines()
    args = {k: list(v) if isinstance(v, tuple) else v for k, v in model_arguments(arch).items()}
    return dict(arch=arch, summary=doc[0] if doc else "", arguments=args, tags=tags)


def _format_tag(name: str, t: dict) -> str:
    paper = f"paper {t['paper_top1']}%" if t["paper_top1"] is not None else "not a paper result"
    changes = "".join(f", {k}={v}" for k, v in t["model_args"].items())
    return (f"  {name:<40} {t['dataset']}, {'x'.join(map(str, t['input_size']))}, {t['num_classes']} classes, "
            f"T={t['T']}{changes}; {paper}")


def run(args) -> int:
    import json

    from zoo import ARCH_CFGS
    from zoo.errors import UnknownModelError
    from zoo.naming import did_you_mean

    if args.arch is None:
        docs = [describe(a) for a in ARCH_CFGS]
        if args.json:
            print(json.dumps(docs, indent=1))
            return 0
        for d in docs:
            print(f"{d['arch']}: {d['summary']}")
            print("\n".join(_format_tag(n, t) for n, t in d["tags"].items()) or "  (no pretrained tag)")
        print("\nEvery argument and its default: tdbn-zoo models ARCH. Set them with --model-kw KEY=JSON (train, "
              "eval, bench, reproduce) or zoo.create(name, KEY=value).")
        return 0
    arch = args.arch.split(".")[0]
    if arch not in ARCH_CFGS:
        raise UnknownModelError(f"unknown architecture {args.arch!r}.{did_you_mean(arch, ARCH_CFGS)} "
                                f"Architectures: {', '.join(ARCH_CFGS)}")
    d = describe(arch)
    if args.json:
        print(json.dumps(d, indent=1))
        return 0
    width = max(map(len, d["arguments"]))
    print(f"{arch}: {d['summary']}\n\nmodel arguments (--model-kw NAME=JSON; default):")
    print("\n".join(f"  {k:<{width}}  {json.dumps(v)}" for k, v in d["arguments"].items()))
    print("\ntags (a tag sets T, the data's classes and channels, and may change arguments):")
    print("\n".join(_format_tag(n, t) for n, t in d["tags"].items()) or "  (none)")
    return 0
