"""adapters.settings: the one list of the TDBN_ZOO_* environment variables, and the readers that use it."""
import math
import pathlib
import re

import pytest

from adapters import settings

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAME = re.compile(r"TDBN_ZOO_[A-Z0-9]+(?:_[A-Z0-9]+)*")


def _mentioned() -> dict[str, str]:
    """Every TDBN_ZOO_* name the code, the tests and the docs mention, with one place it occurs."""
    found = {}
    files = [*ROOT.glob("adapters/**/*.py"), *ROOT.glob("zoo/**/*.py"), *ROOT.glob("eval/**/*.py"),
             *ROOT.glob("tests/**/*.py"), *ROOT.glob("*.md"), *ROOT.glob("*.toml")]
    for path in files:
        for m in NAME.finditer(path.read_text(errors="replace")):
            found.setdefault(m.group(0), str(path.relative_to(ROOT)))
    return found


def test_every_variable_the_code_mentions_is_listed():
    mentioned = _mentioned()
    listed = {s.name for s in settings.SETTINGS}
    assert {"TDBN_ZOO_CHECK_VALUES", "TDBN_ZOO_WEIGHTS", "TDBN_ZOO_HUB_TIMEOUT"} <= set(mentioned)  # the scan works
    missing = {name: where for name, where in mentioned.items() if name not in listed}
    assert not missing, f"not in adapters/settings.py: {missing}"
    assert len(listed) == len(settings.SETTINGS) and all(s.meaning for s in settings.SETTINGS)


def test_no_reader_bypasses_the_settings_module():
    """The package code reads the variables only through ``settings.get`` (tests may set them)."""
    direct = re.compile(r"os\.environ(?:\.get\(|\[)\s*[\"']?(TDBN_ZOO_|[A-Z_]*ENV\b)|os\.getenv\(")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for pkg in ("adapters", "zoo", "eval") for p in ROOT.glob(f"{pkg}/**/*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1) if direct.search(line)]
    assert not offenders, offenders


@pytest.mark.parametrize("name,raw,expected", [
    ("TDBN_ZOO_CHECK_VALUES", None, None), ("TDBN_ZOO_CHECK_VALUES", "1", True), ("TDBN_ZOO_CHECK_VALUES", "Off", False),
    ("TDBN_ZOO_LEAN_TRAINING", None, True), ("TDBN_ZOO_LEAN_TRAINING", "0", False), ("TDBN_ZOO_LEAN_TRAINING", "", True),
    ("TDBN_ZOO_NO_KERNELS", None, False), ("TDBN_ZOO_NO_KERNELS", "0", True),  # any text disables the kernels
    ("TDBN_ZOO_HUB_TIMEOUT", None, 30.0), ("TDBN_ZOO_HUB_TIMEOUT", "2.5", 2.5),
    ("TDBN_ZOO_WEIGHTS", "/srv/w", pathlib.Path("/srv/w")), ("TDBN_ZOO_DATA", None, None),
])
def test_values_and_defaults(name, raw, expected):
    assert settings.get(name, environ={} if raw is None else {name: raw}) == expected


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_value_names_the_variable(raw):
    with pytest.raises(ValueError, match=rf"TDBN_ZOO_HUB_TIMEOUT must be a positive number of seconds, got '{raw}'"):
        settings.get("TDBN_ZOO_HUB_TIMEOUT", environ={"TDBN_ZOO_HUB_TIMEOUT": raw})


def test_readers_use_the_settings(monkeypatch, tmp_path):
    from eval.data.images import shared_data_dirs
    from zoo import hub, manifest

    monkeypatch.setenv("TDBN_ZOO_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TDBN_ZOO_HUB_TIMEOUT", "7")
    monkeypatch.setenv("TDBN_ZOO_DATA", str(tmp_path / "data"))
    assert manifest.weights_dir() == tmp_path and hub.hub_timeout() == 7.0
    assert shared_data_dirs()[0] == tmp_path / "data"
    monkeypatch.setenv("TDBN_ZOO_HUB_TIMEOUT", "-3")
    with pytest.raises(ValueError, match="TDBN_ZOO_HUB_TIMEOUT"):
        hub.hub_timeout()


def test_the_reference_table_lists_each_setting_once():
    table = settings.reference_table().splitlines()
    assert len(table) == 2 + len(settings.SETTINGS)
    assert all(f"`{s.name}`" in row for s, row in zip(settings.SETTINGS, table[2:]))
    assert all(row.count("|") == 4 for row in table)  # three cells a row: no stray pipe in a meaning
    assert not math.isnan(settings.get("TDBN_ZOO_HUB_TIMEOUT", environ={}))
