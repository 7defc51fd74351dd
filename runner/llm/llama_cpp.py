"""llama.cpp backend (llama-cpp-python): GGUF models on CPU or GPU, JSON-Schema-constrained output.

With a schema, llama.cpp compiles it to a grammar, so every token is forced to keep the JSON
valid against the schema's structure (types, required keys, maxItems, maxLength).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import importlib.util
import json
import os
import re
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from maie.contract import LlmVersion
from maie.errors import LlmError
from maie.model_paths import checkpoint_hash, resolve_gguf
from maie.runner.llm.base import ChatMessage, GenerationParams
from maie.settings import Settings

# llama-cpp-python's own defaults for create_chat_completion (recorded when nothing overrides them).
LIBRARY_DEFAULTS = {"temperature": 0.2, "top_p": 0.95, "top_k": 40, "repetition_penalty": 1.0}

_QUANT = re.compile(r"\b(Q\d(?:_[A-Z0-9]+)*|F16|BF16|F32|IQ\d\w*)\b", re.IGNORECASE)

# Written by `scripts/build_llama_wheel.sh --install` (bootstrap, images): how the installed
# llama-cpp-python was built, and the sha256 of its libggml-cpu.so at install time.
BUILD_RECORD = Path(sys.prefix) / "share" / "maie" / "llama-cpp-build.json"
UNKNOWN = "unknown"


def _cpu_library() -> Path | None:
    """llama_cpp/lib/libggml-cpu.so of the installed package, found without importing it (importing
    loads the native library, which is what may crash on a CPU it was not built for)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib" / "libggml-cpu.so"
    return lib if lib.is_file() else None


@functools.lru_cache(maxsize=1)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def llama_cpp_build(record_path: Path | None = None) -> dict[str, Any]:
    """How the installed llama-cpp-python was built, honestly: its version, and the CPU baseline and
    CMake flags from the build record when the record describes the library installed now (same
    version, same libggml-cpu.so); "unknown" otherwise (pip-installed, or replaced after bootstrap).
    Never imports llama_cpp."""
    record_path = record_path or BUILD_RECORD
    try:
        installed: str | None = package_version("llama-cpp-python")
    except PackageNotFoundError:
        installed = None
    build: dict[str, Any] = {
        "package": f"llama-cpp-python {installed}" if installed else "llama-cpp-python (not installed)",
        "cpu_baseline": UNKNOWN,
        "cmake_args": UNKNOWN,
        "record": None,
    }
    if not record_path.is_file():
        build["note"] = (
            f"no build record ({record_path}): not installed by scripts/build_llama_wheel.sh, so its "
            "flags (possibly GGML_NATIVE=ON, tuned to another CPU) are not known"
        )
        return build
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        build["note"] = f"unreadable build record {record_path}: {exc}"
        return build
    lib = _cpu_library()
    lib_hash = _sha256(lib, lib.stat().st_size, lib.stat().st_mtime_ns) if lib else None
    if record.get("version") != installed or record.get("libggml_cpu_sha256") != lib_hash:
        build["note"] = (
            f"the build record {record_path} describes another build (llama-cpp-python "
            f"{record.get('version')}, key {record.get('key')}) than the library installed now"
        )
        return build
    build.update(
        cpu_baseline=record.get("cpu_baseline", UNKNOWN),
        cmake_args=record.get("cmake_args", UNKNOWN),
        build_key=record.get("key"),
        record=str(record_path),
    )
    return build


@functools.lru_cache(maxsize=1)
def system_info() -> str:
    """llama.cpp's own account of the loaded library: the CPU features it was compiled with."""
    import llama_cpp

    raw: bytes = llama_cpp.llama_print_system_info()
    return raw.decode(errors="replace").strip()


class LlamaCppBackend:
    name = "llama_cpp"
    library_defaults = LIBRARY_DEFAULTS

    def __init__(self, settings: Settings, *, model: str | None, base_url: str | None = None) -> None:
        self.settings = settings
        self.model_path = resolve_gguf(model, settings)
        self.model_name = self.model_path.name
        self.context_tokens = settings.llm_n_ctx
        # llama-cpp-python's own default: half the cores. More threads than free cores make
        # llama.cpp's spinning threads wait on each other: measured here, 2 threads on a busy
        # 2-core machine did not finish 120 tokens in 5 minutes that 1 thread made in 11 s.
        self.threads = settings.llm_threads or max((os.cpu_count() or 2) // 2, 1)
        self._llm: Any = None

    @property
    def generation_config_path(self) -> Path | None:
        """The model author's generation_config.json beside the GGUF file, if any."""
        for candidate in (
            self.model_path.with_suffix(".generation_config.json"),
            self.model_path.parent / "generation_config.json",
            # Bundled models ship without one: MAIE carries theirs in templates/models/.
            self.settings.templates_dir / "models" / f"{self.model_name}.generation_config.json",
        ):
            if candidate.is_file():
                return candidate
        return None

    def load(self) -> None:
        from llama_cpp import Llama

        try:
            self._llm = Llama(
                model_path=str(self.model_path),
                n_ctx=self.settings.llm_n_ctx,
                n_threads=self.threads,
                # Prompt evaluation too: llama-cpp-python's default for it is every core, which on a
                # busy machine made a 30-token prompt take 7.6 s instead of 0.6 s (measured here).
                n_threads_batch=self.threads,
                n_gpu_layers=self.settings.llm_n_gpu_layers,
                seed=0,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise LlmError(f"llama.cpp could not load {self.model_path}: {exc}") from exc

    def count_tokens(self, text: str) -> int:
        assert self._llm is not None, "load() first"
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def complete(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        json_schema: dict[str, Any] | None = None,
    ) -> str:
        assert self._llm is not None, "load() first"
        kwargs: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "max_tokens": params.max_tokens,
            "repeat_penalty": params.repetition_penalty,
        }
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
        try:
            out = self._llm.create_chat_completion(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise LlmError(f"llama.cpp generation failed: {exc}") from exc
        return str(out["choices"][0]["message"]["content"] or "")

    def version(self, task: str, params: GenerationParams, structured: dict[str, Any] | None) -> LlmVersion:
        metadata: dict[str, str] = dict(getattr(self._llm, "metadata", {}) or {})
        template = metadata.get("tokenizer.chat_template")
        chat_template = None
        if template:
            digest = hashlib.sha256(template.encode()).hexdigest()[:16]
            chat_template = f"gguf:tokenizer.chat_template sha256:{digest}"
        match = _QUANT.search(self.model_name)
        return LlmVersion(
            name=self.model_name,
            backend=self.name,
            model_path=str(self.model_path),
            checkpoint_hash=checkpoint_hash(self.model_path, self.settings),
            quantization=match.group(1).upper() if match else metadata.get("general.file_type"),
            task=task,  # type: ignore[arg-type]
            chat_template=chat_template,
            thinking=False,
            reasoning_parser=None,
            decoding_params={
                **params.as_dict(),
                "n_ctx": self.context_tokens,
                "n_threads": self.threads,
                "seed": 0,
            },
            structured_output=structured,
            library_version=f"llama-cpp-python {package_version('llama-cpp-python')}",
            runtime_build={**llama_cpp_build(), "system_info": system_info()},
        )

    def unload(self) -> None:
        if self._llm is not None:
            with contextlib.suppress(Exception):
                self._llm.close()
        self._llm = None
        gc.collect()
