"""`vamu-tasks` as an operator runs it, against the running worker stack."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import sqlalchemy as sa

from tests.conftest import Stack
from tests.support.cli import vamu as run_cli
from tests.support.services import free_port, temporary_database
from vamu_tasks.testing.answers import ideas_responder

pytestmark = pytest.mark.integration


@pytest.fixture
def s(stack: Stack, fake_llm, fake_api) -> Stack:
    fake_llm.set_responder(ideas_responder)
    return stack


def vamu(s: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_cli({**s.env, **(env or {})}, *args)


def test_db_upgrade_creates_the_tables_on_an_empty_database(s: Stack):
    with temporary_database("vamu_cli") as url:
        result = vamu(s, "db", "upgrade", env={"VAMU_DATABASE_URL": url})

        assert result.returncode == 0, result.stderr
        engine = sa.create_engine(url)
        tables = set(sa.inspect(engine).get_table_names())
        engine.dispose()
    assert {"ai_jobs", "notification_outbox", "alembic_version"} <= tables


def test_db_upgrade_on_a_missing_database_says_so_in_one_line_naming_the_fix(s: Stack):
    name = f"vamu_missing_{uuid.uuid4().hex[:8]}"
    server = sa.make_url(s.env["VAMU_DATABASE_URL"])
    url = server.set(database=name, password="pw-never-printed")

    result = vamu(s, "db", "upgrade",
                  env={"VAMU_DATABASE_URL": url.render_as_string(hide_password=False)})

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f'vamu-tasks: database "{name}" does not exist on {server.host}:{server.port or 5432}; '
        f"create it with: createdb -h {server.host} -U {server.username} {name}"
    ]
    assert "pw-never-printed" not in result.stdout + result.stderr


def test_db_upgrade_without_a_server_says_so_in_one_line_without_the_password(s: Stack):
    url = sa.make_url(s.env["VAMU_DATABASE_URL"]).set(port=free_port(), password="pw-secret")

    result = vamu(s, "db", "upgrade",
                  env={"VAMU_DATABASE_URL": url.render_as_string(hide_password=False)})

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"vamu-tasks: cannot connect to {url.render_as_string()}: ")
    assert "pw-secret" not in result.stdout + result.stderr


def test_enqueue_with_wait_prints_the_ideas_and_jobs_show_prints_the_row(s: Stack):
    result = vamu(s, "enqueue", "inspiration", "--user-id", "u-ada", "--count", "2",
                  "--hint", "outdoors", "--wait", "--timeout", "30")

    assert result.returncode == 0, result.stderr
    first_line, rest = result.stdout.split("\n", 1)
    job_id = json.loads(first_line)["jobId"]
    assert len(json.loads(rest)["ideas"]) == 2
    shown = vamu(s, "jobs", "show", job_id)
    row = json.loads(shown.stdout)
    assert (row["status"], row["source"], row["attempts"]) == ("succeeded", "cli", 1)
    assert row["request"] == {"userId": "u-ada", "count": 2, "hint": "outdoors"}


def test_enqueue_with_wait_exits_1_and_names_the_error_kind_when_the_job_fails(s: Stack):
    result = vamu(s, "enqueue", "inspiration", "--user-id", "u-ghost", "--wait", "--timeout", "30")

    assert result.returncode == 1
    assert "failed: user_not_found" in result.stderr


def test_enqueue_refuses_invalid_input_without_creating_a_job(s: Stack):
    before = len(s.llm.requests)
    result = vamu(s, "enqueue", "inspiration", "--user-id", "u-ada", "--count", "11")

    assert result.returncode == 1
    assert "invalid_job: count: Input should be less than or equal to 10" in result.stderr
    assert len(s.llm.requests) == before


def test_jobs_show_says_when_a_job_does_not_exist(s: Stack):
    missing = uuid.uuid4()
    result = vamu(s, "jobs", "show", str(missing))

    assert result.returncode == 1
    assert f"Job {missing} does not exist" in result.stderr


def test_enqueue_chatbot_with_wait_prints_the_reply_as_it_streams(s: Stack):
    from vamu_tasks.testing.fake_llm import Text

    s.llm.set_responder(None)
    s.llm.push(Text("Jazz at the Roundhouse on Friday, then tapas nearby.", chunk_size=6))

    result = vamu(s, "enqueue", "chatbot", "--user-id", "u-ada", "--conversation-id",
                  f"cli-{uuid.uuid4().hex[:8]}", "--message", "Plan my Friday?", "--wait",
                  "--timeout", "30")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "Jazz at the Roundhouse on Friday, then tapas nearby."
    assert json.loads("\n".join(lines[2:]))["reply"] == lines[1]


def test_enqueue_agent_with_wait_prints_the_answer_and_proposals(s: Stack):
    from vamu_tasks.testing.fake_llm import Text, ToolCall

    s.llm.set_responder(None)
    s.llm.push(ToolCall("propose_rsvp", {"eventId": "evt-ldn-winter-jazz"}), Text("Done."))

    result = vamu(s, "enqueue", "agent", "--user-id", "u-ada", "--goal", "book jazz",
                  "--wait", "--timeout", "30")

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.split("\n", 1)[1])
    assert answer == {"answer": "Done.", "steps": 3, "proposals": [
        {"action": "rsvp", "arguments": {"eventId": "evt-ldn-winter-jazz"}}]}
