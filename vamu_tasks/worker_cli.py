"""Starts a Celery worker through Celery's `worker` command alone, not the whole `celery` CLI.

`app.worker_main(argv)` parses argv with the `celery` click group, and importing that group
imports every subcommand and plugin: the `amqp` shell (click_repl, prompt_toolkit, pygments) and
whatever is registered under the `celery.commands` entry point (Flower, with tornado). That is
about 11 MB of RSS in each worker process, none of it ever run (bench/memory.py).

Our entry points build an argv that starts with `worker`, and the group's own options (`-A`,
`--broker`, `--workdir`, ...) cannot follow it, so the `worker` command alone parses that argv
exactly as the group would hand it over. The group's callback does three things for a
`worker` invocation, all done here: the `CLIContext` (with `NO_COLOR` read as the group reads
it), the app's user options for `worker`, and the preload options (this app declares none; with
some, this falls back to `worker_main`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery


def run_worker(app: Celery, argv: list[str]) -> int | None:
    """`app.worker_main(argv)` without importing the rest of Celery's CLI; the exit code, if
    the worker command gave one (as `app.start` returns it)."""
    if argv[:1] != ["worker"]:
        raise ValueError("run_worker: argv must start with 'worker'")
    if app.user_options.get("preload"):
        # Preload options need the group's callback: take the general path.
        app.worker_main(argv)
        return None
    import click
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker

    for option in app.user_options.get("worker", ()):
        if option not in worker.params:
            worker.params.append(option)
    no_color = os.environ.get("NO_COLOR")
    obj = CLIContext(
        app=app,
        # The group's `--no-color` flag reads NO_COLOR with click's boolean rules.
        no_color=click.BOOL.convert(no_color, None, None) if no_color else False,
        workdir=None,
        quiet=False,
    )
    try:
        worker.main(args=argv[1:], prog_name="celery worker", obj=obj, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return None
