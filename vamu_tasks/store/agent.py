"""`SqlAlchemyAgentStore`: an agent run's steps, each committed with its `agent-step` event."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Literal, cast

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from vamu_tasks.domain import AgentStep, Notification
from vamu_tasks.store.models import AgentStepRow, NotificationOutbox
from vamu_tasks.store.repository import Database, outbox_row, utcnow

Kind = Literal["model", "tool"]


class SqlAlchemyAgentStore:
    def __init__(self, db: Database, *, transports: Sequence[str] = ("log",)) -> None:
        self._session = db.transaction
        self._transports = list(transports)

    def steps(self, job_id: uuid.UUID) -> list[AgentStep]:
        with self._session() as session:
            rows = session.scalars(
                select(AgentStepRow)
                .where(AgentStepRow.job_id == job_id)
                .order_by(AgentStepRow.step)
            ).all()
            return [
                AgentStep(
                    row.job_id,
                    row.step,
                    cast(Kind, row.kind),
                    row.data,
                    row.input_tokens,
                    row.output_tokens,
                    row.cost_usd,
                )
                for row in rows
            ]

    def add_step(self, step: AgentStep, notifications: Sequence[Notification]) -> list[uuid.UUID]:
        try:
            with self._session() as session:
                session.add(
                    AgentStepRow(
                        id=uuid.uuid4(),
                        job_id=step.job_id,
                        step=step.step,
                        kind=step.kind,
                        data=dict(step.data),
                        input_tokens=step.input_tokens,
                        output_tokens=step.output_tokens,
                        cost_usd=step.cost_usd,
                        created_at=utcnow(),
                    )
                )
                session.flush()
                if self._transports:
                    for note in notifications:
                        session.add(outbox_row(note, self._transports))
        except IntegrityError:
            pass  # committed before, by an attempt that died: keep the first version
        ids = [note.id for note in notifications]
        with self._session() as session:
            pending = session.scalars(
                select(NotificationOutbox.id).where(
                    NotificationOutbox.id.in_(ids), NotificationOutbox.delivered_at.is_(None)
                )
            )
            return list(pending)
