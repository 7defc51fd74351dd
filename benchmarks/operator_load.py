"""Operator load benchmark (issue 10): N Transcriptions against KMock, the Job cap at 4, before vs after.

For each variant, in one run: a fresh KMock (the tests' `ApiServerLike`, served on a loopback port in
this process), the operator of that variant in a subprocess of its own (its RSS and CPU are its own)
pointed at KMock with a kubeconfig, and — for "after", whose operator reads the runner's result.json —
moto's S3 server. The benchmark creates the N resources in batches and plays the Job controller: each
runner Job the operator creates is completed at once (for "after", result.json is written to S3 first,
as the runner would). It stops when every resource is Succeeded, or at the timeout.

  before  commit ee1b3fc: admission listed every Transcription and every runner Job (twice) under one
          lock on every retry of every Queued resource (a kopf TemporaryError every
          OPERATOR_QUEUE_RETRY_SECONDS, logged as an error and posted as an Event). Its operator did
          not read S3. Run from `git archive ee1b3fc` with PYTHONPATH pointing at a link tree that makes
          its api/, operator/, runner/ importable as maie.api / maie.operator / maie.runner, started as
          its tests did (kopf.run with its own registry from `build()`).
  after   this checkout: `maie operator --namespace NS` (leader election included); admission reads two
          kopf indices fed by the watches, on Job completion and on a timer.

Measured: lost resources, duplicate Job CREATE requests, the most runner Jobs active at once (checked at
every Job CREATE and sampled), drain time (first create → last Succeeded), the operator's API requests by
verb and resource (KMock's request log, the operator's by User-Agent: kopf's "kopf/…" and the Kubernetes
client's "OpenAPI-Generator/…"; this benchmark's own requests go through aiohttp), Events posted, the
operator's peak RSS (VmRSS sampled, and ru_maxrss from wait4) and CPU seconds.

Two changes to KMock's cost model, the same for both variants (so the operator is measured, not the
mock): a GET of one object is served by key (KMock scans every stored object per GET, so its cost would
grow with the Events the old operator posts), and an object's version history is trimmed to the latest
version after each write (KMock keeps every version), and a request leaves KMock's request log once
served (tallied on arrival): KMock matches every request against the whole log, which at this scale
costs more than everything else.

Not a test: a report. Run from the repository root:

  .venv/bin/python benchmarks/operator_load.py                      # 1,000 tasks, cap 4, before,after
  .venv/bin/python benchmarks/operator_load.py --tasks 100 --variants after --timeout 300
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work" / "operator_load"
BEFORE_COMMIT = "ee1b3fc"
NS = "load"
TX = "maie.io/v1alpha1/transcriptions"
TX_PATH = f"/apis/maie.io/v1alpha1/namespaces/{NS}/transcriptions"
JOB_STATUS_PATH = "/apis/batch/v1/namespaces/" + NS + "/jobs/{}/status"
BUCKET = "maie-load"

# The old operator, started as its tests started it (tests/k8s/k8s_support.py at ee1b3fc: kopf with the
# registry from `build()` and `configure()`); the settings come from the environment, as in `maie operator`.
BEFORE_OPERATOR = """
import faulthandler, logging, signal, sys
faulthandler.register(signal.SIGUSR1, all_threads=True)
import kopf
import maie.operator.handlers
print("maie.operator.handlers:", maie.operator.handlers.__file__, flush=True)
from maie.operator.main import build, configure
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
registry, _ = build(namespaces=[sys.argv[1]])
kopf.run(registry=registry, settings=configure(kopf.OperatorSettings()), standalone=True,
         clusterwide=False, namespaces=[sys.argv[1]])
