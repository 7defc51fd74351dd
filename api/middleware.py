"""Per-request context: a request id (from X-Request-ID or new) on every log line and the response,
and the request counted in the HTTP metrics (by route template)."""

from __future__ import annotations

import logging
import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maie import metrics
from maie.logs import request_id_var

log = logging.getLogger("maie.api.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class RequestContextMiddleware:
    """Pure ASGI (no body buffering, unlike BaseHTTPMiddleware): uploads keep streaming."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        # A random id (not uuid4, which reads os.urandom on every request: ids need not be unguessable).
        request_id = incoming if _VALID_ID.match(incoming) else f"{random.getrandbits(128):032x}"
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            log.info("%s %s -> %d in %.1f ms", scope.get("method"), scope.get("path"), status, elapsed * 1000)
            # The route's template (set by the router), so ids never become label values.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            method = method if method in _METHODS else "OTHER"
            metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            metrics.HTTP_LATENCY.labels(method=method, route=route).observe(elapsed)
            request_id_var.reset(token)
