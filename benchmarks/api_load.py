"""API benchmark: submissions per second and status-poll latency (p50/p99) under concurrent clients.

Starts `maie serve` on 127.0.0.1 with a throw-away data dir, sends a bounded number of uploads from a
few concurrent clients, then polls one task's status from several clients, and stops the server.
All traffic stays on loopback; request counts and time are bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from corpus import data_path

KEY = "benchmark-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run_api_benchmark(
    clients: int = 4, submissions: int = 40, pollers: int = 8, polls_each: int = 50, timeout: float = 240.0
) -> dict[str, Any]:
    import httpx

    maie = Path(sys.executable).with_name("maie")
    if not maie.is_file():
        return {"skipped": "the maie command is not installed in this venv"}
    port = _free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="maie-api-bench-"))
    env = {
        **os.environ,
        "SECRET_API_KEY": KEY,
        "MAX_QUEUE_DEPTH": str(submissions * 2),
        "DATA_DIR": str(data_dir),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
    }
    log = data_dir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(maie), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir
        )
    base = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": KEY}
    audio = data_path("audio/en_jfk_inaugural.flac").read_bytes()
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                return {"skipped": f"maie serve exited {proc.returncode}: {log.read_text()[-500:]}"}
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                return {"skipped": "maie serve did not answer /health within 60 s"}
            time.sleep(0.5)

        # 1. Submissions: `clients` threads share `submissions` uploads.
        task_ids: list[str] = []
        codes: dict[int, int] = {}
        submit_lat: list[float] = []
        lock = threading.Lock()
        counter = iter(range(submissions))

        def submitter() -> None:
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                for _ in counter:
                    t0 = time.perf_counter()
                    r = client.post(
                        "/v1/process",
                        files={"file": ("jfk.flac", audio, "audio/flac")},
                        data={"features": "raw_transcript"},
                    )
                    with lock:
                        submit_lat.append(time.perf_counter() - t0)
                        codes[r.status_code] = codes.get(r.status_code, 0) + 1
                        if r.status_code == 202:
                            task_ids.append(r.json()["task_id"])

        started = time.perf_counter()
        threads = [threading.Thread(target=submitter) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout)
        submit_s = time.perf_counter() - started

        # 2. Status polls from `pollers` clients while the executor works through the queue.
        poll_lat: list[float] = []
        poll_codes: dict[int, int] = {}

        def poller(worker: int) -> None:
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                for i in range(polls_each):
                    task = task_ids[(worker + i) % len(task_ids)]
                    t0 = time.perf_counter()
                    r = client.get(f"/v1/status/{task}")
                    with lock:
                        poll_lat.append(time.perf_counter() - t0)
                        poll_codes[r.status_code] = poll_codes.get(r.status_code, 0) + 1

        if task_ids:
            threads = [threading.Thread(target=poller, args=(w,)) for w in range(pollers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout)
        return {
            "clients": clients,
            "submissions": submissions,
            "accepted": codes.get(202, 0),
            "status_codes": codes,
            "submissions_per_s": round(submissions / submit_s, 2) if submit_s else None,
            "submit_p50_ms": round(_percentile(submit_lat, 0.5) * 1000, 1) if submit_lat else None,
            "submit_p99_ms": round(_percentile(submit_lat, 0.99) * 1000, 1) if submit_lat else None,
            "pollers": pollers,
            "polls": len(poll_lat),
            "poll_codes": poll_codes,
            "poll_p50_ms": round(_percentile(poll_lat, 0.5) * 1000, 2) if poll_lat else None,
            "poll_p99_ms": round(_percentile(poll_lat, 0.99) * 1000, 2) if poll_lat else None,
            "poll_mean_ms": round(statistics.mean(poll_lat) * 1000, 2) if poll_lat else None,
            "upload_bytes": len(audio),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
