"""The Hugging Face Hub side of checkpoints: fetch one model's files, publish a checkpoint folder.

Everything goes through huggingface_hub, so its settings apply as usual: ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``
(cached files only), ``HF_HUB_CACHE``/``HF_HOME`` (where files are cached), ``HF_TOKEN`` or ``hf auth login``
(tokens for private repos and uploads). Hub failures come back as zoo errors naming the repo and the fix.

Timeouts: every Hub call the zoo makes (download, publish) has a deadline of ``TDBN_ZOO_HUB_TIMEOUT`` seconds
(default 30). No single connect/read waits past it, and once it has passed no new request (nor retry) starts,
so a server that accepts connections and never answers costs at most that long plus one retry pause.

Transient server errors (HTTP 500, 502, 503, 504, 429) are retried with exponential backoff (0.5 s, 1 s, 2 s,
... at most 8 s) while the deadline leaves time for the pause; the error after the last try names the status.
"""
from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from adapters import settings

from .checkpoints import CARD_NAME, FILES, Checkpoint
from .errors import InvalidArgumentError, InvalidFileError, PretrainedUnavailableError, PublishError
from .fileio import regular_files

TIMEOUT_ENV = "TDBN_ZOO_HUB_TIMEOUT"
_local = threading.local()
_hooked = False
_hook_lock = threading.Lock()


class HubTimeoutError(PretrainedUnavailableError):
    """The Hub did not answer within the zoo's deadline."""


class _DeadlinePassed(Exception):
    """Raised by the request hook once the deadline has passed; huggingface_hub does not retry it."""


def hub_timeout() -> float:
    """The deadline of one zoo Hub call in seconds: ``TDBN_ZOO_HUB_TIMEOUT`` (a positive number; its default in
    ``adapters.settings``: 30)."""
    try:
        return settings.get(TIMEOUT_ENV)
    except ValueError as e:  # the variable's text: a user's setting
        raise InvalidArgumentError(str(e)) from None


def _request_hook(request) -> None:
    """Clip the request's timeouts to what is left of the active deadline (none active: untouched)."""
    import httpx2

    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise _DeadlinePassed(f"{request.method} {request.url}")
    own = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {k: (left if v is None else min(v, left))
                                     for k, v in {**httpx2.Timeout(None).as_dict(), **own}.items()}


def _response_hook(response) -> None:
    """Note every server-error status answered inside the active deadline (huggingface_hub retries some
    requests itself, so the status may never reach the caller's exception)."""
    statuses = getattr(_local, "statuses", None)
    if statuses is not None and response.status_code in RETRY_STATUSES:
        statuses.append(response.status_code)


def _install_hook() -> None:
    """Wrap huggingface_hub's client factory once so its shared client runs ``_request_hook``."""
    global _hooked
    with _hook_lock:
        if _hooked:
            return
        from huggingface_hub.utils import _http, set_client_factory

        previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)

        def factory():
            client = previous()
            client.event_hooks["request"] = [*client.event_hooks.get("request", []), _request_hook]
            client.event_hooks["response"] = [*client.event_hooks.get("response", []), _response_hook]
            return client

        set_client_factory(factory)
        _hooked = True


@contextmanager
def deadline(seconds: float | None = None, statuses: list[int] | None = None):
    """Bound every huggingface_hub request made inside by one deadline (default ``hub_timeout()``);
    ``statuses`` collects the server-error statuses (``RETRY_STATUSES``) answered meanwhile."""
    _install_hook()
    seconds = hub_timeout() if seconds is None else seconds
    previous = getattr(_local, "deadline", None), getattr(_local, "statuses", None)
    _local.deadline, _local.statuses = time.monotonic() + seconds, statuses
    try:
        yield seconds
    finally:
        _local.deadline, _local.statuses = previous


RETRY_STATUSES = (429, 500, 502, 503, 504)  # a busy or restarting Hub: the same request may succeed later
_FIRST_PAUSE_S, _MAX_PAUSE_S = 0.5, 8.0


def _http_status(e: BaseException | None) -> int | None:
    """The HTTP status of the response behind ``e`` (or its causes), or None when there was none."""
    while e is not None:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
        e = e.__cause__ or e.__context__
    return None


