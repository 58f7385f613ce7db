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

    from zoo import TAGS, manifest

    from .publish import checkpoint_name

    path = Path(args.manifest) if args.manifest else manifest.weights_dir() / manifest.MANIFEST_NAME
    if args.action == "add":
        from zoo.outputs import check_output_path

        # manifest add is the command that ships into weights/; its manifest is never a file of the folder
        check_output_path(path, inputs=[args.folder], flag="--manifest", allow_weights=True)
        name = manifest.check_name(args.tag, TAGS) if args.tag else checkpoint_name(args.folder)
        e = manifest.record(name, args.folder, known=TAGS, repo_id=args.repo, revision=args.revision, ship=args.ship,
                            manifest_path=path)
        print(f"{path}: {name} -> {e['repo_id']}" + (f"@{e['revision']}" if e["revision"] else "")
              + (f", shipped in {path.parent / e['path']}" if e.get("path") else "")
              + f", {len(e['files'])} files")
        return 0
    from zoo.errors import CheckpointError

    if not path.is_file():
        raise CheckpointError(f"{path}: no manifest to verify (write one with `tdbn-zoo manifest add`)")
    models = manifest.read_manifest(path)["models"]
    nowhere = [n for n, e in models.items() if not e.get("path") and not e.get("revision")]
    if nowhere:  # neither shipped here nor pinned on the Hub: the entry describes files that exist nowhere
        raise CheckpointError(
            f"{path}: {len(nowhere)} entr{'y' if len(nowhere) == 1 else 'ies'} ({', '.join(nowhere[:3])}"
            f"{', ...' if len(nowhere) > 3 else ''}) name neither a shipped folder nor a pinned "
            f"Hub revision; ship them (`tdbn-zoo manifest add DIR --ship`), pin them "
            f"(--revision) or remove them")
    shipped = {n: e for n, e in models.items() if e.get("path")}
    for name, e in shipped.items():
        folder = manifest.inside(path.parent, e["path"])
        missing = [f for f in e["files"] if not (folder / f).is_file()]
        if missing:
            raise CheckpointError(f"{path}: entry {name!r} lists {', '.join(missing)}, missing from {folder}")
        manifest.verify(folder, e["files"], name)
    print(f"{path}: {len(models)} entries, {len(shipped)} shipped checkpoints verified, "
          f"{len(models) - len(shipped)} pinned on the Hub (verified when loaded)")
    return 0
