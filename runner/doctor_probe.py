"""One `maie doctor` probe, run in a child process so that a native crash kills only the probe.

    python -X faulthandler -m maie.runner.doctor_probe llama-build
    python -X faulthandler -m maie.runner.doctor_probe llm MODEL        # MODEL '' = the default GGUF
    python -X faulthandler -m maie.runner.doctor_probe asr BACKEND MODEL

Protocol (stdout, one line each, flushed): `stage: <what starts now>` before every step, then
`result: <json>` at the end. The parent names the last stage it saw when the child dies of a signal
(SIGSEGV, SIGILL …); faulthandler writes the Python stack of the crash to stderr. Exit 0 when the step
worked, 1 when it raised (the result carries the error). Settings come from the environment and
.env, as for every other command. Nothing is written but what the backends write anyway (the joined
`base` model in CACHE_DIR).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

# Probe audio: one second at 16 kHz, a tone in light noise (the model has to decode something).
SAMPLE_RATE = 16000


def stage(text: str) -> None:
    print(f"stage: {text}", flush=True)


def result(payload: dict[str, Any]) -> None:
    print("result: " + json.dumps(payload), flush=True)


def probe_llama_build() -> dict[str, Any]:
    stage("import llama_cpp (loads libllama and libggml-cpu)")
    import llama_cpp

    stage("llama_print_system_info")
    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    return {"system_info": info, "version": llama_cpp.__version__, "module": llama_cpp.__file__}


def probe_llm(model: str | None) -> dict[str, Any]:
    from maie.runner.llm.base import ChatMessage, GenerationParams
    from maie.runner.llm.llama_cpp import LlamaCppBackend
    from maie.settings import Settings

    settings = Settings()
    backend = LlamaCppBackend(settings, model=model)
    stage("import llama_cpp (loads libllama and libggml-cpu)")
    import llama_cpp  # noqa: F401

    stage(f"load {backend.model_path} (n_ctx {backend.context_tokens}, {backend.threads} threads)")
    started = time.monotonic()
    backend.load()
    loaded = time.monotonic() - started
    stage("generate one token")
    text = backend.complete(
        [ChatMessage("user", "Reply with the word OK.")], GenerationParams(max_tokens=1, temperature=0.0)
    )
    stage("unload")
    backend.unload()
    return {"model_path": str(backend.model_path), "load_seconds": round(loaded, 2), "token": text}


def probe_asr(backend_name: str, model: str) -> dict[str, Any]:
    import numpy as np

    from maie.contract import AsrOptions
    from maie.runner.asr import create_asr_backend
    from maie.runner.asr.base import AsrInput
    from maie.settings import Settings

    settings = Settings()
    # No VAD (it would drop the probe audio and decode nothing), beam 1, sequential: fast.
    options = AsrOptions(model=model, vad_filter=False, beam_size=1, batch_size=0)
    stage(f"create the {backend_name} backend")
    backend = create_asr_backend(backend_name, settings, options)
    path = getattr(backend, "model_path", model)
    stage(f"load {path}")
    started = time.monotonic()
    backend.load()
    loaded = time.monotonic() - started
    t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    rng = np.random.default_rng(0)
    samples = (0.1 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)
    stage("transcribe 1 s of audio")
    segments = list(backend.transcribe(AsrInput(samples, SAMPLE_RATE, 1.0)))
    stage("unload")
    backend.unload()
    return {"model_path": str(path), "load_seconds": round(loaded, 2), "segments": len(segments)}


def main(argv: list[str]) -> int:
    kind, args = (argv[0], argv[1:]) if argv else ("", [])
    try:
        if kind == "llama-build":
            out = probe_llama_build()
        elif kind == "llm" and len(args) == 1:
            out = probe_llm(args[0] or None)
        elif kind == "asr" and len(args) == 2:
            out = probe_asr(args[0], args[1])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc).strip() or type(exc).__name__
        result({"ok": False, "error": message, "error_type": type(exc).__name__})
        return 1
    result({"ok": True, **out})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
