"""Flower's configuration for `celery -A vamu_tasks flower`, from the `VAMU_FLOWER_*` settings.

Flower does not import this file: tornado executes it, and each top-level name that is a Flower
option (`address`, `port`, `basic_auth`) sets that option; command-line flags still win. Flower
looks for `flowerconfig.py` in the working directory, so this applies from the repository root,
or anywhere with `--conf=/path/to/flowerconfig.py` (or `FLOWER_CONF`). Without it, Flower starts
with no login: `python -m workers.flower` does not depend on the working directory and is the
supported entry point (see workers/flower.py and docs/operations.md, "Flower").
"""

from vamu_tasks.settings import Settings
from workers.flower import flower_config, protect_metrics, watch_tasks

# SystemExit naming VAMU_FLOWER_PASSWORD when there is no password and no insecure local flag.
_config = flower_config(Settings())

address = _config.address
port = _config.port
if _config.basic_auth:
    basic_auth = list(_config.basic_auth)

# Flower serves /metrics to anyone; this puts it behind the same login as the UI.
protect_metrics()

# Workers send task events only when asked: ask now rather than after Flower's first interval.
watch_tasks()
