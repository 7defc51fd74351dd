"""Webhooks: when a task ends (COMPLETE or FAILED), POST its status document to its `callback_url`.

The queue owner delivers (the embedded executor, or the operator in a cluster), so both modes behave
the same and the runner never needs network access beyond its storage. Each request is signed: the
header `MAIE-Signature: t=<unix seconds>,v1=<hex>` carries HMAC-SHA256(secret, f"{t}.{body}") — the
receiver recomputes it over the raw body with the deployment's WEBHOOK_SECRET, compares with
`hmac.compare_digest`, and rejects old timestamps (replays). Failed deliveries (a connection error,
a timeout, 408, 429 or 5xx) are retried with exponential backoff for WEBHOOK_RETRY_SECONDS; other
4xx answers stop at once. Every attempt is recorded and shown in the task's status (`webhook`).

The URL must not reach this machine or its cloud's metadata service (SSRF, `maie.urls`): checked at
submission and again when delivering (DNS may have changed).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

import httpx

from maie.contract import WebhookAttempt, WebhookStatus
from maie.errors import MaieError
from maie.settings import Settings
from maie.urls import UrlRefused, check_outbound_url

log = logging.getLogger("maie.webhooks")

SIGNATURE_HEADER = "MAIE-Signature"
FIRST_DELAY = 1.0
MAX_DELAY = 60.0


class WebhookUrlError(MaieError):
    code = "callback_url_refused"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The MAIE-Signature header value for a body sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """The receiver's side of `signature` (documented recipe; also what the tests use)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def check_url(url: str, settings: Settings, *, resolve: bool = True) -> None:
    """Raise WebhookUrlError when the callback_url may not be called."""
    try:
        check_outbound_url(url, settings, what="callback_url", resolve=resolve)
    except UrlRefused as exc:
        raise WebhookUrlError(exc.message) from None


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


async def deliver(
    url: str,
    body: bytes,
    settings: Settings,
    secret: str,
    record: Callable[[WebhookStatus], Awaitable[None]],
    status: WebhookStatus | None = None,
) -> WebhookStatus:
    """POST the body until it is accepted (2xx), refused for good (other 4xx), or retries run out;
    `record` hears the status after every attempt (the caller stores it where status is read)."""
    status = status or WebhookStatus(url=url)
    deadline = time.monotonic() + settings.webhook_retry_seconds
    delay = FIRST_DELAY
    async with httpx.AsyncClient(timeout=settings.webhook_timeout, follow_redirects=False) as client:
        while True:
            attempt = WebhookAttempt()
            start = time.monotonic()
            retry = True
            try:
                await asyncio.to_thread(check_url, url, settings)
                stamp = int(time.time())
                response = await client.post(
                    url,
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        "User-Agent": "maie-webhook/1",
                        SIGNATURE_HEADER: signature(secret, stamp, body),
                    },
                )
                attempt.status = response.status_code
                if response.is_success:
                    status.state = "delivered"
                    retry = False
                elif not _retryable(response.status_code):
                    status.state, retry = "failed", False
            except WebhookUrlError as exc:
                attempt.error, status.state, retry = exc.message, "failed", False
            except httpx.HTTPError as exc:
                attempt.error = f"{type(exc).__name__}: {exc}"[:300]
            attempt.seconds = round(time.monotonic() - start, 3)
            status.attempts.append(attempt)
            if retry and time.monotonic() + delay > deadline:
                status.state, retry = "failed", False
            await record(status)
            if not retry:
                log.info("webhook %s: %s after %d attempt(s)", url, status.state, len(status.attempts))
                return status
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
