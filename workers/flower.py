"""`python -m workers.flower`: the Flower dashboard for the vamu_tasks app, behind a login.

Flower 2.2 puts `--basic-auth` on its UI and its API, but serves `/metrics` and `/healthcheck` to
anyone. This entry point:

- takes address, port and credentials from `Settings` (`VAMU_FLOWER_*`), not from the working
  directory or the command line (a password in argv would show in `ps`);
- refuses to start without `VAMU_FLOWER_PASSWORD`, unless `VAMU_FLOWER_INSECURE_LOCAL=1`, which
  then binds 127.0.0.1 whatever `VAMU_FLOWER_ADDRESS` says;
- puts `/metrics` behind the same basic auth as the UI (Prometheus sends it from its scrape
  config) and leaves `/healthcheck`, which only answers "OK", open for liveness probes.

`celery -A vamu_tasks flower` applies the same rules through the repository's `flowerconfig.py`,
but only when Flower finds that file (in the working directory, or with `--conf`); elsewhere it
would start with no login at all. That is why this module is the supported entry point.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import tornado.web
from flower.views.monitor import Metrics

from vamu_tasks.settings import Settings

METRICS_ROUTE = r"/metrics"
LOOPBACK = "127.0.0.1"
NO_PASSWORD = (
    "vamu-tasks: Flower will not start without a login. Set VAMU_FLOWER_PASSWORD "
    "(and VAMU_FLOWER_USER, default 'admin'); or, on a laptop only, VAMU_FLOWER_INSECURE_LOCAL=1 "
    "for a dashboard without a password that listens on 127.0.0.1."
)
# Flower options that would bypass the settings above; `python -m workers.flower` refuses them.
SETTINGS_ONLY = {
    "--address": "VAMU_FLOWER_ADDRESS",
    "--basic-auth": "VAMU_FLOWER_USER / VAMU_FLOWER_PASSWORD",
    "--basic_auth": "VAMU_FLOWER_USER / VAMU_FLOWER_PASSWORD",
    "--conf": "VAMU_FLOWER_*",
    "--unix-socket": "VAMU_FLOWER_ADDRESS",
    "--unix_socket": "VAMU_FLOWER_ADDRESS",
}


@dataclass(frozen=True)
class FlowerConfig:
    address: str
    port: int
    # "user:password" entries for Flower's --basic-auth; empty only in insecure local mode.
    basic_auth: tuple[str, ...]


def flower_config(settings: Settings) -> FlowerConfig:
    """Where Flower listens and who may log in; `SystemExit` when it would have no login."""
    if ":" in settings.flower_user:
        raise SystemExit("vamu-tasks: VAMU_FLOWER_USER must not contain ':'")
    password = settings.flower_password.get_secret_value() if settings.flower_password else ""
    basic_auth = (f"{settings.flower_user}:{password}",) if password else ()
    if settings.flower_insecure_local:
        # Explicitly local: with or without a password, only this machine can connect.
        return FlowerConfig(LOOPBACK, settings.flower_port, basic_auth)
    if not basic_auth:
        raise SystemExit(NO_PASSWORD)
    return FlowerConfig(settings.flower_address, settings.flower_port, basic_auth)


class AuthenticatedMetrics(Metrics):  # type: ignore[misc]  # flower has no type hints
    """Flower's `/metrics`, behind the login that guards its UI and API.

    `tornado.web.authenticated` reads `current_user`, and Flower's `get_current_user` answers a
    missing or wrong `Authorization: Basic` header with 401 (and `WWW-Authenticate`), exactly
    as on `/api/tasks`. Without basic auth configured (insecure local mode) it lets everyone in,
    as the rest of Flower does.
    """

    @tornado.web.authenticated
    async def get(self) -> None:
        await super().get()


def protect_metrics() -> None:
    """Serve `/metrics` with `AuthenticatedMetrics`; call it before Flower builds its app.

    Flower builds its routes from the module-level list `flower.urls.handlers` when its
    application object is created, so replacing that one entry is enough. Calling this twice
    is harmless. If the route is not where Flower 2.2 keeps it, refuse to go on rather than
    serve the metrics to anyone.
    """
    from flower import urls

    found = [
        i
        for i, handler in enumerate(urls.handlers)
        if isinstance(handler, tuple) and handler[0] == METRICS_ROUTE
    ]
    if len(found) != 1:
        raise SystemExit(
            "vamu-tasks: cannot find Flower's /metrics route to protect it; "
            "this Flower version is not supported (see workers/flower.py)"
        )
    urls.handlers[found[0]] = (METRICS_ROUTE, AuthenticatedMetrics)


def flower_argv(config: FlowerConfig, extra: list[str]) -> list[str]:
    for arg in extra:
        name = arg.split("=", 1)[0]
        if name in SETTINGS_ONLY:
            raise SystemExit(f"vamu-tasks: do not pass {name} to Flower; set {SETTINGS_ONLY[name]}")
    return [
        "flower",
        f"--address={config.address}",
        f"--port={config.port}",
        # An empty configuration file: a flowerconfig.py in the working directory must not
        # override the settings (Flower reads `flowerconfig.py` from there by default).
        f"--conf={os.devnull}",
        *extra,
    ]


def set_basic_auth(config: FlowerConfig) -> None:
    """Give Flower its credentials directly, not through argv where `ps` would show them."""
    import flower.options  # noqa: F401  (defines Flower's options on tornado's global parser)
    from tornado.options import options

    options.basic_auth = list(config.basic_auth)


def watch_tasks() -> None:
    """Ask the running workers for task events now.

    Workers send none until asked (VAMU_TASK_EVENTS is off by default). Flower asks every
    `events_enable_interval` (5 s), which also covers workers that start later, but only from
    the end of its first interval: tasks run before it would be missing from its list.
    """
    from vamu_tasks.app import app

    try:
        app.control.enable_events()
    except Exception as exc:  # the broker is away: Flower's own timer asks again
        print(f"vamu-tasks: could not ask the workers for task events yet: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    config = flower_config(Settings())
    args = flower_argv(config, list(sys.argv[1:] if argv is None else argv))
    protect_metrics()
    set_basic_auth(config)
    from vamu_tasks.app import app

    watch_tasks()
    app.start(args)


if __name__ == "__main__":
    main()
