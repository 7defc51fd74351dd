"""API benchmark: accepted submissions per second and status latency, beside a bare FastAPI app.

    .venv/bin/python benchmarks/api_load.py                      # bare app vs this checkout
    .venv/bin/python benchmarks/api_load.py --baseline aaae045   # … and vs an older commit
    .venv/bin/python benchmarks/api_load.py --rounds 3 --clients 8 --uploads 50 --pollers 8

Each target is a real server process on 127.0.0.1 with a throw-away data directory:

- **bare**: a FastAPI app under the same uvicorn settings as `maie serve` that only streams each
  upload to a file and answers 202, with a status route that reads a dict. The ceiling for this
  machine, server framework and client.
- **maie**: `maie serve` of this checkout (the executor transcribes the accepted uploads meanwhile:
  raw_transcript, tiny.en, one worker, as in production on this machine).
- **baseline** (with `--baseline REF`): `maie serve` of an older commit, extracted with `git archive`.

Load, the same for every target: `clients` concurrent submitters share `clients × uploads` uploads of
the 76 KB JFK mp3, while `pollers` clients poll the status of accepted tasks (one request at a time,
`--poll-gap` seconds apart). Targets run interleaved, `rounds` times (bare, maie, baseline, bare …),
so load from other users of the machine hits each alike; the report gives medians and ratios.
Writes `benchmarks/results/api_load-<date>.{md,json}`. Loopback only; counts and time are bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT / "tests" / "data" / "audio" / "en_jfk_inaugural.mp3"  # public domain, in the repository
RESULTS = ROOT / "benchmarks" / "results"
KEY = "benchmark-key"

# The bare app: streams the body to a file and answers, nothing else (same uvicorn settings as maie).
BARE_APP = """
import sys, uuid
from pathlib import Path
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

port, root = int(sys.argv[1]), Path(sys.argv[2])
root.mkdir(parents=True, exist_ok=True)
app = FastAPI()
tasks: dict[str, dict[str, object]] = {}

@app.post("/v1/process", status_code=202)
async def process(request: Request) -> dict[str, str]:
    task_id = str(uuid.uuid4())
    with (root / f"{task_id}.part").open("wb") as fh:
        async for chunk in request.stream():
            fh.write(chunk)
    tasks[task_id] = {"task_id": task_id, "status": "PENDING", "progress": 0.0}
    return {"task_id": task_id, "status": "PENDING", "status_url": f"/v1/status/{task_id}"}

@app.get("/v1/status/{task_id}")
async def status(task_id: str) -> JSONResponse:
    doc = tasks.get(task_id)
    missing = {"detail": "no task", "code": "task_not_found"}
    return JSONResponse(doc or missing, status_code=200 if doc else 404)

@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}

uvicorn.run(
    app, host="127.0.0.1", port=port, log_config=None, access_log=False, http="httptools", loop="asyncio"
)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def _clean_env(**overrides: str) -> dict[str, str]:
    """This environment without MAIE settings (a developer's .env or exports must not leak in)."""
    sys.path.insert(0, str(ROOT))
    from maie.settings import Settings

    names = {n.upper() for n in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names and k != "PYTHONPATH"}
    env.update(overrides)
    return env


