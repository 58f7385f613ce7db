"""Test-wide settings: nothing may reach the network, and the Hub cache is private to the test run."""
import os
import tempfile

# Set before huggingface_hub is imported anywhere (it reads HF_* once, at import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_CACHE", tempfile.mkdtemp(prefix="tdbn-zoo-hf-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402

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
