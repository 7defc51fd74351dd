"""Every API error is JSON `{"detail": "...", "code": "..."}`; tracebacks only when debug is on."""

from __future__ import annotations

import logging
import traceback
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("maie.api")


class ApiError(Exception):
    """An error the client can act on: HTTP status, stable code, one clear sentence."""

    def __init__(self, status_code: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.headers = headers


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "queue_full",
    500: "internal_error",
    503: "unavailable",
}


# Routes that OpenAI clients call: their errors also carry OpenAI's `error` object, which those
# clients read their message from (MAIE's own `detail` and `code` stay).
OPENAI_PREFIXES = ("/v1/audio/",)


def error_body(code: str, detail: str) -> dict[str, str]:
    return {"detail": detail, "code": code}


def _for(request: Request, status_code: int, body: dict[str, object]) -> dict[str, object]:
    if request.url.path.startswith(OPENAI_PREFIXES):
        kind = "server_error" if status_code >= 500 else "invalid_request_error"
        body["error"] = {"message": body["detail"], "type": kind, "param": None, "code": body["code"]}
    return body


def _format_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI, debug: bool) -> None:
    """Map every exception to the one error shape (and never leak internals unless debug)."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        body = _for(request, exc.status_code, dict(error_body(exc.code, exc.detail)))
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        body = _for(request, exc.status_code, dict(error_body(code, detail)))
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = _for(request, 422, dict(error_body("validation_error", _format_validation(exc))))
        return JSONResponse(body, status_code=422)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s: %s", type(exc).__name__, exc, exc_info=exc)
        body: dict[str, object] = dict(error_body("internal_error", "internal server error"))
        if debug:
            body["detail"] = f"{type(exc).__name__}: {exc}"
            body["traceback"] = traceback.format_exception(exc)
        return JSONResponse(_for(request, 500, body), status_code=500)
