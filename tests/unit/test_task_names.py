"""docs/operations.md lists every task name the system runs."""

from __future__ import annotations

from pathlib import Path

from vamu_tasks.app import app
from vamu_tasks.housekeeping import PERIODIC

OPERATIONS = Path(__file__).parents[2] / "docs" / "operations.md"


def test_operations_lists_every_celery_task_and_housekeeping_job_by_name():
    app.loader.import_default_modules()
    text = OPERATIONS.read_text()
    section = text[text.index("### Task names"):]
    names = {name for name in app.tasks if not name.startswith("celery.")}
    names |= {job.name for job in PERIODIC}

    assert names, "no task found: the app's modules were not imported"
    assert [name for name in sorted(names) if f"| `{name}` |" not in section] == []
