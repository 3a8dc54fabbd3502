"""VAMU AI job system: Celery tasks for inspiration, chatbot and agent jobs."""

from vamu_tasks.app import app

__all__ = ["app"]
