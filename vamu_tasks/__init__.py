"""VAMU AI job system: Celery tasks for inspiration, chatbot and agent jobs.

`celery -A vamu_tasks` finds the Celery app as `vamu_tasks.app`. It is imported on first access
so that tools importing one small module (the fakes, the settings) do not pay for Celery and
the LLM SDKs.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from vamu_tasks.app import app as celery_app

        # Importing the submodule bound `vamu_tasks.app` to the module; rebind it to the app.
        globals()["app"] = celery_app
        return celery_app
    raise AttributeError(f"module 'vamu_tasks' has no attribute {name!r}")
