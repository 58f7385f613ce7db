"""The local Hub-protocol server's settings (the ``hub``/``online`` fixtures of ``tests/conftest.py`` start it)."""

#: The write token the emulator accepts (``tests/hub_emulator.py``, ``HubEmulator(token=...)``).
HUB_TOKEN = "hf_emulator_write_token"
