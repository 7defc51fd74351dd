"""API-key auth: `X-API-Key` compared in constant time; a generated key when none is configured.

Embedded mode must be protected out of the box, so without SECRET_API_KEY a random key is created on
first start and kept in DATA_DIR/api-key (mode 0600). Its path is printed, never the key itself.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from maie.api.errors import ApiError
from maie.secrets import stored_secret
from maie.settings import Settings

log = logging.getLogger("maie.api.auth")

KEY_FILE = "api-key"

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="SECRET_API_KEY, or the key generated in DATA_DIR/api-key.",
)


def key_file(settings: Settings) -> Path:
    return Path(settings.data_dir) / KEY_FILE


def resolve_api_key(settings: Settings) -> tuple[str, Path | None]:
    """(the key, the file it came from or None when SECRET_API_KEY is set)."""
    return stored_secret(settings.secret_api_key, key_file(settings))


async def require_api_key(request: Request, api_key: str | None = Security(api_key_header)) -> None:
    """Dependency for every /v1 route: 401 without the right key."""
    expected: str = request.app.state.api_key
    if not api_key:
        raise ApiError(401, "missing_api_key", "send your API key in the X-API-Key header")
    if not hmac.compare_digest(api_key.encode("utf-8"), expected.encode("utf-8")):
        raise ApiError(401, "invalid_api_key", "the X-API-Key header does not match the configured key")
