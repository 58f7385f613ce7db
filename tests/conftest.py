"""Test-wide settings and shared fixtures: nothing may reach the network, the Hub cache is private to the test
run, the one tiny test architecture, the local Hub-protocol server. Helpers that are not fixtures live in
``tests/support/`` (imported as ``tests.support.*``)."""
import os
import tempfile

# Set before huggingface_hub is imported anywhere (it reads HF_* once, at import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_CACHE", tempfile.mkdtemp(prefix="tdbn-zoo-hf-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.hub_emulator import HubEmulator  # noqa: E402
from tests.support.hub import HUB_TOKEN  # noqa: E402
from tests.support.models import make_tiny as _make_tiny  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """One torch thread for tests of tiny tensors: on a shared, busy 2-core machine two OpenMP threads
    contend and a millisecond op can take tens of milliseconds. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """A private weights/ folder (the package's own stays untouched)."""
    d = tmp_path / "weights"
    d.mkdir()
    monkeypatch.setenv("TDBN_ZOO_WEIGHTS", str(d))
    return d


@pytest.fixture
def make_tiny():
    """``make_tiny(**overrides)``: the one tiny test architecture (``tests.support.models.TINY``), overridden."""
    return _make_tiny


@pytest.fixture
def tiny_model():
    """A fresh ``SpikingResNet(**TINY)`` in eval mode."""
    return _make_tiny().eval()


@pytest.fixture(scope="module")
def hub():
    """The local Hub-protocol server (tests/hub_emulator.py), huggingface_hub pointed at it; one per module."""
    import huggingface_hub.constants as c

    with HubEmulator(token=HUB_TOKEN) as server, pytest.MonkeyPatch.context() as mp:
        mp.setattr(c, "ENDPOINT", server.endpoint)
        mp.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        mp.setattr(c, "HF_HUB_DISABLE_XET", True)  # the emulator speaks classic LFS only
        mp.setattr(c, "HF_HUB_OFFLINE", False)  # conftest makes the suite offline; this server is local
        mp.setenv("HF_TOKEN", HUB_TOKEN)
        yield server


@pytest.fixture
def online(hub, tmp_path, monkeypatch):
    """Online against the emulator, with a clean Hub cache and a private weights/ manifest."""
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TDBN_ZOO_WEIGHTS", str(tmp_path / "weights"))
    return tmp_path

