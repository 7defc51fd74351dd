"""ChunkFormer backend: real loading and decoding code on a tiny random checkpoint (CPU), and the real
khanhld/chunkformer-large-vie on a GPU where it is present under MODELS_DIR."""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path

import pytest
from backend_support import cuda_device, load_audio, needs_chunkformer

from maie.contract import AsrOptions
from maie.errors import MaieError, ModelNotFoundError
from maie.runner.asr import create_asr_backend
from maie.runner.asr.base import AsrInput
from maie.runner.asr.chunkformer import ChunkFormerBackend, parse_timestamp
from maie.settings import Settings, get_settings
from tests.conftest import RECORDINGS, recording


def _settings(settings: Settings, model_dir: Path, **overrides: object) -> Settings:
    return settings.model_copy(
        update={
            "models_dir": model_dir.parent.parent,
            "chunkformer_model_name": model_dir.name,
            "chunkformer_device": "cpu",
            **overrides,
        }
    )


def _input(name: str) -> AsrInput:
    samples, duration = load_audio(name)
    return AsrInput(samples=samples, sample_rate=16000, duration=duration)


def _sha256_of_dir(path: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file() and not q.name.startswith(".")):
        digest.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes())
    return digest.hexdigest()


def test_parse_timestamp() -> None:
    assert parse_timestamp("00:00:02:160") == pytest.approx(2.16)
    assert parse_timestamp("01:02:03:004") == pytest.approx(3723.004)
    with pytest.raises(ValueError):
        parse_timestamp("00:02:160")


def test_missing_model_names_path_and_script(settings: Settings) -> None:
    backend = create_asr_backend("chunkformer", settings, AsrOptions())
    with pytest.raises(ModelNotFoundError) as err:
        backend.load()
    assert str(settings.models_dir / "asr" / "khanhld/chunkformer-large-vie") in err.value.message
    assert "download_models.sh" in err.value.message


