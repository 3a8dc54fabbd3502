"""Celery settings for every vamu-tasks process, derived from `vamu_tasks.settings.Settings`.

Celery reads this module lazily (on first use of the app's config), so importing the package
connects to nothing. The settings themselves are built in `vamu_tasks.celery_config`.
"""

from __future__ import annotations

from vamu_tasks.celery_config import celery_config
from vamu_tasks.settings import Settings

globals().update(celery_config(Settings()))
