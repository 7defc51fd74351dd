"""ASR backends behind one registry: a name → the class that implements AsrBackend.

Classes are imported only when created, so an optional backend's package is needed only when used.
Each class is constructed as `Backend(settings, options)`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from maie.errors import BackendUnavailableError

if TYPE_CHECKING:
    from maie.contract import AsrOptions
    from maie.runner.asr.base import AsrBackend
    from maie.settings import Settings

# Implementations under the names maie.settings declares (ASR_BACKEND_NAMES; a test checks both agree).
ASR_BACKENDS: dict[str, str] = {
    "whisper": "maie.runner.asr.whisper:WhisperBackend",
    "chunkformer": "maie.runner.asr.chunkformer:ChunkFormerBackend",
}


def create_asr_backend(name: str, settings: Settings, options: AsrOptions) -> AsrBackend:
    if name not in ASR_BACKENDS:
        raise BackendUnavailableError(f"unknown ASR backend '{name}' (known: {', '.join(ASR_BACKENDS)})")
    module_name, _, class_name = ASR_BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"ASR backend '{name}' is not installed here: {exc}") from exc
    backend: AsrBackend = getattr(module, class_name)(settings, options)
    return backend
