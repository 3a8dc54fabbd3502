"""Measures a fake server alone: as many requests as `--threads` clients can send in `--seconds`.

`python bench/loadgen.py --url URL --kind llm|api [--threads 8] [--seconds 5] [--token T]`
prints one JSON line `{requests, seconds, rps, p50_ms, p99_ms, errors}`. The LLM request is
the one the "Inspire me" job sends (Responses API, strict JSON Schema for 3 ideas); the API
request is `GET /internal/users/u-ada/context`. run.py reads the server's CPU time around it.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import httpx2

from vamu_tasks.inspiration.schemas import llm_output_schema

LLM_BODY = {
    "model": "gpt-5-mini",
    "instructions": "You suggest events a person could go to or organise. " * 8,
    "input": [{"role": "user", "content": "Give exactly 3 event ideas. " + "x" * 600}],
    "max_output_tokens": 2048,
    "store": False,
    "text": {"format": {"type": "json_schema", "name": "event_ideas",
                        "schema": llm_output_schema(3), "strict": True}},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--kind", choices=["llm", "api"], required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--token", default="test-api-token")
    args = parser.parse_args()
    deadline = time.monotonic() + args.seconds
    latencies: list[float] = []
    errors = [0]

    def client_loop() -> None:
        headers = {"Authorization": f"Bearer {args.token}"}
        with httpx2.Client(base_url=args.url, headers=headers, timeout=10) as client:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                if args.kind == "llm":
                    response = client.post("/v1/responses", json=LLM_BODY)
                else:
                    response = client.get("/internal/users/u-ada/context")
                if response.status_code != 200:
                    errors[0] += 1
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client_loop) for _ in range(args.threads)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    n = len(latencies)
    print(json.dumps({
        "requests": n, "seconds": round(elapsed, 3), "rps": round(n / elapsed, 1),
        "p50_ms": round(latencies[n // 2] * 1000, 3) if n else None,
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 3) if n else None,
        "errors": errors[0],
    }))


if __name__ == "__main__":
    main()
