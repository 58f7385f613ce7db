"""The Hugging Face Hub side of checkpoints: fetch one model's files, publish a checkpoint folder.

Everything goes through huggingface_hub, so its settings apply as usual: ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``
(cached files only), ``HF_HUB_CACHE``/``HF_HOME`` (where files are cached), ``HF_TOKEN`` or ``hf auth login``
(tokens for private repos and uploads). Hub failures come back as zoo errors naming the repo and the fix.
"""
from __future__ import annotations

from pathlib import Path

from .checkpoints import FILES
from .errors import PretrainedUnavailableError, PublishError


def split_revision(repo_id: str) -> tuple[str, str | None]:
    """``'org/name@rev'`` -> ``('org/name', 'rev')`` (timm's ``hf-hub:`` spelling of a pinned revision)."""
    repo, _, rev = repo_id.partition("@")
    return repo, (rev or None)


def _cache_dir(cache_dir) -> str:
    from huggingface_hub import constants
    return str(cache_dir or constants.HF_HUB_CACHE)


def download(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
             files=FILES, hint: str = "") -> Path:
    """Fetch ``files`` of one model repo together (``snapshot_download`` with ``allow_patterns``) into the
    Hub cache and return the snapshot folder. Offline (``HF_HUB_OFFLINE=1``) it returns cached files or
    raises ``PretrainedUnavailableError``; ``hint`` is appended to such errors (e.g. the train command)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    at = f"{repo_id}" + (f" at revision {revision}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(files),
                                      cache_dir=cache_dir))
    except LocalEntryNotFoundError as e:
        if constants.HF_HUB_OFFLINE:
            why = ("offline mode is on (HF_HUB_OFFLINE=1) and the files are not in the Hub cache "
                   f"{_cache_dir(cache_dir)}. Run once with network access (unset HF_HUB_OFFLINE) to download "
                   f"them, or point HF_HUB_CACHE at a cache that has them")
        else:
            why = (f"the Hub could not be reached and the files are not in the Hub cache {_cache_dir(cache_dir)} "
                   f"({type(e.__cause__ or e).__name__}). Check the network / HF_ENDPOINT and retry")
        raise PretrainedUnavailableError(f"cannot load {at}: {why}.{hint}") from e
    except GatedRepoError as e:
        raise PretrainedUnavailableError(f"{at} is gated or private: log in (`hf auth login` or HF_TOKEN) with "
                                         f"an account that has access.{hint}") from e
    except RepositoryNotFoundError as e:
        raise PretrainedUnavailableError(f"{repo_id} does not exist on the Hub ({constants.ENDPOINT}) or is "
                                         f"private (set HF_TOKEN).{hint}") from e
    except RevisionNotFoundError as e:
        raise PretrainedUnavailableError(f"{repo_id} has no revision {revision!r}.{hint}") from e
    except (HfHubHTTPError, OSError) as e:
        raise PretrainedUnavailableError(f"cannot download {at}: {e}.{hint}") from e


def publish(folder: str | Path, repo_id: str, *, revision: str | None = None, private: bool = False,
            token: str | None = None, commit_message: str | None = None):
    """Upload a checkpoint folder (``model.safetensors``, ``config.json``, ``README.md``) to ``repo_id``
    (created if needed) with ``HfApi.create_repo`` + ``upload_folder``; returns the ``CommitInfo``
    (``.oid`` is the commit to pin in the manifest)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    from .checkpoints import Checkpoint

    folder = Path(folder)
    ckpt = Checkpoint.from_path(folder)
    if ckpt.config is None:
        raise ValueError(f"{folder} has no config.json: write checkpoint folders with zoo.save_pretrained")
    ckpt.state_dict()  # refuse to publish a corrupt file
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"{folder} lacks {', '.join(missing)}: write checkpoint folders with zoo.save_pretrained")
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo.repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(repo_id=repo.repo_id, folder_path=str(folder), allow_patterns=list(FILES),
                                 revision=revision, commit_message=commit_message or f"Upload {folder.name}")
    except (HfHubHTTPError, OSError) as e:  # offline mode is a ConnectionError, hence an OSError
        raise PublishError(f"could not publish {folder} to {repo_id} on {constants.ENDPOINT}: {e}. Check "
                           f"HF_HUB_OFFLINE, the network and that HF_TOKEN (or `hf auth login`) may write "
                           f"to {repo_id.split('/')[0]}") from e
