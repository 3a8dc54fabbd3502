"""The live smoke tests spend real tokens: they are collected only when asked for by name."""

from __future__ import annotations

from pathlib import Path

import pytest

LIVE_DIR = Path(__file__).resolve().parent


def _live_selected(config: pytest.Config) -> bool:
    base = Path(config.invocation_params.dir)
    for arg in config.invocation_params.args:
        if arg.startswith("-"):
            continue
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == LIVE_DIR or LIVE_DIR in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`pytest` over the whole tree leaves tests/live out, even with vendor keys in the
    environment; `pytest tests/live` (`make test-live`) runs it."""
    if LIVE_DIR in collection_path.parents and not _live_selected(config):
        return True
    return None