def _retrying(call):
    """``call()``, again after a backoff pause while it fails with a transient HTTP status
    (``RETRY_STATUSES``) and the active deadline leaves time for the pause."""
    pause = _FIRST_PAUSE_S
    while True:
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - re-raised unless it is a transient HTTP status
            deadline = getattr(_local, "deadline", None)
            if _http_status(e) not in RETRY_STATUSES or deadline is None or deadline - time.monotonic() <= pause:
                raise
            time.sleep(pause)
            pause = min(2 * pause, _MAX_PAUSE_S)


def _status_text(tries: list[int]) -> str:
    """``'HTTP 500 (3 tries: 500, 503, 500)'`` for the server errors answered (the last 5 listed)."""
    listed = ", ".join(map(str, tries[-5:])) + (", ..." if len(tries) > 5 else "")
    return f"HTTP {tries[-1]}" + (f" ({len(tries)} tries: {listed})" if len(tries) > 1 else "")


def _timed_out(e: BaseException) -> bool:
    import httpx2

    while e is not None:
        if isinstance(e, (_DeadlinePassed, httpx2.TimeoutException)):
            return True
        e = e.__cause__ or e.__context__
    return False


def split_revision(repo_id: str) -> tuple[str, str | None]:
    """``'org/name@rev'`` -> ``('org/name', 'rev')`` (timm's ``hf-hub:`` spelling of a pinned revision)."""
    repo, _, rev = repo_id.partition("@")
    return repo, (rev or None)


def _cache_dir(cache_dir) -> str:
    from huggingface_hub import constants
    return str(cache_dir or constants.HF_HUB_CACHE)


def download(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
             files=FILES, hint: str = "",
             force_download: bool = False) -> Path:
    """Fetch ``files`` of one model repo together, from one commit (``snapshot_download`` with
    ``allow_patterns``), into the Hub cache and return the snapshot folder (named by that commit).

    Offline (``HF_HUB_OFFLINE=1``) it returns cached files. ``force_download`` fetches the files again even
    if cached (the fix for a corrupted cache). Every failure is a ``PretrainedUnavailableError`` naming the
    repo and the fix (``HubTimeoutError`` when the Hub did not answer in time); ``hint`` is appended."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    at = f"{repo_id}" + (f" at revision {revision}" if revision else "")
    tries: list[int] = []
    try:
        with deadline(statuses=tries) as seconds:
            return Path(_retrying(lambda: snapshot_download(repo_id, revision=revision, allow_patterns=list(files),
                                                            cache_dir=cache_dir, force_download=force_download)))
    except GatedRepoError as e:
        raise PretrainedUnavailableError(f"{at} is gated: accept its conditions on the Hub and log in (`hf auth "
                                         f"login` or HF_TOKEN) with an account that has access.{hint}") from e
    except RevisionNotFoundError as e:
        raise PretrainedUnavailableError(f"{repo_id} has no revision {revision!r}.{hint}") from e
    except RepositoryNotFoundError as e:
        raise PretrainedUnavailableError(f"{repo_id} does not exist on the Hub ({constants.ENDPOINT}) or is "
                                         f"private and your token may not read it (set HF_TOKEN).{hint}") from e
    except Exception as e:  # noqa: BLE001 - every other failure of the client becomes one clear error
        server_errors = bool(tries) and _http_status(e) in (None, *RETRY_STATUSES)  # the last answers were 5xx
        if _timed_out(e) and not server_errors:
            raise HubTimeoutError(f"cannot load {at}: {constants.ENDPOINT} did not answer within {seconds:g} s "
                                  f"and the files are not in the Hub cache {_cache_dir(cache_dir)}. Retry later, "
                                  f"or allow more time with {TIMEOUT_ENV}=<seconds>.{hint}") from e
        if server_errors:  # a server error every time it was asked within the deadline
            why = (f"{constants.ENDPOINT} answered {_status_text(tries)}, a server error, until the deadline "
                   f"({seconds:g} s, {TIMEOUT_ENV}) and the files are not in the Hub cache {_cache_dir(cache_dir)}. "
                   f"Retry later")
        elif isinstance(e, LocalEntryNotFoundError) and constants.HF_HUB_OFFLINE:
            why = ("offline mode is on (HF_HUB_OFFLINE=1) and the files are not in the Hub cache "
                   f"{_cache_dir(cache_dir)}. Run once with network access (unset HF_HUB_OFFLINE) to download "
                   f"them, or point HF_HUB_CACHE at a cache that has them")
        elif isinstance(e, LocalEntryNotFoundError):
            why = (f"the Hub could not be reached and the files are not in the Hub cache {_cache_dir(cache_dir)} "
                   f"({type(e.__cause__ or e).__name__}). Check the network / HF_ENDPOINT and retry")
        elif isinstance(e, (HfHubHTTPError, OSError, ValueError)):
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        else:
            raise
        raise PretrainedUnavailableError(f"cannot load {at}: {why}.{hint}") from e


def publish_files(folder: str | Path) -> dict[str, Path]:
    """The files ``publish`` uploads, ``{name: path}``: exactly ``model.safetensors``, ``config.json`` and
    ``README.md``, each a regular file inside ``folder`` (``zoo.fileio.regular_files``: a symlink out of the
    folder or a special file is refused, never followed). Raises ``InvalidFileError`` naming what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidFileError(f"{folder} is not a checkpoint folder (expected a folder holding {', '.join(FILES)})")
    files = regular_files(folder, FILES)
    missing = [f for f in FILES if f not in files]
    if missing:
        raise InvalidFileError(f"{folder} lacks {', '.join(missing)}: write checkpoint folders with "
                               f"zoo.save_pretrained")
    return files


