"""``tdbn-zoo publish``: upload a checkpoint folder to the Hugging Face Hub."""
from __future__ import annotations

from ._args import writable_file

HELP = "Upload a checkpoint folder (model.safetensors, config.json, README.md) to a Hugging Face Hub repo."


def add_arguments(parser) -> None:
    parser.add_argument("folder", help="checkpoint folder written by zoo.save_pretrained")
    parser.add_argument("--repo", required=True, help="Hub repo id, owner/name (created if missing; a bare name "
                                                      "goes under your account, and the full id is recorded)")
    parser.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--message", default=None, help="commit message")
    parser.add_argument("--manifest", default=None, metavar="PATH", type=writable_file,
                        help="record the repo, the new commit and the sha256 of the weights and config in this "
                             "manifest (e.g. weights/manifest.json) under the checkpoint's arch.tag; a shipped "
                             "copy of the same weights stays shipped")


def checkpoint_name(folder) -> str:
    """The ``arch.tag`` a checkpoint folder's ``config.json`` names (a registered one, checked)."""
    from zoo import TAGS, manifest
    from zoo.checkpoints import Checkpoint
    from zoo.errors import InvalidFileError
    from zoo.naming import arch_tag

    cfg = Checkpoint.from_path(folder).config
    if cfg is None:
        raise InvalidFileError(f"{folder} has no config.json: pass --tag arch.tag, or write it with zoo.save_pretrained")
    tag = (cfg.get("pretrained_cfg") or {}).get("tag")
    return manifest.check_name(arch_tag(cfg["architecture"], tag), TAGS)


def run(args) -> int:
    from zoo import TAGS, manifest
    from zoo.hub import publish, publish_files

    from zoo.outputs import check_output_path

    # the manifest may be the shipped one (weights/manifest.json), never a file of the folder published
    check_output_path(args.manifest, inputs=[args.folder], flag="--manifest", allow_weights=True)
    name = None
    if args.manifest:  # check what will be recorded before anything is uploaded
        name = checkpoint_name(args.folder)
        manifest.read_manifest(args.manifest)
    files = publish_files(args.folder)  # regular files inside the folder only, listed before anything leaves
    print(f"uploading {len(files)} files of {args.folder}: "
          + ", ".join(f"{n} ({p.stat().st_size} bytes)" for n, p in files.items()))
    info = publish(args.folder, args.repo, revision=args.revision, private=args.private,
                   commit_message=args.message)
    repo_id = info.repo_url.repo_id  # the full owner/name, also when --repo was a bare name
    print(f"published {args.folder} to {repo_id} at commit {info.oid}: {info.commit_url}")
    if args.manifest:
        manifest.record(name, args.folder, known=TAGS, repo_id=repo_id, revision=info.oid, manifest_path=args.manifest)
        print(f"recorded {name} -> {repo_id}@{info.oid} in {args.manifest}")
    return 0
