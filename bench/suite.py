"""The plan of a run (full or quick) and the suite that runs its scenarios in turn."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from analysis import summarize_profile
from harness import DEFAULT_QUOTA_PER_HOUR, TUNED_SETTINGS, USERS, RssSampler
from scenarios import PRIME_S, Bench, calibrate
from stack import Stack

# ----------------------------------------------------------------------------- plan


@dataclass
class Plan:
    zero_cap: dict[str, Any]
    zero_open: dict[str, Any]
    zero_sustain: dict[str, Any]  # open loop at half the measured capacity
    hop: dict[str, Any]
    lat1: dict[str, Any]
    lat5: dict[str, Any] | None
    chat: dict[str, Any]
    scaling: list[int]
    scale: dict[str, Any]
    profile: dict[str, Any]
    calibrate_s: float
    baseline_latency: bool


FULL = Plan(
    zero_cap=dict(mode="closed", in_flight=64, warmup=3, duration=15, drain=20),
    # Stops adding once 2000 jobs are unfinished: a system that cannot keep up shows it within
    # seconds, and waiting for a backlog of thousands would only measure the backlog.
    zero_open=dict(mode="open", rate=400, warmup=1, duration=60, drain=10, max_backlog=2000),
    zero_sustain=dict(mode="open", warmup=2, duration=20, drain=20),
    hop=dict(mode="open", rate=100, warmup=3, duration=20, drain=20),
    # Issue 16's goal 4: 1 s with 100 jobs in flight, 5 s with 200. The driver adds all of them
    # at once, so they come back together and the loop starts in bunches that spread out over
    # a few rounds (docs/performance.md, goal 4b): five rounds of warm-up, then the measure.
    lat1=dict(mode="closed", in_flight=100, warmup=5, duration=30, drain=15, latency=1.0),
    lat5=dict(mode="closed", in_flight=200, warmup=25, duration=40, drain=15, latency=5.0),
    # A rate the stack carries with CPU to spare: the target is about streaming latency.
    chat=dict(kind="chat", mode="open", rate=4, warmup=2, duration=20, drain=15),
    scaling=[1, 2, 4],
    scale=dict(mode="closed", in_flight=64, warmup=3, duration=15, drain=20),
    profile=dict(mode="closed", in_flight=64, warmup=3, duration=15, drain=20),
    calibrate_s=5,
    baseline_latency=True,
)
QUICK = Plan(
    zero_cap=dict(mode="closed", in_flight=16, warmup=0.3, duration=1.5, drain=10),
    zero_open=dict(mode="open", rate=40, warmup=0.3, duration=1.5, drain=10, max_backlog=2000),
    zero_sustain=dict(mode="open", warmup=0.3, duration=1, drain=10),
    hop=dict(mode="open", rate=20, warmup=0.3, duration=1, drain=10),
    lat1=dict(mode="closed", in_flight=20, warmup=0.3, duration=1.5, drain=5, latency=0.2),
    lat5=None,
    chat=dict(kind="chat", mode="open", rate=5, warmup=0.3, duration=1, drain=10),
    scaling=[1, 2],
    scale=dict(mode="closed", in_flight=16, warmup=0.3, duration=1.5, drain=10),
    profile=dict(mode="closed", in_flight=16, warmup=0.3, duration=3, drain=10),
    calibrate_s=1,
    baseline_latency=False,
)
SCENARIO_GROUPS = ("calibrate", "zero", "hop", "latency", "chat", "scaling", "whatif",
                   "profile")
# What --quick leaves out unless --only names it (the profile needs --no-profile unset too).
NOT_IN_QUICK = ("whatif",)

# Far above any stack measured here (baseline (a) carries about 280 jobs/s): the rate at which
# the quota check below counts a closed loop's jobs.
CEILING_JOBS_PER_S = 1000.0


def worst_case_jobs(plan: Plan, quick: bool) -> int:
    """An upper bound of the jobs one vamu stack takes in a run of this plan: its priming and
    every scenario it runs, closed loops at CEILING_JOBS_PER_S (or in_flight / LLM latency)."""

    def bound(p: dict[str, Any]) -> float:
        seconds = p["warmup"] + p["duration"]
        if p["mode"] == "open":
            return (p.get("rate") or CEILING_JOBS_PER_S / 2) * seconds
        per_s = CEILING_JOBS_PER_S
        if p.get("latency"):
            per_s = min(per_s, p["in_flight"] / p["latency"])
        return p["in_flight"] + per_s * seconds

    prime = dict(mode="closed", in_flight=8, warmup=0, duration=PRIME_S["quick" if quick
                                                                          else "full"])
    scenarios = [prime, plan.zero_cap, plan.zero_open, plan.zero_sustain, plan.hop, plan.lat1,
                 plan.chat] + ([plan.lat5] if plan.lat5 else [])
    return math.ceil(sum(bound(p) for p in scenarios))


def check_quota_headroom(plan: Plan, quick: bool) -> dict[str, int]:
    """The default per-user quota must refuse none of the bench's jobs (its cost is measured,
    not skipped): round robin over USERS, no user may reach the limit in a run."""
    out: dict[str, int] = {"users": len(USERS), "quota_per_hour": DEFAULT_QUOTA_PER_HOUR}
    # This run's plan, and a full run's whatever this run is (the figures come from a full run).
    for name, p, q in (("this_run", plan, quick), ("full_run", FULL, False)):
        worst = worst_case_jobs(p, q)
        per_user = math.ceil(worst / len(USERS))
        if per_user > DEFAULT_QUOTA_PER_HOUR:
            raise RuntimeError(
                f"a vamu stack may take {worst} jobs in a {name.replace('_', ' ')}: "
                f"{per_user} per user over {len(USERS)} users, above the default quota "
                f"({DEFAULT_QUOTA_PER_HOUR}/hour)")
        out[f"worst_case_jobs_per_stack_{name}"] = worst
        out[f"worst_case_jobs_per_user_{name}"] = per_user
    return out


class Suite:
    """Which scenarios run on which system, in what order."""

    def __init__(self, bench: Bench, plan: Plan, only: set[str], profile: bool) -> None:
        self.bench = bench
        self.plan = plan
        self.only = only
        self.profile = profile
        self.results: dict[str, Any] = {"scenarios": {}, "memory_over_run": {},
                                        "quota": check_quota_headroom(plan, bench.quick)}
        self.sc: dict[str, Any] = self.results["scenarios"]
        lat = [("lat1", plan.lat1)] + ([("lat5", plan.lat5)] if plan.lat5 else [])
        self.latency_plans: list[tuple[str, dict[str, Any]]] = lat

    @contextlib.contextmanager
    def stack(self, kind: str, memory_key: str = "", **kw: Any) -> Iterator[Stack]:
        """A started and primed stack; with `memory_key`, the peak RSS of its processes over
        its whole life (priming, every scenario, restarts) goes to results["memory_over_run"]."""
        s = Stack(self.bench, kind, **kw)
        sampler: RssSampler | None = None
        try:
            s.start()
            if memory_key:
                # The live list: a restart's new processes are sampled too.
                sampler = RssSampler(s.procs).start()
            self.bench.prime(s)
            yield s
        finally:
            if sampler is not None:
                self.results["memory_over_run"][memory_key] = {"label": s.label,
                                                               **sampler.stop()}
            s.stop()

    def run(self) -> dict[str, Any]:
        if "calibrate" in self.only:
            self.results["calibration"] = calibrate(self.bench, self.plan.calibrate_s)
        if self.only & {"zero", "hop", "latency", "chat", "scaling"}:
            self.vamu()
        if self.only & {"zero", "latency"}:
            self.baseline_a()
            self.baseline_b()
        if "scaling" in self.only:
            self.scaling()
        if "whatif" in self.only:
            self.whatif()
        if self.profile and "profile" in self.only:
            self.profile_run()
        return self.results

    def vamu(self) -> None:
        b, p, only, sc = self.bench, self.plan, self.only, self.sc
        with self.stack("vamu", memory_key="vamu", workers=1) as s:
            if only & {"zero", "scaling"}:
                sc["zero_capacity/vamu"] = b.scenario(s, "zero_capacity-vamu", **p.zero_cap)
            if "zero" in only:
                sc["zero_open/vamu"] = b.scenario(s, "zero_open-vamu", **p.zero_open)
                self.sustain(s, "vamu")
            if "hop" in only:
                sc["hop/vamu"] = b.scenario(s, "hop-vamu", **p.hop)
            if "latency" in only:
                for key, lp in self.latency_plans:
                    sc[f"{key}/vamu"] = b.scenario(s, f"{key}-vamu", **lp)
            if "chat" in only:
                sc["chat/vamu"] = b.scenario(s, "chat-vamu", **p.chat)

    def sustain(self, s: Stack, system: str) -> None:
        """Open loop at half the capacity just measured: latency at a load it can carry."""
        cap = self.sc.get(f"zero_capacity/{system}", {}).get("throughput", {}).get("jobs_per_s")
        if cap:
            rate = max(5, round(0.5 * cap))
            self.sc[f"zero_sustain/{system}"] = self.bench.scenario(
                s, f"zero_sustain-{system}", rate=rate, **self.plan.zero_sustain)

    def baseline_a(self) -> None:
        b, p, sc = self.bench, self.plan, self.sc
        with self.stack("bullmq-python", memory_key="bullmq-python") as s:
            if "zero" in self.only:
                sc["zero_capacity/bullmq-python"] = b.scenario(s, "zero_capacity-a", **p.zero_cap)
                sc["zero_open/bullmq-python"] = b.scenario(s, "zero_open-a", **p.zero_open)
                self.sustain(s, "bullmq-python")
            if "latency" in self.only and p.baseline_latency:
                for key, lp in self.latency_plans:
                    sc[f"{key}/bullmq-python"] = b.scenario(s, f"{key}-a", **lp)

    def baseline_b(self) -> None:
        b, p, sc = self.bench, self.plan, self.sc
        with self.stack("celery-defaults", memory_key="celery-defaults") as s:
            if "zero" in self.only:
                sc["zero_capacity/celery-defaults"] = b.scenario(
                    s, "zero_capacity-b", **p.zero_cap)
            if "latency" in self.only:
                for key, lp in self.latency_plans:
                    # Two processes for 200 jobs in flight: the queue cannot drain in any
                    # reasonable time, so the window is shorter and the stack is restarted.
                    short = {**lp, "warmup": min(lp["warmup"], 6),
                             "duration": min(lp["duration"], 20), "drain": 0}
                    sc[f"{key}/celery-defaults"] = b.scenario(s, f"{key}-b", **short)

    def scaling(self) -> None:
        for n in self.plan.scaling:
            if n == 1 and "zero_capacity/vamu" in self.sc:
                self.sc["scaling/1"] = self.sc["zero_capacity/vamu"]
                continue
            # PostgreSQL allows 100 connections: keep the LLM workers' pools ~20 in all.
            with self.stack("vamu", workers=n, pool_size=max(3, -(-10 // n))) as s:
                self.sc[f"scaling/{n}"] = self.bench.scenario(s, f"scaling-{n}", **self.plan.scale)

    def whatif(self) -> None:
        """The default stack with settings changed, at the same offered load as
        zero_sustain/vamu (and, for the tuned settings, at saturation too)."""
        base = self.sc.get("zero_sustain/vamu")
        if not base:
            return
        b, p = self.bench, self.plan
        sustain = {**p.zero_sustain, "rate": base["params"]["rate"]}
        # The settings the bench ran vamu with before issue 16: quota off (the bridge skips its
        # lookup before the insert), 250 LLM threads, notifications over Socket.IO only.
        tuned = ", ".join(f"{k.removeprefix('VAMU_')}={v}" for k, v in TUNED_SETTINGS.items())
        with self.stack("vamu", memory_key="whatif_tuned", workers=1, env=dict(TUNED_SETTINGS),
                        what_if=f"tuned ({tuned})") as s:
            self.sc["whatif_tuned_capacity/vamu"] = b.scenario(s, "whatif-tuned-capacity",
                                                               **p.zero_cap)
            self.sc["whatif_tuned_sustain/vamu"] = b.scenario(s, "whatif-tuned-sustain",
                                                              **sustain)
        # VAMU_BRIDGE_CONCURRENCY (and the sync queue's) back at the old default, 50. While one
        # slot of a bullmq-python Worker blocks waiting for a job, every other idle slot runs
        # the moveToActive script and comes back empty, so at a low rate each job cost the
        # bridge about a hundred Lua scripts (see docs/performance.md, "Profile").
        env = {"VAMU_BRIDGE_CONCURRENCY": "50", "VAMU_BRIDGE_SYNC_CONCURRENCY": "50"}
        with self.stack("vamu", workers=1, env=env,
                        what_if="VAMU_BRIDGE_CONCURRENCY=50") as s:
            self.sc["whatif_bridge50/vamu"] = b.scenario(s, "whatif-bridge50", **sustain)

    def profile_run(self) -> None:
        with self.stack("vamu", workers=1, profile=True) as s:
            self.sc["profile_run/vamu"] = self.bench.scenario(s, "profile-vamu",
                                                              **self.plan.profile)
        self.results["profile"] = {name: summarize_profile(path)
                                   for name, path in s.profiles.items()}
