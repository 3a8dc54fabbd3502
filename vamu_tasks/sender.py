"""`CelerySender`: sends a feature's task for a job id, showing only ids to Flower.

Not through `app.send_task`, whose general work costs as much as the publish itself (the
bridge sends one message per job: bench/send_path.py): the message is built by Celery's own
`app.amqp.create_task_message` and published by `app.amqp.send_task_message`, the two calls
`send_task` makes, with the same arguments, so the message, the `before_task_publish` and
`after_task_publish` signals (OpenTelemetry's), the `task-sent` event, the declaration of the
queue and the publish retry policy are Celery's. What is left out is what a fixed task on a
fixed queue does not need each time: the routing lookup (a feature's queue is its route), the
registry lookup and the result object. tests/integration/test_sender.py checks the message
against `send_task`'s and through a real worker.
"""

from __future__ import annotations

import os
import threading
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.utils.nodenames import anon_nodename

from vamu_tasks.features import FeatureSpec


class _Held:
    """One thread's producer, kept between sends, and each queue bound to its channel."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        # Both name this process: a forked child (a prefork pool) takes a producer of its own.
        self.pid = os.getpid()
        # The message's `origin`, which send_task computes again at every send.
        self.origin = anon_nodename()
        self.channel: Any = None
        self.queues: dict[str, Any] = {}
        # Back to the pool once: when called, or when this thread ends or its sender is dropped.
        self.release = weakref.finalize(self, producer.release)
        self.release.atexit = False

    def queue(self, app: Celery, name: str) -> Any:
        channel = self.producer.channel
        if channel is not self.channel:  # first use, or the producer reconnected
            self.channel, self.queues = channel, {}
        queue = self.queues.get(name)
        if queue is None:
            # Bound once: kombu's declaration check copies an unbound queue at every publish.
            queue = self.queues[name] = app.amqp.queues[name].bind(channel)
        return queue


class CelerySender:
    def __init__(self, app: Celery) -> None:
        self._app = app
        # kombu producers are not thread-safe, and the bridge sends from a pool of threads.
        self._local = threading.local()
        self._sent_event: bool | None = None

    def _held(self) -> _Held:
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None and held.pid != os.getpid():
            held.release.detach()  # the parent's, which the parent gives back
            held = None
        if held is None:
            # From Celery's producer pool (broker_pool_limit), as send_task takes one, but
            # kept: the pool's acquire and release cost a fifth of a send. It goes back to the
            # pool when this thread ends or this sender is dropped.
            held = self._local.held = _Held(self._app.producer_pool.acquire(block=True))
        return held

    def _drop(self) -> None:
        held: _Held | None = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            # Back to the pool, which gives it a fresh channel before handing it out again, as
            # after any error in send_task.
            held.release()

    def send(
        self,
        spec: FeatureSpec,
        job_id: uuid.UUID,
        headers: Mapping[str, str] | None = None,
        *,
        provider: str | None = None,
        model: str | None = None,
    ) -> str:
        ref: dict[str, str] = {"job_id": str(job_id)}
        if provider:
            ref["provider"] = provider
        if model:
            ref["model"] = model
        app = self._app
        # The Celery task id is the job id: `vamu-tasks cancel` revokes it by the job's id.
        task_id = str(job_id)
        if self._sent_event is None:
            self._sent_event = bool(app.conf.task_send_sent_event)
        # Sent from inside a task (the batch tier's tick): its children, as send_task records.
        parent = app.current_worker_task
        root_id = parent_id = None
        if parent:
            root_id = parent.request.root_id or parent.request.id
            parent_id = parent.request.id
        reprs = {
            # What Flower and the logs show: the job id and the feature, never user text.
            "argsrepr": "()",
            # The feature first: Flower's task list cuts long kwargs off at a fixed width.
            "kwargsrepr": f"{{'feature': '{spec.feature}', 'job_id': '{job_id}'}}",
        }
        held = self._held()
        message = app.amqp.create_task_message(
            task_id,
            spec.task_name,
            (),
            {"ref": ref},
            reply_to=app.thread_oid,
            create_sent_event=self._sent_event,
            root_id=root_id,
            parent_id=parent_id,
            # What send_task sends for a task this process has not imported: the worker's task
            # decides (task_ignore_result).
            ignore_result=None,
            origin=held.origin,
            **reprs,
        )
        producer = held.producer
        try:
            queue = held.queue(app, spec.queue)
            # As send_task: a transport's own errors surface as kombu's.
            with producer.connection._reraise_as_library_errors():
                # The reprs again: send_task passes its options on, so they are message
                # properties too.
                app.amqp.send_task_message(
                    producer,
                    spec.task_name,
                    message,
                    queue=queue,
                    headers=dict(headers or {}),
                    **reprs,
                )
        except BaseException:
            self._drop()
            raise
        if parent:
            parent.add_trail(app.AsyncResult(task_id))
        return task_id
