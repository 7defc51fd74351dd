"""API-key auth: `X-API-Key` compared in constant time; a generated key when none is configured.

Embedded mode must be protected out of the box, so without SECRET_API_KEY a random key is created on
first start and kept in DATA_DIR/api-key (mode 0600). Its path is printed, never the key itself.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from maie.api.errors import ApiError
from maie.secrets import api_key_file, stored_secret
from maie.settings import Settings

log = logging.getLogger("maie.api.auth")

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="SECRET_API_KEY, or the key generated in DATA_DIR/api-key.",
)


bearer_scheme = HTTPBearer(
    auto_error=False,
    description="The same key as `Authorization: Bearer <key>` (what OpenAI clients send).",
)


def key_file(settings: Settings) -> Path:
    return api_key_file(settings.data_dir)


def resolve_api_key(settings: Settings) -> tuple[str, Path | None]:
    """(the key, the file it came from or None when SECRET_API_KEY is set)."""
    return stored_secret(settings.secret_api_key, key_file(settings))


async def require_api_key(
    request: Request,
    api_key: str | None = Security(api_key_header),
    bearer: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
) -> None:
    """Dependency for every /v1 route: 401 without the right key.

    `X-API-Key` is MAIE's header; `Authorization: Bearer <key>` is accepted too, so OpenAI clients
    work unchanged. When both are sent, X-API-Key is the one checked. Which one was used is kept in
    `request.state.auth_scheme` (GET /v1/models answers Bearer clients in OpenAI's shape).
    """
    expected: str = request.app.state.api_key
    scheme, key = ("x-api-key", api_key) if api_key else ("bearer", bearer.credentials if bearer else None)
    if not key:
        raise ApiError(
            401, "missing_api_key", "send your API key in the X-API-Key header (or Authorization: Bearer)"
        )
    if not hmac.compare_digest(key.encode("utf-8"), expected.encode("utf-8")):
        where = "X-API-Key header" if scheme == "x-api-key" else "bearer token"
        raise ApiError(401, "invalid_api_key", f"the {where} does not match the configured key")
    request.state.auth_scheme = scheme
