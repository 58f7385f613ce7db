"""``tdbn-zoo manifest``: (re)generate and check entries of weights/manifest.json."""
from __future__ import annotations

from ._args import writable_file

HELP = "Add a checkpoint to weights/manifest.json (optionally shipping it in weights/), or verify the manifest."


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="record a checkpoint folder (sha256 of every file)")
    add.add_argument("folder", help="checkpoint folder written by zoo.save_pretrained")
    add.add_argument("--tag", default=None, help="arch.tag (default: from the folder's config.json)")
    add.add_argument("--repo", default=None, help="Hub repo id (default: tdbn-zoo/<arch.tag>)")
    add.add_argument("--revision", default=None, help="pinned Hub commit")
    add.add_argument("--ship", action="store_true", help="copy the folder into weights/<arch.tag>/")
    add.add_argument("--manifest", default=None, metavar="PATH", type=writable_file,
                     help="manifest file (default: weights/manifest.json)")
    ver = sub.add_parser("verify", help="check the sha256 of every shipped checkpoint")
    ver.add_argument("--manifest", default=None, metavar="PATH")


def run(args) -> int:
    from pathlib import Path

    from zoo import manifest

    from .publish import checkpoint_name

    path = Path(args.manifest) if args.manifest else manifest.weights_dir() / manifest.MANIFEST_NAME
    if args.action == "add":
        from zoo.fileio import check_output_path

        # manifest add is the command that ships into weights/; its manifest is never a file of the folder
        check_output_path(path, inputs=[args.folder], flag="--manifest", allow_weights=True)
        name = manifest.check_name(args.tag) if args.tag else checkpoint_name(args.folder)
        e = manifest.record(name, args.folder, repo_id=args.repo, revision=args.revision, ship=args.ship,
                            manifest_path=path)
        print(f"{path}: {name} -> {e['repo_id']}" + (f"@{e['revision']}" if e["revision"] else "")
              + (f", shipped in {path.parent / e['path']}" if e.get("path") else "")
              + f", {len(e['files'])} files")
        return 0
    models = manifest.read_manifest(path)["models"]
    shipped = {n: e for n, e in models.items() if e.get("path")}
    for name, e in shipped.items():
        manifest.verify(manifest.inside(path.parent, e["path"]), e["files"], name)
    print(f"{path}: {len(models)} entries, {len(shipped)} shipped checkpoints verified")
    return 0