def test_incomplete_model_dir_names_missing_file(settings: Settings, tmp_path: Path) -> None:
    broken = tmp_path / "models" / "asr" / "broken"
    broken.mkdir(parents=True)
    (broken / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    backend = ChunkFormerBackend(_settings(settings, broken), AsrOptions())
    with pytest.raises(ModelNotFoundError, match=r"lacks config\.yaml"):
        backend.load()


@needs_chunkformer
def test_tiny_checkpoint_decodes_real_recording(settings: Settings, tiny_chunkformer_dir: Path) -> None:
    import torch

    cfg = _settings(settings, tiny_chunkformer_dir)
    backend = create_asr_backend("chunkformer", cfg, AsrOptions())
    assert isinstance(backend, ChunkFormerBackend)
    assert backend.punctuates is False
    backend.load()
    try:
        # from_pretrained loads with strict=False (a missing key is only logged): compare tensors.
        saved = torch.load(tiny_chunkformer_dir / "pytorch_model.bin", map_location="cpu")
        live = backend.model.model.state_dict()
        # global_cmvn comes from its own file (our builder's mean 10, variance 9 → istd 1/3).
        assert set(live) - set(saved) == {"encoder.global_cmvn.mean", "encoder.global_cmvn.istd"}
        assert torch.allclose(live["encoder.global_cmvn.mean"], torch.full((80,), 10.0))
        assert torch.allclose(live["encoder.global_cmvn.istd"], torch.full((80,), 1 / 3))
        for key, tensor in saved.items():
            assert torch.equal(tensor, live[key]), key

        audio = _input("en_2spk_conversation_pyannote_sample.wav")
        segments = list(backend.transcribe(audio))
        info = backend.result_info()
        version = backend.version()
    finally:
        backend.unload()
    assert backend.model is None

    # Several timestamped segments (the calibrated blank gives breaks), in order, inside the audio.
    assert len(segments) >= 2
    assert all(re.fullmatch(r"[a-z ]+", s.text) for s in segments), [s.text for s in segments]
    for before, after in itertools.pairwise(segments):
        assert before.end <= after.start
    assert all(0.0 <= s.start < s.end <= audio.duration for s in segments)
    assert segments[-1].end > audio.duration - 2.0  # the decode reached the end of the recording

    assert info.duration == pytest.approx(audio.duration)
    assert info.segments == segments
    assert info.speech_duration is not None and 0 < info.speech_duration <= audio.duration

    assert version.name == "chunkformer"
    assert version.inference == "endless_decode"
    assert version.device == "cpu"
    assert version.model_path == str(tiny_chunkformer_dir.resolve())
    assert version.checkpoint_hash == _sha256_of_dir(tiny_chunkformer_dir)
    assert version.decoding_params == {
        "chunk_size": 64,
        "left_context_size": 128,
        "right_context_size": 128,
        "total_batch_duration": 14400,
        "return_timestamps": True,
        "max_silence_duration": 0.5,
    }
    assert version.library_version == "1.2.2"


@needs_chunkformer
def test_multi_window_decoding_matches_single_window(settings: Settings, tiny_chunkformer_dir: Path) -> None:
    """A 30 s recording in ~5 s windows (attention/conv caches carried over) equals one pass."""
    audio = _input("en_2spk_conversation_pyannote_sample.wav")
    results = []
    for total in (14400, 12):
        backend = ChunkFormerBackend(
            _settings(settings, tiny_chunkformer_dir, chunkformer_total_batch_duration=total), AsrOptions()
        )
        backend.load()
        try:
            results.append((list(backend.transcribe(audio)), backend.result_info()))
        finally:
            backend.unload()
    (single, single_info), (multi, multi_info) = results
    assert single_info.extra["windows"] == 1
    assert multi_info.extra["windows"] >= 5
    assert [s.text for s in multi] == [s.text for s in single]
    assert [(s.start, s.end) for s in multi] == [(s.start, s.end) for s in single]


@needs_chunkformer
def test_window_too_short_is_a_clear_error(settings: Settings, tiny_chunkformer_dir: Path) -> None:
    cfg = _settings(settings, tiny_chunkformer_dir, chunkformer_total_batch_duration=5)
    backend = ChunkFormerBackend(cfg, AsrOptions())
    backend.load()
    try:
        with pytest.raises(MaieError, match=r"at least 10\.24 s"):
            list(backend.transcribe(_input("en_timit_LDC93S1.wav")))
    finally:
        backend.unload()


@needs_chunkformer
def test_no_timestamps_gives_one_segment(settings: Settings, tiny_chunkformer_dir: Path) -> None:
    cfg = _settings(settings, tiny_chunkformer_dir, chunkformer_return_timestamps=False)
    backend = ChunkFormerBackend(cfg, AsrOptions())
    backend.load()
    try:
        segments = list(backend.transcribe(_input("en_2spk_conversation_pyannote_sample.wav")))
    finally:
        backend.unload()
    assert len(segments) == 1
    assert segments[0].start < segments[0].end


# --------------------------------------------------------------------------------------
# The real model, on a GPU
# --------------------------------------------------------------------------------------
REAL_MODEL = "khanhld/chunkformer-large-vie"


def _real_model_dir() -> Path | None:
    from maie.model_paths import resolve_model_dir

    try:
        return resolve_model_dir(REAL_MODEL, get_settings(), "asr")
    except ModelNotFoundError:
        return None


@pytest.mark.gpu
@needs_chunkformer
@pytest.mark.skipif(
    _real_model_dir() is None, reason=f"{REAL_MODEL} is not under MODELS_DIR (scripts/download_models.sh)"
)
@pytest.mark.skipif(not cuda_device(), reason="needs a CUDA GPU (none on this machine)")
def test_real_chunkformer_large_vie_on_gpu() -> None:
    import jiwer

    cfg = get_settings().model_copy(
        update={"chunkformer_device": "cuda", "chunkformer_model_name": REAL_MODEL}
    )
    backend = ChunkFormerBackend(cfg, AsrOptions())
    backend.load()
    refs = {name: rec.reference for name, rec in RECORDINGS.items() if rec.language == "vi" and rec.reference}
    if not refs:
        recording("vi_vivos_VIVOSDEV01_R002.wav")  # skips, saying why VIVOS is not in tests/data
    try:
        for name, ref in refs.items():
            hyp = " ".join(s.text for s in backend.transcribe(_input(name)))
            assert jiwer.wer(ref.lower(), hyp.lower()) < 0.35, (name, hyp)
        assert backend.version().device == "cuda"
    finally:
        backend.unload()


@needs_chunkformer
def test_pipeline_runs_chunkformer_end_to_end(settings: Settings, tiny_chunkformer_dir: Path) -> None:
    """The runner's own pipeline (preprocess → its 16 kHz wav → ChunkFormer) with the tiny model."""
    from maie.contract import Feature, TaskRequest, TaskStatus
    from maie.runner.pipeline import run_pipeline

    cfg = _settings(settings, tiny_chunkformer_dir)
    request = TaskRequest(features=[Feature.RAW_TRANSCRIPT], asr=AsrOptions(backend="chunkformer"))
    audio = recording("en_2spk_conversation_pyannote_sample.wav").path
    doc, _ = run_pipeline(audio, request, settings=cfg, task_id="cf-e2e")
    assert doc.status == TaskStatus.COMPLETE, doc.error
    assert doc.versions is not None and doc.versions.asr_backend is not None
    assert doc.versions.asr_backend.name == "chunkformer"
    assert doc.versions.asr_backend.inference == "endless_decode"
    assert doc.results is not None and doc.results.raw_transcript
    assert doc.metrics is not None and doc.metrics.stage_seconds.get("asr", 0) > 0
