"""6. Long tasks: a task longer than the broker's visibility timeout never runs twice at once.

The Redis transport hands an unacknowledged message out again once it is older than
`VAMU_BROKER_VISIBILITY_TIMEOUT_S`, even while its worker still runs it. The job lease is what
must turn the copy away ("…; this delivery ends here"). Here the visibility timeout is 3 s and
the fake LLM takes 8 s to answer (`VAMU_LLM_TIMEOUT_S` 20), so every job is handed out again at
least once while it runs. Counted: LLM requests per job (each request carries the job's token),
whether a second request came while the first was still unanswered, `attempts`, and the log
lines of copies turned away by the lease.
"""

from __future__ import annotations

import pytest

from tests.chaos.conftest import Rig, bullmq_counts, start_all

pytestmark = pytest.mark.timeout(180)

LONG_ENV = {
    "VAMU_BROKER_VISIBILITY_TIMEOUT_S": "3",
    "VAMU_LLM_TIMEOUT_S": "20",
}
LATENCY_S = 8.0


def run_long_jobs(rig: Rig, jobs: int, figures: dict) -> dict[str, int]:
    rig.llm.latency = LATENCY_S
    outcomes = rig.produce([rig.inspiration() for _ in range(jobs)], timeout_s=60).result()
    counts = rig.wait_jobs_end(jobs, timeout=60)
    requests = rig.llm_requests_by_token()
    per_job = {token: len(reqs) for token, reqs in requests.items()}
    overlapping = sum(
        1 for reqs in requests.values()
        if len(reqs) > 1 and reqs[1].received_at - reqs[0].received_at < LATENCY_S)
    figures.update({
        "jobs": jobs, **bullmq_counts(outcomes), "succeeded": counts["succeeded"],
        "llm_requests_per_job": sorted(per_job.values()),
        "jobs_run_twice_at_once": overlapping,
        "attempts_per_job": sorted(r.attempts for r in rig.jobs()),
    })
    return per_job


def lease_refusals(text: str) -> int:
    return text.count("this delivery ends here")


def test_a_copy_in_another_process_is_turned_away_by_the_lease(make_rig, figures):
    """Prefork with two children: two lease owners (host:pid of each child). With one job in
    flight, its copy can only go to the idle child, which must find the lease held."""
    rig = make_rig(**LONG_ENV)
    worker = rig.llm_worker("prefork", pool="prefork", concurrency=2)
    start_all(rig.bridge(), rig.notify_worker(), worker)
    per_job = run_long_jobs(rig, 1, figures)
    figures["lease_refusals_in_log"] = lease_refusals(worker.log_text())
    assert figures["succeeded"] == 1
    assert list(per_job.values()) == [1], per_job
    assert figures["lease_refusals_in_log"] >= 1


def test_a_task_longer_than_the_visibility_timeout_never_runs_twice_at_once(make_rig, figures):
    """One threads worker, as `python -m workers.llm` runs: exactly one LLM request per job,
    and the log shows the copies ended because of the lease."""
    rig = make_rig(**LONG_ENV)
    worker = rig.llm_worker("threads", pool="threads", concurrency=8)
    start_all(rig.bridge(), rig.notify_worker(), worker)
    per_job = run_long_jobs(rig, 4, figures)
    figures["lease_refusals_in_log"] = lease_refusals(worker.log_text())
    assert figures["succeeded"] == 4
    assert sorted(per_job.values()) == [1, 1, 1, 1], per_job
    assert figures["lease_refusals_in_log"] >= 4
