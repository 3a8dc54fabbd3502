"""PNG plots of one bench run: `python bench/plots.py bench/results/<timestamp>.json [OUTDIR]`.

run.py calls `make_plots` after each run. Each plot is skipped when its scenarios did not run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"vamu": "#1f77b4", "bullmq-python": "#ff7f0e", "celery-defaults": "#2ca02c"}
NAMES = {"vamu": "vamu-tasks", "bullmq-python": "(a) Python bullmq Worker",
         "celery-defaults": "(b) Celery defaults"}


def _save(fig: Any, outdir: Path, stamp: str, name: str, out: list[Path]) -> None:
    path = outdir / f"{stamp}-{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    out.append(path)


def throughput(results: dict[str, Any], outdir: Path, stamp: str, out: list[Path]) -> None:
    sc = results["scenarios"]
    groups = [("zero_capacity", "LLM 0 s\nsaturated (64 in flight)"),
              ("zero_open", "LLM 0 s\nopen loop, target rate"),
              ("zero_sustain", "LLM 0 s\nopen loop, half of capacity"),
              ("lat1", "LLM 1 s\n200 in flight"), ("lat5", "LLM 5 s\n200 in flight")]
    groups = [(g, label) for g, label in groups if any(k.startswith(g + "/") for k in sc)]
    if not groups:
        return
    systems = ["vamu", "bullmq-python", "celery-defaults"]
    fig, ax = plt.subplots(figsize=(10.5, 5))
    width = 0.26
    for i, system in enumerate(systems):
        xs, ys = [], []
        for j, (g, _) in enumerate(groups):
            s = sc.get(f"{g}/{system}")
            if s:
                xs.append(j + (i - 1) * width)
                ys.append(max(s["throughput"]["jobs_per_s"], 0.01))
        bars = ax.bar(xs, ys, width, label=NAMES[system], color=COLORS[system])
        ax.bar_label(bars, labels=[f"{y:.3g}" for y in ys], fontsize=7, padding=1)
    for j, (g, _) in enumerate(groups):
        s = sc.get(f"{g}/vamu")
        if s and s["params"]["llmLatencyS"] > 0:
            ideal = s["params"]["inFlight"] / s["params"]["llmLatencyS"]
            ax.hlines(ideal, j - 0.42, j + 0.42, colors="k", linestyles="dashed")
            ax.text(j + 0.42, ideal, f" ideal {ideal:g}", va="center", fontsize=7)
        elif s and s["params"]["mode"] == "open" and g == "zero_open":
            rate = s["params"]["rate"]
            ax.hlines(rate, j - 0.42, j + 0.42, colors="r", linestyles="dotted")
            ax.text(j + 0.42, rate, f" offered {rate:g}", va="center", fontsize=7, color="r")
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)), [label for _, label in groups])
    ax.set_ylabel("jobs/s completed (Socket.IO event received), log scale")
    ax.set_title("Throughput, end to end, same services, one run")
    ax.legend(fontsize=8, loc="lower left")
    _save(fig, outdir, stamp, "throughput", out)


STAGES = ["bridge_pickup", "bridge_accept", "queue_wait", "bridge_hop", "db_start",
          "context_fetch", "llm", "db_write", "notify_task_hop", "socketio_relay",
          "notification", "end_to_end"]


def stages(results: dict[str, Any], outdir: Path, stamp: str, out: list[Path]) -> None:
    sc = results["scenarios"]
    panels = [(k, sc[k]) for k in ("zero_sustain/vamu", "zero_sustain/bullmq-python",
                                   "hop/vamu", "lat1/vamu") if k in sc]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 5), sharey=True)
    axes = axes if len(panels) > 1 else [axes]
    # One list of rows for every panel (they share the y axis); a stage a system does not
    # have (the baseline has no bridge) is left empty.
    names = [st for st in STAGES if any(s["latency_ms"].get(st) for _, s in panels)]
    nan = float("nan")
    for ax, (key, s) in zip(axes, panels, strict=True):
        lat = s["latency_ms"]
        p50 = [lat[st]["p50"] if lat.get(st) else nan for st in names]
        p99 = [lat[st]["p99"] if lat.get(st) else nan for st in names]
        y = range(len(names))
        ax.barh([i + 0.2 for i in y], p99, 0.4, label="p99", color="#d62728")
        ax.barh([i - 0.2 for i in y], p50, 0.4, label="p50", color="#1f77b4")
        ax.set_yticks(list(y), names)
        ax.set_xscale("log")
        ax.invert_yaxis()
        rate = s["throughput"]["jobs_per_s"]
        ax.set_title(f"{key}\n{rate:g} jobs/s", fontsize=9)
        ax.set_xlabel("ms (log)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Per-stage latency (p50 and p99)")
    _save(fig, outdir, stamp, "stages", out)


def latency_cdf(results: dict[str, Any], outdir: Path, stamp: str, out: list[Path]) -> None:
    sc = results["scenarios"]
    keys = [k for k in ("zero_sustain/vamu", "zero_sustain/bullmq-python", "zero_open/vamu",
                        "zero_open/bullmq-python", "hop/vamu")
            if k in sc and sc[k]["e2e_quantiles_ms"]]
    if not keys:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in keys:
        q = sc[key]["e2e_quantiles_ms"]
        system = key.split("/")[1]
        rate = sc[key]["throughput"]["jobs_per_s"]
        style = {"zero_sustain": "-", "zero_open": ":"}.get(key.split("/")[0], "--")
        offered = sc[key]["params"]["rate"]
        ax.plot(q, [i / 2 for i in range(len(q))], style, color=COLORS.get(system),
                label=f"{key}: {offered:g}/s offered, {rate:g}/s done")
    ax.axvline(25, color="grey", linestyle=":", label="25 ms")
    ax.set_xscale("log")
    ax.set_xlabel("Queue.add → completion event at the Socket.IO client (ms, log)")
    ax.set_ylabel("% of jobs")
    ax.set_title("End-to-end job time, CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, outdir, stamp, "latency-cdf", out)


def timeline(results: dict[str, Any], outdir: Path, stamp: str, out: list[Path]) -> None:
    sc = results["scenarios"]
    keys = [k for k in ("zero_open/vamu", "zero_open/bullmq-python") if k in sc]
    if not keys:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    for key in keys:
        tl = sc[key]["timeline"]
        system = key.split("/")[1]
        ax.plot(tl["done_per_s"], color=COLORS[system], label=f"{NAMES[system]}: completed/s")
        ax.plot(tl["adds_per_s"], color=COLORS[system], linestyle=":", alpha=0.7,
                label=f"{NAMES[system]}: added/s")
        ax.axvspan(tl["t0_s"], tl["t1_s"], color=COLORS[system], alpha=0.06)
    ax.set_xlabel("seconds since the driver started")
    ax.set_ylabel("jobs per second")
    ax.set_title("Zero-latency open loop: offered vs completed (shaded: measured window)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, outdir, stamp, "timeline", out)


def scaling(results: dict[str, Any], outdir: Path, stamp: str, out: list[Path]) -> None:
    sc = results["scenarios"]
    points = sorted((int(k.split("/")[1]), v) for k, v in sc.items() if k.startswith("scaling/"))
    if not points:
        return
    cpus = results.get("meta", {}).get("machine", {}).get("cpus") or 2
    fig, ax = plt.subplots(figsize=(7, 4.4))
    xs = [n for n, _ in points]
    ys = [v["throughput"]["jobs_per_s"] for _, v in points]
    ax.plot(xs, ys, "o-", color=COLORS["vamu"], label="measured jobs/s")
    for x, y in zip(xs, ys, strict=True):
        ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center")
    # What the same CPU cost per job gives when the bench has every core to itself: the
    # machine's other users (other_s) move the measured line, not this one.
    proj = []
    for _, v in points:
        c = v.get("cpu_ms_per_job") or {}
        total = sum(c.get(k, 0) for k in ("system_under_test", "postgres_and_redis",
                                          "fakes_and_driver"))
        proj.append(cpus * 1000 / total if total else float("nan"))
    ax.plot(xs, proj, "o--", color=COLORS["vamu"], alpha=0.5,
            label=f"{cpus} cores x 1000 / CPU ms per job (all processes)")
    ax.set_xticks(xs)
    ax.set_xlabel("LLM worker processes (250 threads each) + 1 notify worker + 1 bridge")
    ax.set_ylabel("jobs/s (zero-latency LLM, 64 in flight)")
    ax.set_ylim(0, max([*ys, *[p for p in proj if p == p]]) * 1.3)
    ax2 = ax.twinx()
    other = [100 * (v.get("cpu") or {}).get("other_s", 0)
             / max(1e-9, cpus * (v.get("cpu") or {}).get("wall_s", 1)) for _, v in points]
    ax2.bar(xs, other, width=0.25, color="grey", alpha=0.25,
            label="machine CPU used by other processes %")
    ax2.set_ylim(0, 100)
    ax2.set_ylabel("% of the 2 cores used by the machine's other users")
    for x, (_, v) in zip(xs, points, strict=True):
        s = (v.get("cpu_ms_per_job") or {}).get("system_under_test")
        if s:
            ax.annotate(f"{s:.1f} ms CPU/job\n(vamu processes)", (x, 0),
                        textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="upper left")
    ax.set_title("Scaling on 2 cores: more worker processes, same CPU")
    _save(fig, outdir, stamp, "scaling", out)


def profile(results: dict[str, Any], outdir: Path, stamp: str, out: list[Path]) -> None:
    prof = results.get("profile") or {}
    panels = [(name, p) for name, p in prof.items() if p]
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 2, figsize=(13, 3.4 * len(panels)))
    axes = axes if len(panels) > 1 else [axes]
    for (ax, ax2), (name, p) in zip(axes, panels, strict=True):
        focus = p.get("focus_pct", [])[:14]
        ax.barh([t[0] for t in focus], [t[1] for t in focus], color=COLORS["vamu"])
        ax.invert_yaxis()
        ax.set_xlabel("% of samples holding the GIL (inclusive)")
        ax.set_title(f"{name}: operations ({p['samples']} samples, py-spy --gil)", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        top = p["leaf_package_pct"][:10]
        ax2.barh([t[0] for t in top], [t[1] for t in top], color="#9467bd")
        ax2.invert_yaxis()
        ax2.set_xlabel("% of samples (package of the innermost frame)")
        ax2.set_title(f"{name}: by library", fontsize=9)
        ax2.tick_params(axis="y", labelsize=7)
    _save(fig, outdir, stamp, "profile", out)


def make_plots(results: dict[str, Any], outdir: Path, stamp: str) -> list[Path]:
    out: list[Path] = []
    for plot in (throughput, stages, latency_cdf, timeline, scaling, profile):
        plot(results, outdir, stamp, out)
    return out


if __name__ == "__main__":
    source = Path(sys.argv[1])
    data = json.loads(source.read_text())
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else source.parent
    for png in make_plots(data, target, data["meta"]["timestamp"]):
        print(png)