"""

# `maie operator --namespace NS`, after printing which code it runs.
AFTER_OPERATOR = """
import faulthandler, signal, sys
faulthandler.register(signal.SIGUSR1, all_threads=True)
import maie.operator.handlers
print("maie.operator.handlers:", maie.operator.handlers.__file__, flush=True)
from maie.cli import main
sys.argv = ["maie", "operator", "--namespace", sys.argv[1]]
main()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int | None:
    """VmRSS of a process, KiB (None once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _who(user_agent: str) -> str:
    if user_agent.startswith("kopf/"):
        return "operator"  # kopf's own aiohttp client: watches, lists, finalizers, Events
    if user_agent.startswith("OpenAPI-Generator/"):
        return "operator"  # the Kubernetes client: the handlers' own calls, the Lease
    if user_agent.startswith("kmock/"):
        return "benchmark"
    return "other"


# --------------------------------------------------------------------------------------
# what the benchmark sees of the API traffic
# --------------------------------------------------------------------------------------
@dataclass
class Observer:
    """Fed by KMock's request handler as each request arrives (and when it has been served)."""

    tasks: int
    tally: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)
    user_agents: collections.Counter[str] = field(default_factory=collections.Counter)
    job_creates: collections.Counter[str] = field(default_factory=collections.Counter)  # owner → requests
    job_owner: dict[str, str] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)  # Jobs created and not yet completed by us
    max_active: int = 0
    over_cap: list[tuple[float, list[str]]] = field(default_factory=list)
    succeeded_at: dict[str, float] = field(default_factory=dict)
    watching: set[str] = field(default_factory=set)
    new_jobs: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    cap: int = 4
    t0: float = 0.0
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    response_bytes: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    trace_name: str = ""
    trace: Any = None  # a file: every request whose URL names trace_name

    @staticmethod
    def describe(request: Any) -> tuple[str, str]:
        """(verb, resource) of a request: LIST / WATCH, else the HTTP method; plural[/subresource]."""
        action = getattr(request.action, "value", None)
        verb = (
            action if action in ("LIST", "WATCH") else str(getattr(request.method, "value", request.method))
        )
        if request.resource is None or not request.resource.plural:
            return verb, "(discovery)"
        res = str(request.resource.plural)
        return verb, f"{res}/{request.subresource}" if request.subresource else res

    def arrived(self, request: Any) -> None:
        headers = {k.lower(): v for k, v in dict(request.headers).items()}
        ua = str(headers.get("user-agent", ""))
        who = _who(ua)
        if self.trace is not None and self.trace_name in str(request.url):
            body = json.dumps(request.data)[:600] if request.data is not None else ""
            self.trace.write(
                f"{time.monotonic() - self.t0:9.3f} {who:9} {request.method} {request.url.path_qs} {body}\n"
            )
        self.user_agents[ua.split(" ")[0]] += 1
        verb, res = self.describe(request)
        self.tally[who, verb, res] += 1
        if who == "operator" and verb == "WATCH":
            self.watching.add(res)
        if who == "operator" and verb == "POST" and res == "jobs" and isinstance(request.data, dict):
            meta = request.data.get("metadata") or {}
            owners = [r for r in meta.get("ownerReferences") or [] if r.get("kind") == "Transcription"]
            owner = str(owners[0]["name"]) if owners else str(meta.get("name", "")).removesuffix("-run")
            self.job_creates[owner] += 1

    def served(self, request: Any, response: Any) -> None:
        """After a request succeeded (exceptions — 404, 409, 422 — never get here)."""
        verb, res = self.describe(request)
        headers = {k.lower(): v for k, v in dict(request.headers).items()}
        who = _who(str(headers.get("user-agent", "")))
        body = getattr(response, "body", None)
        if who == "operator" and isinstance(body, bytes | bytearray):  # not the watch streams
            self.response_bytes[verb, res] += len(body)
        if who != "operator" or not isinstance(request.data, dict):
            return
        if verb == "POST" and res == "jobs":
            name = str((request.data.get("metadata") or {}).get("name"))
            self.active.add(name)
            if len(self.active) > self.cap:
                self.over_cap.append((time.monotonic() - self.t0, sorted(self.active)))
            self.max_active = max(self.max_active, len(self.active))
            self.new_jobs.put_nowait(name)
        elif verb == "PATCH" and res == "transcriptions/status" and request.name:
            phase = (request.data.get("status") or {}).get("phase")
            if phase == "Succeeded" and request.name not in self.succeeded_at:
                self.succeeded_at[request.name] = time.monotonic()

    def failed(self, request: Any, exc: BaseException) -> None:
        verb, res = self.describe(request)
        self.failures[f"{verb} {res}: {type(exc).__name__}"] += 1


