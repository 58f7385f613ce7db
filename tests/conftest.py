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
