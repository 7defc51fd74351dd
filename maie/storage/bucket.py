"""Create the S3 bucket in the background, retrying until the object store answers.

In a fresh cluster the API usually starts before MinIO (or before an external S3 is reachable): one
attempt at start-up would leave the bucket missing for good and readiness red forever, and `helm
install --wait` would time out. Why here and not in a chart hook Job: a post-install hook runs only
after `--wait` has seen the API ready, and readiness needs the bucket (a deadlock); a pre-install hook
runs before MinIO exists. The API is the one component that writes first (uploads), it already has
the credentials, and this works the same for installs without Helm and for an external S3. The
operator runs the same retry, for installs without the API (kubectl only).

Each failure is logged once per attempt with the next delay; success is logged once. A store that
forbids creating buckets (a locked-down S3 where the bucket is made by its owners) keeps failing
here; readiness says why (the storage check), and creating the bucket by hand ends the retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

log = logging.getLogger("maie.storage.bucket")

# Seconds between attempts: 1, 2, 4 … then every MAX_WAIT seconds, for as long as the API runs.
FIRST_WAIT = 1.0
MAX_WAIT = 30.0


class BucketStore(Protocol):
    bucket: str
    endpoint: str

    def ensure_bucket(self) -> None: ...


class BucketCreator:
    """Runs `store.ensure_bucket()` in a background task until it succeeds (or `stop()`)."""

    def __init__(self, store: BucketStore) -> None:
        self.store = store
        self.ready = asyncio.Event()
        self.last_error: str | None = None
        self.attempts = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="maie-ensure-bucket")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _before_sleep(self, state: RetryCallState) -> None:
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "S3 bucket %r at %s not ready (attempt %d: %s); retrying in %.0f s",
            self.store.bucket,
            self.store.endpoint,
            state.attempt_number,
            self.last_error,
            delay,
        )

    async def _attempt(self) -> None:
        self.attempts += 1
        try:
            await asyncio.to_thread(self.store.ensure_bucket)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise

    async def _run(self) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=FIRST_WAIT, max=MAX_WAIT),
            before_sleep=self._before_sleep,
            reraise=True,
        ):
            with attempt:
                await self._attempt()
        self.last_error = None
        self.ready.set()
        log.info("S3 bucket %r at %s is ready", self.store.bucket, self.store.endpoint)
