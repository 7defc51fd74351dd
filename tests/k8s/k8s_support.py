"""Running the real operator in a thread against KMock, and waiting without blocking KMock's loop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import kopf
from kopf.testing import KopfRunner
from maie.operator.main import build, configure

from maie.settings import Settings

T = TypeVar("T")

TX = "maie.io/v1alpha1/transcriptions"
JOBS = "batch/v1/jobs"
PODS = "v1/pods"
NS = "ns1"


@asynccontextmanager
async def running_operator(settings: Settings, namespaces: list[str]) -> AsyncIterator[KopfRunner]:
    """`maie operator` in a thread; entered and left in threads so KMock (this loop) keeps serving."""
    registry, _ = build(settings, namespaces)
    args = ["run", "--standalone", "--verbose", *[a for ns in namespaces for a in ("--namespace", ns)]]
    runner = KopfRunner(args, registry=registry, settings=configure(kopf.OperatorSettings()), timeout=30)
    await asyncio.to_thread(runner.__enter__)
    try:
        yield runner
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)


async def eventually(check: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy (asyncio.sleep: KMock serves from this loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (KeyError, LookupError, AttributeError, TypeError) as exc:
            last = exc
        else:
            if last:
                return last
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        await asyncio.sleep(0.05)


def tx_body(name: str, spec: dict[str, Any] | None = None, *, uid: str | None = None) -> dict[str, Any]:
    """A Transcription as kubectl would send it; KMock sets no uid/resourceVersion, so we do."""
    return {
        "apiVersion": "maie.io/v1alpha1",
        "kind": "Transcription",
        "metadata": {"name": name, "namespace": NS, "uid": uid or str(uuid.uuid4()), "resourceVersion": "1"},
        "spec": spec
        or {"audio": {"uri": f"s3://maie/audio/{name}/raw.flac"}, "features": ["raw_transcript"]},
    }
