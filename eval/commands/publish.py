"""``tdbn-zoo publish``: upload a checkpoint folder to the Hugging Face Hub."""
from __future__ import annotations

from ._args import writable_file

HELP = "Upload a checkpoint folder (model.safetensors, config.json, README.md) to a Hugging Face Hub repo."


def add_arguments(parser) -> None:
    parser.add_argument("folder", help="checkpoint folder written by zoo.save_pretrained")
    parser.add_argument("--repo", required=True, help="Hub repo id, org/name (created if missing)")
    parser.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--message", default=None, help="commit message")
    parser.add_argument("--manifest", default=None, metavar="PATH", type=writable_file,
                        help="record the repo, the new commit and the files' sha256 in this manifest "
                             "(e.g. weights/manifest.json) under the checkpoint's arch.tag")


def run(args) -> int:
    from zoo import manifest
    from zoo.checkpoints import Checkpoint
    from zoo.hub import publish

    info = publish(args.folder, args.repo, revision=args.revision, private=args.private,
                   commit_message=args.message)
    print(f"published {args.folder} to {args.repo} at commit {info.oid}: {info.commit_url}")
    if args.manifest:
        cfg = Checkpoint.from_path(args.folder).config
        tag = cfg.get("pretrained_cfg", {}).get("tag")
        name = f"{cfg['architecture']}.{tag}" if tag else cfg["architecture"]
        manifest.record(name, args.folder, repo_id=args.repo, revision=info.oid, manifest_path=args.manifest)
        print(f"recorded {name} -> {args.repo}@{info.oid} in {args.manifest}")
    return 0