def make_server(observer: Observer) -> Any:
    """The tests' ApiServerLike (KMock + uid/resourceVersion/creationTimestamp, PUT, Job validation),
    reporting each request to the observer; GET by key; the latest version only."""
    import attrs

    sys.path.insert(0, str(ROOT / "tests" / "k8s"))
    from k8s_support import ApiServerLike

    @attrs.define(kw_only=True)
    class ObservedApiServer(ApiServerLike):  # type: ignore[misc]
        observer: Any = None

        async def _handle(self, request: Any) -> Any:
            obs = self.observer
            obs.arrived(request)
            data = request.data
            if request.resource is not None and request.action == "CREATE" and isinstance(data, dict):
                meta = data.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):  # kopf's Events: 5 hex digits
                    meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:12]}"  # collide at 3,000

            try:
                response = await super()._handle(request)
            except Exception as exc:
                obs.failed(request, exc)
                raise
            finally:
                forget(self, request)
            obs.served(request, response)
            if request.resource is not None and request.name and request.method in ("PATCH", "PUT"):
                key = (request.resource, request.namespace, request.name)
                if key in self.objects:
                    history = self.objects[key].history
                    if len(history) > 1:
                        del history[:-1]
            return response

        async def _serve_fetch(self, request: Any) -> Any:
            key = (request.resource, request.namespace, request.name)
            if key in self.objects and not self.objects[key].deleted:
                return self.objects[key].raw
            return await super()._serve_fetch(request)

    return ObservedApiServer(observer=observer)


def forget(kube: Any, request: Any) -> None:
    """Take a served request out of KMock's request log (and its reactions' lists).

    KMock matches each request against its reactions by scanning the whole log (`request in
    view`), so a log that keeps every request makes each request cost O(requests so far): at
    1,000 resources it stalls within a minute. The benchmark tallies each request on arrival
    (`Observer`) and keeps only those in flight."""
    kube._requests[:] = [r for r in kube._requests if r is not request]
    for payload in kube._payloads:
        if payload._requests:
            payload._requests[:] = [r for r in payload._requests if r is not request]


def register_resources(kube: Any) -> None:
    import kmock

    kube.resources.load_bundled()
    kube.resources[TX] = kmock.ResourceInfo(
        kind="Transcription",
        singular="transcription",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        shortnames={"tx"},
        subresources={"status"},
    )


def write_kubeconfig(path: Path, server: str) -> None:
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "bench", "user": {"token": "bench-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "bench"}}],
                "current-context": "kmock",
            }
        )
    )


# --------------------------------------------------------------------------------------
# the two operators
# --------------------------------------------------------------------------------------
def before_tree(work: Path) -> Path:
    """ee1b3fc's sources laid out as the installed package: maie/ with api, operator, runner linked in."""
    tree = work / "before-tree"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", BEFORE_COMMIT, "maie", "api", "operator", "runner"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    for folder in ("api", "operator", "runner"):  # [tool.setuptools.package-dir] of that commit
        (tree / "maie" / folder).symlink_to(Path("..") / folder)
    return tree