def extract_commit(ref: str, into: Path) -> Path:
    """The tree of `ref` as an importable `maie` package (the layout pip's link tree gives)."""
    src = into / "src"
    src.mkdir(parents=True)
    archive = into / "tree.tar"
    with archive.open("wb") as fh:
        subprocess.run(["git", "-C", str(ROOT), "archive", ref], stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(src, filter="data")
    for part in ("api", "runner", "operator"):
        (src / "maie" / part).symlink_to(src / part, target_is_directory=True)
    return src


class Target:
    """One server process under test."""

    def __init__(self, name: str, workdir: Path, source: Path | None = None) -> None:
        self.name = name
        self.workdir = workdir
        self.source = source  # an extracted older commit, or None for this checkout
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, queue_depth: int) -> None:
        data = self.workdir / f"{self.name}-data-{self.port}"
        data.mkdir(parents=True)
        log = (self.workdir / f"{self.name}-{self.port}.log").open("wb")
        if self.name == "bare":
            cmd = [sys.executable, "-c", BARE_APP, str(self.port), str(data)]
            env = _clean_env()
        else:
            cmd = [sys.executable, "-m", "maie.cli", "serve", "--host", "127.0.0.1", "--port",
                   str(self.port), "--data-dir", str(data)]  # fmt: skip
            env = _clean_env(SECRET_API_KEY=KEY, MAX_QUEUE_DEPTH=str(queue_depth))
            if self.source is not None:
                env["PYTHONPATH"] = str(self.source)  # the old tree shadows the installed one
        self.proc = subprocess.Popen(cmd, env=env, cwd=data, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        import httpx

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not answer /health within 90 s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def drive(base: str, audio: bytes, clients: int, uploads: int, pollers: int, poll_gap: float) -> dict:
    """The load: submitters and pollers at once; returns rates, latencies and status codes."""
    import aiohttp

    total = clients * uploads
    remaining = iter(range(total))
    accepted: list[str] = []
    submit_lat: list[float] = []
    poll_lat: list[float] = []
    codes: dict[int, int] = {}
    poll_codes: dict[int, int] = {}
    done = asyncio.Event()
    headers = {"X-API-Key": KEY}

    async def submitter(session: aiohttp.ClientSession) -> None:
        for _ in remaining:
            form = aiohttp.FormData()
            form.add_field("features", "raw_transcript")
            form.add_field("file", audio, filename="jfk.mp3", content_type="audio/mpeg")
            t0 = time.perf_counter()
            async with session.post(f"{base}/v1/process", data=form, headers=headers) as r:
                body = await r.read()
            submit_lat.append(time.perf_counter() - t0)
            codes[r.status] = codes.get(r.status, 0) + 1
            if r.status == 202:
                accepted.append(json.loads(body)["task_id"])

    async def poller(session: aiohttp.ClientSession, n: int) -> None:
        i = n
        while not done.is_set():
            if not accepted:
                await asyncio.sleep(0.01)
                continue
            task = accepted[(i * 7919) % len(accepted)]
            i += 1
            t0 = time.perf_counter()
            async with session.get(f"{base}/v1/status/{task}", headers=headers) as r:
                await r.read()
            poll_lat.append(time.perf_counter() - t0)
            poll_codes[r.status] = poll_codes.get(r.status, 0) + 1
            if poll_gap:
                await asyncio.sleep(poll_gap)

    connector = aiohttp.TCPConnector(limit=clients + pollers + 4)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        poll_tasks = [asyncio.create_task(poller(session, n)) for n in range(pollers)]
        started = time.perf_counter()
        await asyncio.gather(*(submitter(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
        done.set()
        await asyncio.gather(*poll_tasks)
    return {
        "uploads": total,
        "accepted": codes.get(202, 0),
        "status_codes": codes,
        "seconds": round(elapsed, 3),
        "accepted_per_s": round(codes.get(202, 0) / elapsed, 1),
        "submit_p50_ms": _ms(_percentile(submit_lat, 0.5)),
        "submit_p99_ms": _ms(_percentile(submit_lat, 0.99)),
        "polls": len(poll_lat),
        "poll_codes": poll_codes,
        "status_p50_ms": _ms(_percentile(poll_lat, 0.5)),
        "status_p99_ms": _ms(_percentile(poll_lat, 0.99)),
    }


def run(
    rounds: int = 1,
    clients: int = 8,
    uploads: int = 50,
    pollers: int = 8,
    poll_gap: float = 0.05,
    baseline: str | None = None,
) -> dict[str, Any]:
    if not AUDIO.is_file():
        return {"skipped": f"{AUDIO} is missing"}
    audio = AUDIO.read_bytes()
    workdir = Path(tempfile.mkdtemp(prefix="maie-api-load-"))
    names = ["bare", "maie"]
    sources: dict[str, Path | None] = {"bare": None, "maie": None}
    if baseline:
        sources["baseline"] = extract_commit(baseline, workdir / "baseline")
        names.append("baseline")
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    load_start = os.getloadavg()
    try:
        for r in range(rounds):
            for name in names:
                target = Target(name, workdir, sources[name])
                try:
                    target.start(queue_depth=clients * uploads * 2)
                    result = asyncio.run(drive(target.base, audio, clients, uploads, pollers, poll_gap))
                finally:
                    target.stop()
                runs[name].append(result)
                print(f"round {r + 1} {name:8s} {json.dumps(result)}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary: dict[str, dict[str, float | None]] = {}
    for name, results in runs.items():
        summary[name] = {}
        for key in ("accepted_per_s", "submit_p50_ms", "submit_p99_ms", "status_p50_ms", "status_p99_ms"):
            values = [x[key] for x in results if x[key] is not None]
            summary[name][key] = round(statistics.median(values), 2) if values else None
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "commit": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "baseline": baseline,
        "load": {
            "clients": clients,
            "uploads_each": uploads,
            "pollers": pollers,
            "poll_gap_s": poll_gap,
            "upload": AUDIO.name,
            "upload_bytes": len(audio),
            "rounds": rounds,
        },
        "loadavg": {
            "start": [round(x, 2) for x in load_start],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "median": summary,
        "runs": runs,
    }


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "–"


def report(result: dict[str, Any]) -> str:
    med = result["median"]
    load = result["load"]
    lines = [
        f"# API load — {result['date']} ({result['machine']}, commit {result['commit']})",
        "",
        f"{load['clients']} clients × {load['uploads_each']} uploads of `{load['upload']}` "
        f"({load['upload_bytes'] // 1024} KB, features=raw_transcript) while {load['pollers']} pollers "
        f"read statuses ({load['poll_gap_s']} s between one poller's requests); medians of "
        f"{load['rounds']} interleaved round(s). maie's executor transcribes the accepted uploads meanwhile.",
        f"Load average (1/5/15 min) at the start {result['loadavg']['start']}, at the end "
        f"{result['loadavg']['end']}: other work on the machine takes its share of the cores from every "
        "target alike.",
        "",
        "| target | accepted/s | (rounds) | submit p50 ms | submit p99 ms | status p50 ms | status p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in med.items():
        label = f"baseline ({result['baseline']})" if name == "baseline" else name
        per_round = ", ".join(str(r["accepted_per_s"]) for r in result["runs"][name])
        lines.append(
            f"| {label} | {m['accepted_per_s']} | {per_round} | {m['submit_p50_ms']} | "
            f"{m['submit_p99_ms']} | {m['status_p50_ms']} | {m['status_p99_ms']} |"
        )
    lines += ["", "Ratios (accepted/s; status p99):", ""]
    lines.append(
        f"- maie / bare: {_ratio(med['maie']['accepted_per_s'], med['bare']['accepted_per_s'])}; "
        f"{_ratio(med['maie']['status_p99_ms'], med['bare']['status_p99_ms'])}"
    )
    if "baseline" in med:
        lines.append(
            f"- maie / baseline: {_ratio(med['maie']['accepted_per_s'], med['baseline']['accepted_per_s'])}; "
            f"{_ratio(med['maie']['status_p99_ms'], med['baseline']['status_p99_ms'])}"
        )
        lines.append(
            f"- baseline / bare: "
            f"{_ratio(med['baseline']['accepted_per_s'], med['bare']['accepted_per_s'])}; "
            f"{_ratio(med['baseline']['status_p99_ms'], med['bare']['status_p99_ms'])}"
        )
    return "\n".join(lines) + "\n"


def run_api_benchmark() -> dict[str, Any]:
    """For benchmarks/run.py: one round, bare app vs this checkout."""
    return run(rounds=1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--uploads", type=int, default=50, help="uploads per client")
    parser.add_argument("--pollers", type=int, default=8)
    parser.add_argument("--poll-gap", type=float, default=0.05, help="seconds between one poller's requests")
    parser.add_argument("--baseline", help="git ref of an older commit to compare with")
    parser.add_argument("--out", type=Path, default=RESULTS, help="report directory")
    args = parser.parse_args()
    result = run(args.rounds, args.clients, args.uploads, args.pollers, args.poll_gap, args.baseline)
    if "skipped" in result:
        sys.exit(result["skipped"])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"api_load-{result['date']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    text = report(result)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
