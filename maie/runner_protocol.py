"""How a queue owner talks to the one task runner: what it hands over, and what the exit code means.

The embedded executor starts `python -m maie.runner.task --stdin` and writes a `LocalJob` to it; the
operator's Job runs `maie run-task` with the task's JSON in the MAIE_TASK environment variable. Both
read the same exit codes. Kept in the core so neither queue owner imports the runner (and its model
runtimes): the API and operator image carries none.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from maie.contract import RunnerTask
from maie.settings import Settings

EXIT_OK = 0  # finished: result.json says COMPLETE
EXIT_RETRYABLE = 1  # infrastructure trouble (storage unreachable): another attempt may succeed
EXIT_TASK_FAILED = 2  # the task itself failed (bad audio, missing model): result.json says FAILED

TASK_ENV = "MAIE_TASK"
WORKER_MODULE = "maie.runner.task"


class LocalJob(BaseModel):
    """What the embedded executor sends a worker on stdin (settings included: secrets stay off argv)."""

    task: RunnerTask
    objects_root: str
    parent_pid: int
    settings: dict[str, Any]


def settings_payload(settings: Settings) -> dict[str, Any]:
    """Settings as plain JSON for the worker, secrets included (they travel over a pipe only)."""
    data: dict[str, Any] = json.loads(settings.model_dump_json())
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if hasattr(value, "get_secret_value"):
            data[name] = value.get_secret_value()
    return data
