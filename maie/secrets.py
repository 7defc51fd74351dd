"""Secrets a deployment needs but a new user should not have to make: generated once, kept owner-only.

Embedded mode must be protected out of the box, so without SECRET_API_KEY (or WEBHOOK_SECRET) a random
value is created on first start in DATA_DIR (mode 0600) and reused afterwards. Paths are printed,
never the secrets.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from pydantic import SecretStr

log = logging.getLogger("maie.secrets")

API_KEY_FILE = "api-key"  # in DATA_DIR: the API reads it, `maie doctor` checks its mode


def api_key_file(data_dir: str | Path) -> Path:
    """Where the generated API key is kept (here, in core, so the runner's doctor needs no api)."""
    return Path(data_dir) / API_KEY_FILE


def stored_secret(configured: SecretStr | None, path: Path) -> tuple[str, Path | None]:
    """(the secret, the file it came from — or None when it was configured)."""
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value(), None
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            pass
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
            log.info("generated a new secret in %s", path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o); setting it to 0600", path, mode)
        path.chmod(0o600)
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise RuntimeError(f"{path} is empty: delete it to generate a new one, or configure it")
    return value, path