def operator_env(
    variant: str, kubeconfig: Path, cap: int, s3: str | None, tree: Path | None
) -> dict[str, str]:
    from maie.settings import Settings

    names = {n.upper() for n in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names and k != "PYTHONPATH"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.update(
        KUBECONFIG=str(kubeconfig),
        OPERATOR_MAX_CONCURRENT_JOBS=str(cap),
        OPERATOR_GPU_COUNT="0",
        PYTHONUNBUFFERED="1",
    )
    if variant == "after":
        assert s3 is not None
        env.update(
            OPERATOR_NAMESPACE=NS,
            OPERATOR_HEALTH_PORT=str(_free_port()),
            OPERATOR_LEASE_SECONDS="15",
            S3_ENDPOINT=s3,
            S3_BUCKET=BUCKET,
            S3_ACCESS_KEY="testing",
            S3_SECRET_KEY="testing",
        )
    else:
        assert tree is not None
        env["PYTHONPATH"] = str(tree)  # before the editable install's .pth entry on sys.path
    return env


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    peak_rss_kib: int = 0
    rss_samples: list[tuple[float, int]] = field(default_factory=list)
    rusage: Any = None
    exit_status: int | None = None
    _reaper: threading.Thread | None = None

    def start_reaper(self) -> None:
        def reap() -> None:
            _, status, usage = os.wait4(self.proc.pid, 0)
            self.exit_status, self.rusage = status, usage
            self.proc.returncode = os.waitstatus_to_exitcode(status)

        self._reaper = threading.Thread(target=reap, daemon=True)
        self._reaper.start()

    @property
    def alive(self) -> bool:
        return self.exit_status is None

    def sample(self, t: float) -> None:
        rss = _rss_kib(self.proc.pid) if self.alive else None
        if rss:
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            self.rss_samples.append((round(t, 1), rss))

    def cpu_seconds(self) -> float | None:
        if self.rusage is not None:
            return float(self.rusage.ru_utime + self.rusage.ru_stime)
        try:
            import psutil

            times = psutil.Process(self.proc.pid).cpu_times()
            return float(times.user + times.system)
        except Exception:
            return None

    def stop(self) -> None:
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
        assert self._reaper is not None
        self._reaper.join(timeout=30)
        if self.alive:  # what it is waiting for, into its log (faulthandler on SIGUSR1)
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            self.proc.kill()
            self._reaper.join(timeout=10)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the benchmark dies, however it dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def start_operator(variant: str, env: dict[str, str], work: Path) -> OperatorProcess:
    log = work / f"operator-{variant}.log"
    code = AFTER_OPERATOR if variant == "after" else BEFORE_OPERATOR
    proc = subprocess.Popen(
        [sys.executable, "-c", code, NS],
        env=env,
        cwd=work,  # no .env of the checkout
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    op = OperatorProcess(proc=proc, log=log)
    op.start_reaper()
    return op


# --------------------------------------------------------------------------------------
# one variant
# --------------------------------------------------------------------------------------
def tx_body(i: int) -> dict[str, Any]:
    name = f"load-{i:05d}"
    return {
        "apiVersion": "maie.io/v1alpha1",
        "kind": "Transcription",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": {"audio": {"uri": f"https://media.example/{name}.flac"}, "features": ["raw_transcript"]},
    }


def result_json(name: str) -> bytes:
    """What the runner writes at the end (the task id is the uid: these resources have no taskId)."""
    from maie.contract import Metrics, ResultDocument, TaskRequest, TaskStatus

    doc = ResultDocument(
        task_id=f"uid-{name}",
        status=TaskStatus.COMPLETE,
        request=TaskRequest(features=["raw_transcript"]),
        metrics=Metrics(processing_time_seconds=1.0, input_duration_seconds=10.0, rtf=0.1),
    )
    return doc.to_json().encode()


async def run_variant(variant: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import kmock

    loop = asyncio.get_running_loop()
    obs = Observer(tasks=args.tasks, cap=args.cap)
    if args.trace:
        obs.trace_name = args.trace
        obs.trace = (work / f"trace-{variant}.txt").open("w", buffering=1)
    s3_server = None
    store = None
    tree = None
    s3 = None
    if variant == "after":
        from moto.server import ThreadedMotoServer

        from maie.storage.base import TaskKeys
        from maie.storage.s3 import S3ObjectStore

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
        port = _free_port()
        s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        s3_server.start()
        s3 = f"127.0.0.1:{port}"
        store = S3ObjectStore(
            s3, BUCKET, access_key="testing", secret_key="testing", secure=False, create_bucket=True
        )
    else:
        tree = before_tree(work)

    kube = make_server(obs)
    register_resources(kube)
    out: dict[str, Any] = {"variant": variant, "tasks": args.tasks, "cap": args.cap}
    async with kube, kmock.Server(kube) as server:
        kubeconfig = work / f"kubeconfig-{variant}"
        write_kubeconfig(kubeconfig, str(server.url).rstrip("/"))
        env = operator_env(variant, kubeconfig, args.cap, s3, tree)
        op = start_operator(variant, env, work)
        try:
            # Wait for the operator's watches (the "after" one first wins its Lease).
            ready_by = loop.time() + 120
            while not {"transcriptions", "jobs"} <= obs.watching:
                if not op.alive or loop.time() > ready_by:
                    raise RuntimeError(f"the {variant} operator did not start:\n{op.log.read_text()[-3000:]}")
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            first_line = op.log.read_text(errors="replace").splitlines()[0]
            out["code"] = first_line
            print(f"[{variant}] {first_line}", flush=True)

            async def complete(job: str) -> None:
                owner = job.removesuffix("-run")
                if args.job_seconds:
                    await asyncio.sleep(args.job_seconds)
                if store is not None:  # the runner's result.json, then the Job controller's verdict
                    await asyncio.to_thread(
                        store.put_bytes, TaskKeys(f"uid-{owner}", NS).result(), result_json(owner)
                    )
                fields = {"active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
                async with server.client.patch(JOB_STATUS_PATH.format(job), json={"status": fields}) as resp:
                    if resp.status != 200:
                        obs.failures[f"benchmark Job completion {resp.status}"] += 1
                obs.active.discard(job)

            async def job_controller() -> None:
                pending: set[asyncio.Task[None]] = set()
                while True:
                    job = await obs.new_jobs.get()
                    task = asyncio.create_task(complete(job))
                    pending.add(task)
                    task.add_done_callback(pending.discard)

            controller = asyncio.create_task(job_controller())
            obs.t0 = t0 = time.monotonic()
            created = 0
            for start in range(0, args.tasks, args.batch):
                bodies = [tx_body(i) for i in range(start, min(start + args.batch, args.tasks))]
                responses = await asyncio.gather(*(server.client.post(TX_PATH, json=b) for b in bodies))
                for resp in responses:
                    created += resp.status in (200, 201)
                    resp.release()
            created_s = time.monotonic() - t0
            print(f"[{variant}] created {created} Transcriptions in {created_s:.1f} s", flush=True)

            timeline: list[tuple[float, int, int]] = []
            last_print = 0.0
            deadline = t0 + args.timeout
            while True:
                now = time.monotonic()
                op.sample(now - t0)
                sampled_active = len(obs.active)
                done = len(obs.succeeded_at)
                if now - last_print >= 10:
                    last_print = now
                    timeline.append((round(now - t0, 1), done, op.peak_rss_kib))
                    ops = sum(n for (who, _, _), n in obs.tally.items() if who == "operator")
                    print(
                        f"[{variant}] {now - t0:7.1f} s  succeeded {done}/{args.tasks}"
                        f"  active {sampled_active}  operator requests {ops}"
                        f"  RSS {op.peak_rss_kib / 1024:.0f} MiB",
                        flush=True,
                    )
                if done >= args.tasks or not op.alive or now > deadline:
                    break
                await asyncio.sleep(0.25)
            finished_at = time.monotonic()
            timeline.append((round(finished_at - t0, 1), len(obs.succeeded_at), op.peak_rss_kib))
            controller.cancel()
            cpu_running = op.cpu_seconds()
            crashed = not op.alive
        finally:  # in a thread: KMock serves from this loop, and the operator talks to it while stopping
            await asyncio.to_thread(op.stop)
            if s3_server is not None:
                s3_server.stop()

        # What is in the API server at the end.
        phases: collections.Counter[str] = collections.Counter()
        lost: list[str] = []
        jobs_per_owner: collections.Counter[str] = collections.Counter()
        events = 0
        for key in list(kube.objects):
            res, _, name = key
            obj = kube.objects[key]
            if obj.deleted:
                continue
            raw = dict(obj.raw)
            if res.plural == "transcriptions":
                phase = (raw.get("status") or {}).get("phase") or "(none)"
                phases[phase] += 1
                if phase != "Succeeded":
                    lost.append(f"{name}: {phase}")
            elif res.plural == "jobs":
                owners = [r["name"] for r in raw["metadata"].get("ownerReferences") or []]
                jobs_per_owner[owners[0] if owners else name] += 1
            elif res.plural == "events":
                events += 1
        server_errors = [repr(e)[:300] for e in kube.errors]

    log_text = op.log.read_text(errors="replace")
    levels = collections.Counter(
        m.group(1) for m in re.finditer(r" (DEBUG|INFO|WARNING|ERROR|CRITICAL) ", log_text)
    )
    ops = {(verb, res): n for (who, verb, res), n in obs.tally.items() if who == "operator"}
    total = sum(ops.values())
    lists = {res: n for (verb, res), n in ops.items() if verb == "LIST" and res != "(discovery)"}
    last_done = max(obs.succeeded_at.values(), default=None)
    drain = (last_done - t0) if last_done is not None and len(obs.succeeded_at) >= args.tasks else None
    n = args.tasks
    out.update(
        created=created,
        create_seconds=round(created_s, 2),
        succeeded=len(obs.succeeded_at),
        phases_at_end=dict(phases),
        lost=len(lost),
        lost_examples=lost[:10],
        timed_out=len(obs.succeeded_at) < n and not crashed,
        crashed=crashed,
        operator_exit=op.proc.returncode,
        drain_seconds=round(drain, 1) if drain is not None else None,
        elapsed_seconds=round(finished_at - t0, 1),
        resources_per_second=round(len(obs.succeeded_at) / ((last_done or finished_at) - t0), 3)
        if obs.succeeded_at
        else 0.0,
        job_create_requests=sum(obs.job_creates.values()),
        resources_with_duplicate_job_creates=sum(1 for c in obs.job_creates.values() if c > 1),
        max_job_creates_per_resource=max(obs.job_creates.values(), default=0),
        jobs_at_end=sum(jobs_per_owner.values()),
        resources_with_several_jobs=sum(1 for c in jobs_per_owner.values() if c > 1),
        max_active_jobs=obs.max_active,
        cap_exceeded=len(obs.over_cap),
        cap_exceeded_examples=[[t, names] for t, names in obs.over_cap[:5]],
        operator_requests_total=total,
        operator_requests_per_resource=round(total / n, 2),
        operator_lists_total=sum(lists.values()),
        operator_lists_per_resource=round(sum(lists.values()) / n, 3),
        operator_lists_by_resource=lists,
        operator_requests_by_verb_resource={f"{v} {r}": c for (v, r), c in sorted(ops.items())},
        operator_response_mib=round(sum(obs.response_bytes.values()) / 2**20, 1),
        operator_response_mib_by_verb_resource={
            f"{v} {r}": round(b / 2**20, 2) for (v, r), b in sorted(obs.response_bytes.items())
        },
        events_posted=ops.get(("POST", "events"), 0),
        events_stored_at_end=events,
        benchmark_requests=sum(c for (who, _, _), c in obs.tally.items() if who == "benchmark"),
        other_requests={f"{v} {r}": c for (who, v, r), c in obs.tally.items() if who == "other"},
        user_agents=dict(obs.user_agents),
        failed_requests=dict(obs.failures),
        kmock_server_errors=server_errors[:10],
        operator_peak_rss_mib=round(op.peak_rss_kib / 1024, 1),
        operator_maxrss_mib=round(op.rusage.ru_maxrss / 1024, 1) if op.rusage is not None else None,
        operator_cpu_seconds=round(cpu_running, 1) if cpu_running is not None else None,
        operator_log_lines=dict(levels),
        benchmark_peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        timeline=timeline,
    )
    return out


# --------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------
ROWS: list[tuple[str, str, str]] = [
    # (label, key, how to compare)
    ("Transcriptions created", "created", ""),
    ("Succeeded", "succeeded", ""),
    ("Not Succeeded at the stop (lost, unless timed out)", "lost", ""),
    ("Phases at the stop", "_phases", ""),
    ("Timed out / operator crashed", "_end", ""),
    ("Drain time, first create → last Succeeded (s)", "drain_seconds", "ratio"),
    ("Elapsed until stop (s)", "elapsed_seconds", "ratio"),
    ("Resources/s (Succeeded ÷ time to the last one)", "resources_per_second", "ratio"),
    ("Job CREATE requests", "job_create_requests", "ratio"),
    ("Resources with more than one Job CREATE", "resources_with_duplicate_job_creates", ""),
    ("Jobs in the API server at the end", "jobs_at_end", ""),
    ("Most runner Jobs active at once (cap)", "max_active_jobs", ""),
    ("Job CREATEs that found the cap exceeded", "cap_exceeded", ""),
    ("Operator API requests, total", "operator_requests_total", "ratio"),
    ("Operator API requests per resource", "operator_requests_per_resource", "ratio"),
    ("Operator LIST requests, total", "operator_lists_total", "ratio"),
    ("Operator LIST requests per resource", "operator_lists_per_resource", "ratio"),
    ("MiB the API server sent the operator (not counting watch streams)", "operator_response_mib", "ratio"),
    ("Events posted", "events_posted", "ratio"),
    ("Operator log lines at ERROR", "_errors", "ratio"),
    ("Operator peak RSS, VmRSS sampled (MiB)", "operator_peak_rss_mib", "ratio"),
    ("Operator peak RSS, ru_maxrss (MiB)", "operator_maxrss_mib", "ratio"),
    ("Operator CPU seconds (user+sys)", "operator_cpu_seconds", "ratio"),
]


def _value(result: dict[str, Any], key: str) -> Any:
    if key == "_end":
        return "timeout" if result.get("timed_out") else ("crash" if result.get("crashed") else "no")
    if key == "_phases":
        return ", ".join(f"{p} {n:,}" for p, n in sorted(result.get("phases_at_end", {}).items()))
    if key == "_errors":
        return result.get("operator_log_lines", {}).get("ERROR", 0)
    return result.get(key)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(report: dict[str, Any], title: str | None = None) -> str:
    results = {r["variant"]: r for r in report["results"]}
    variants = [v for v in ("before", "after") if v in results]
    both = len(variants) == 2
    head = "| | " + " | ".join(variants) + (" | after ÷ before |" if both else " |")
    lines = [
        title or f"# Operator load benchmark — {report['date']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}",
        "",
        f"before = {report.get('before_commit')} (its operator run from `git archive`), "
        f"after = {report.get('after_commit')} (this branch)",
        "",
        head,
        "|" + "---|" * (len(variants) + 1 + (1 if both else 0)),
    ]
    for label, key, how in ROWS:
        values = [_value(results[v], key) for v in variants]
        row = f"| {label} | " + " | ".join(_fmt(v) for v in values)
        if both:
            a, b = values[1], values[0]
            ratio = (
                f"{a / b:.3g}"
                if how == "ratio" and isinstance(a, int | float) and isinstance(b, int | float) and b
                else ""
            )
            row += f" | {ratio}"
        lines.append(row + " |")
    lines += ["", "Operator requests by verb and resource (and the response bytes, where not streamed):", ""]
    keys = sorted({k for v in variants for k in results[v]["operator_requests_by_verb_resource"]})
    lines.append("| verb resource | " + " | ".join(variants) + " |")
    lines.append("|" + "---|" * (len(variants) + 1))

    def cell(v: str, k: str) -> str:
        count = _fmt(results[v]["operator_requests_by_verb_resource"].get(k, 0))
        mib = results[v].get("operator_response_mib_by_verb_resource", {}).get(k)
        return f"{count} ({mib:,.1f} MiB)" if mib else count

    for k in keys:
        lines.append(f"| {k} | " + " | ".join(cell(v, k) for v in variants) + " |")
    for v in variants:
        lines += ["", f"`{v}` runs: {results[v].get('code', '?')}"]
    return "\n".join(lines) + "\n"


def machine() -> str:
    cores = os.cpu_count()
    load = os.getloadavg()
    return (
        f"{platform.node()}: {cores} CPU cores shared with other engineers' work (load average at the start "
        f"{load[0]:.1f}), Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    report: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "command": " ".join(["benchmarks/operator_load.py", *sys.argv[1:]]),
        "machine": machine(),
        "before_commit": BEFORE_COMMIT,
        "after_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "work_dir": str(work),
        "results": [],
    }
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)  # stop the operator too
    for variant in args.variants:
        print(
            f"== {variant}: {args.tasks} Transcriptions, cap {args.cap}, timeout {args.timeout} s", flush=True
        )
        result = await run_variant(variant, args, work)
        report["results"].append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=1), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--cap", type=int, default=4, help="OPERATOR_MAX_CONCURRENT_JOBS")
    parser.add_argument("--variants", default="before,after", help="comma-separated: before, after")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per variant")
    parser.add_argument("--batch", type=int, default=50, help="Transcriptions created concurrently")
    parser.add_argument("--job-seconds", type=float, default=0.0, help="how long each runner Job runs")
    parser.add_argument("--trace", default="", help="log every request whose URL names this (a resource)")
    parser.add_argument("--out", type=Path, default=None, help="report path without suffix")
    parser.add_argument(
        "--render",
        type=Path,
        nargs="+",
        help="only write the .md again from these .json reports (one section each), with --reading",
    )
    parser.add_argument("--reading", type=Path, help="markdown appended to a --render report")
    args = parser.parse_args()
    if args.render:
        reports = [json.loads(p.read_text()) for p in args.render]
        parts = [markdown(reports[0])] + [markdown(r, title="## Also measured") for r in reports[1:]]
        if args.reading:
            parts.append("## Reading\n\n" + args.reading.read_text())
        out = args.out or args.render[0].with_suffix("")
        out.with_suffix(".md").write_text("\n".join(parts))
        print(f"wrote {out}.md", flush=True)
        return
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not set(args.variants) <= {"before", "after"}:
        parser.error("--variants: before, after")
    report = asyncio.run(main_async(args))
    out = args.out or RESULTS / f"{report['date']}-operator-load"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {out}.md and .json", flush=True)


if __name__ == "__main__":
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where it is
    with contextlib.suppress(KeyboardInterrupt):
        main()