def publish(folder: str | Path, repo_id: str, *, revision: str | None = None, private: bool = False,
            token: str | None = None, commit_message: str | None = None):
    """Upload a checkpoint folder (``model.safetensors``, ``config.json``, ``README.md``: ``publish_files``,
    nothing else) to ``repo_id`` (created if needed) in one commit (``HfApi.create_repo`` + ``create_commit``);
    returns the ``CommitInfo`` (``.oid`` is the commit to pin in the manifest, ``.repo_url.repo_id`` the full
    ``owner/name`` id, also when ``repo_id`` had no owner)."""
    from huggingface_hub import CommitOperationAdd, HfApi, constants

    from huggingface_hub.utils import HFValidationError, validate_repo_id

    folder = Path(folder)
    files = publish_files(folder)  # before anything is read: a symlink out of the folder is never followed
    try:  # the Hub's own rule, before any request: a bad id is the user's, not the network's
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise InvalidArgumentError(f"repo id {repo_id!r} is not a Hub repo id (owner/name or name): "
                                   f"{str(e).splitlines()[0]}") from None
    ckpt = Checkpoint.from_path(folder)
    if ckpt.config is None:
        raise InvalidFileError(f"{folder} has no config.json: write checkpoint folders with zoo.save_pretrained")
    ckpt.state_dict()  # refuse to publish a corrupt file
    api = HfApi(token=token)
    tries: list[int] = []
    try:
        with deadline(statuses=tries) as seconds:
            repo = _retrying(lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"))
            if revision and revision != "main":
                _retrying(lambda: api.create_branch(repo.repo_id, branch=revision, exist_ok=True))
            card = _card_for_repo(files[CARD_NAME].read_text(), repo.repo_id).encode()
            ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=card if name == CARD_NAME else str(path))
                   for name, path in files.items()]
            return _retrying(lambda: api.create_commit(repo_id=repo.repo_id, operations=ops, revision=revision,
                                                       commit_message=commit_message or f"Upload {folder.name}"))
    except Exception as e:  # noqa: BLE001 - offline mode is a ConnectionError; httpx errors are not OSErrors
        why = (f"it answered {_status_text(tries)}, a server error, until the deadline ({seconds:g} s)"
               if tries and _http_status(e) in (None, *RETRY_STATUSES)
               else f"it did not answer within {seconds:g} s ({TIMEOUT_ENV} sets the limit)" if _timed_out(e)
               else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise PublishError(f"could not publish {folder} to {repo_id} on {constants.ENDPOINT}: {why}. Check "
                           f"HF_HUB_OFFLINE, the network and that HF_TOKEN (or `hf auth login`) may write "
                           f"to {repo_id.split('/')[0]}") from e


def _card_for_repo(card: str, repo_id: str) -> str:
    """The model card with its usage line naming ``repo_id``, the repo it is published to (the card is
    written before the repo is known). The weights and config are uploaded as they are, so the manifest's
    digests hold."""
    return re.sub(r"(create_model\('hf-hub:)[^']+(')", lambda m: m[1] + repo_id + m[2], card)
