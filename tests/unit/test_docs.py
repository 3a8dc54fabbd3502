"""What the docs quote about the settings and the job row is what the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vamu_tasks.settings import Settings
from vamu_tasks.store.models import AiJob

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["docs/contracts.md", "README.md", "docs/operations.md"]
# Read by the test suite (tests/support/services.py), not by the processes.
TEST_ONLY = {"VAMU_TEST_PG_ADMIN_URL", "VAMU_TEST_REDIS_URL"}

VARIABLE = re.compile(r"\bVAMU_[A-Z0-9_]*[A-Z0-9]\b")
# A default quoted next to its variable: "`VAMU_X` (16)", "`VAMU_X` model calls (8)",
# "`VAMU_X` (30 s)", "`VAMU_X`, default 120", "`VAMU_X`, default `socket.io`". A parenthesis
# that does not start with a number ("(a day)", "(with 10 s in …)") quotes no default.
QUOTED_DEFAULT = re.compile(
    r"`(VAMU_[A-Z0-9_]+)`"
    r"(?:,?\s+default\s+`?([^`\s,;)]+)|[^`()|]{0,40}\(([0-9][0-9.]*)[ ;)])"
)
# A row of README's settings table: "| `VAMU_X` | `16` | …" or "| `VAMU_X` | unset | …".
TABLE_ROW = re.compile(r"^\| (`VAMU_[^|]*) \| ([^|]*) \|", re.MULTILINE)


def settings_variables() -> dict[str, object]:
    """Every variable `Settings` reads, with its default."""
    out: dict[str, object] = {}
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        aliases = getattr(field.validation_alias, "choices", None)
        for variable in aliases or [f"VAMU_{name.upper()}"]:
            out[str(variable)] = default
    return out


def same_value(quoted: str, default: object) -> bool:
    quoted = quoted.rstrip(".")
    if isinstance(default, bool):
        return quoted == str(default).lower()
    if isinstance(default, int | float):
        try:
            return float(quoted) == float(default)
        except ValueError:
            return False
    if isinstance(default, list):
        return quoted == ",".join(default)
    return quoted == str(default)


def text(doc: str) -> str:
    return (ROOT / doc).read_text(encoding="utf-8")


def quoted_defaults(source: str) -> list[tuple[str, str]]:
    """(variable, quoted default) for each default the text quotes next to a variable."""
    found = [(m[1], m[2] or m[3]) for m in QUOTED_DEFAULT.finditer(source)]
    for names, cell in TABLE_ROW.findall(source):
        match = re.fullmatch(r"`([^`]+)`", cell.strip())
        if match:
            found += [(name, match[1]) for name in VARIABLE.findall(names)]
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_every_setting_the_docs_name_is_one_the_settings_read(doc: str) -> None:
    known = settings_variables().keys() | TEST_ONLY

    assert sorted(set(VARIABLE.findall(text(doc))) - known) == []


@pytest.mark.parametrize("doc", DOCS)
def test_every_default_the_docs_quote_next_to_a_setting_is_its_default(doc: str) -> None:
    defaults = settings_variables()

    # A setting whose default is None is worked out at run time (the SQLite file in the data
    # dir, the provider from the keys): the docs describe that, not a value to compare.
    stale = [
        (name, quoted, defaults[name])
        for name, quoted in quoted_defaults(text(doc))
        if defaults.get(name) is not None and not same_value(quoted, defaults[name])
    ]

    assert stale == []


@pytest.mark.parametrize("doc", DOCS)
def test_a_setting_the_settings_table_calls_unset_has_no_default(doc: str) -> None:
    defaults = settings_variables()

    wrong = [
        (name, defaults[name])
        for names, cell in TABLE_ROW.findall(text(doc))
        if cell.strip().startswith("unset")
        for name in VARIABLE.findall(names)
        if defaults.get(name) is not None
    ]

    assert wrong == []


def test_the_default_check_finds_the_defaults_quoted_in_contracts_md() -> None:
    # Guards the pattern above: if it stopped matching, the test before would pass vacuously.
    found = dict(quoted_defaults(text("docs/contracts.md")))

    assert found["VAMU_BRIDGE_SYNC_CONCURRENCY"] == "16"
    assert found["VAMU_AGENT_MAX_STEPS"] == "8"
    assert found["VAMU_SOCKETIO_KEY"] == "socket.io"
    assert len(dict(quoted_defaults(text("README.md")))) > 40


def test_a_stale_default_is_caught() -> None:
    defaults = settings_variables()
    stale = "The bridge holds at most `VAMU_BRIDGE_SYNC_CONCURRENCY` (50) sync jobs at once."

    [(name, quoted)] = quoted_defaults(stale)

    assert not same_value(quoted, defaults[name])


def test_the_test_only_variables_are_read_by_the_test_suite() -> None:
    services = (ROOT / "tests" / "support" / "services.py").read_text(encoding="utf-8")

    assert all(name in services for name in TEST_ONLY)


def test_contracts_md_lists_every_column_of_ai_jobs() -> None:
    doc = text("docs/contracts.md")
    section = doc.split("## The job row: `ai_jobs`", 1)[1].split("\n## ", 1)[0]
    first_cells = re.findall(r"^\| ([^|]+) \|", section, re.MULTILINE)
    documented = {name for cell in first_cells for name in re.findall(r"`([a-z_]+)`", cell)}

    assert documented == {column.name for column in AiJob.__table__.columns}
