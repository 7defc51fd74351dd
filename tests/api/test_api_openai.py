"""POST /v1/audio/transcriptions and GET /v1/models with the real `openai` Python client, unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from api_support import AUDIO, JFK, JFK_TEXT, ApiServer, running_server, wer

JFK_MP3 = AUDIO / "en_jfk_inaugural.mp3"
LONG = AUDIO / "en_hp0_henry_f_phillips_spoken_wikipedia.ogg"  # 4.5 min, over the test server's 60 s


@pytest.fixture
def oai(server: ApiServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0) as c:
        yield c


def transcribe(client: openai.OpenAI, path: Path, **kwargs: object) -> object:
    with path.open("rb") as fh:
        return client.audio.transcriptions.create(model="whisper-1", file=fh, **kwargs)  # type: ignore[call-overload]


def test_openai_client_transcribes_jfk_in_every_format(oai: openai.OpenAI) -> None:
    # json (the default): {"text"}
    result = transcribe(oai, JFK_MP3)
    assert wer(JFK_TEXT, result.text) < 0.2, result.text  # type: ignore[attr-defined]

    text = transcribe(oai, JFK, response_format="text")
    assert isinstance(text, str) and wer(JFK_TEXT, text) < 0.2, text

    srt = transcribe(oai, JFK, response_format="srt")
    assert isinstance(srt, str)
    blocks = [b for b in srt.strip().split("\n\n") if b]
    assert blocks[0].splitlines()[0] == "1"
    assert "00:00:00,000 --> 00:00:" in blocks[0]
    assert wer(JFK_TEXT, " ".join(" ".join(b.splitlines()[2:]) for b in blocks)) < 0.2

    vtt = transcribe(oai, JFK, response_format="vtt")
    assert isinstance(vtt, str) and vtt.startswith("WEBVTT\n") and "00:00:00.000 --> " in vtt

    verbose = transcribe(
        oai, JFK, response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert verbose.language == "english"  # type: ignore[attr-defined]
    assert 10.5 < verbose.duration < 11.5  # type: ignore[attr-defined]
    assert wer(JFK_TEXT, verbose.text) < 0.2  # type: ignore[attr-defined]
    segments = verbose.segments  # type: ignore[attr-defined]
    assert segments and [s.id for s in segments] == list(range(len(segments)))
    for seg in segments:
        assert 0 <= seg.start < seg.end <= 11.5 and seg.text
        assert isinstance(seg.tokens, list) and isinstance(seg.seek, int)
        assert seg.avg_logprob < 0 and 0 <= seg.no_speech_prob <= 1
        assert seg.compression_ratio > 0 and seg.temperature >= 0
    words = verbose.words  # type: ignore[attr-defined]
    assert [w.word for w in words[:5]] == ["And", "so", "my", "fellow", "Americans"] or len(words) > 15
    assert all(w.start <= w.end for w in words) and words[-1].end <= 11.5


def test_models_list_in_openai_shape_without_breaking_maie_listing(
    oai: openai.OpenAI, client: httpx.Client, server: ApiServer
) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {"whisper-1", "tiny.en"} <= ids
    own = client.get("/v1/models").json()  # X-API-Key: MAIE's listing, as before
    assert {m["backend_id"] for m in own["asr"]} >= {"whisper"} and own["llm"]
    forced = client.get("/v1/models", params={"format": "openai"}).json()
    assert forced["object"] == "list" and {m["id"] for m in forced["data"]} == ids
    bearer = httpx.get(
        f"{server.base_url}/v1/models",
        params={"format": "maie"},
        headers={"Authorization": f"Bearer {server.api_key}"},
    ).json()
    assert "asr" in bearer


def test_openai_errors_are_clear_and_queue_nothing(
    oai: openai.OpenAI, server: ApiServer, client: httpx.Client
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as err, JFK.open("rb") as fh:
        oai.audio.transcriptions.create(model="gpt-imaginary", file=fh)
    assert "not an ASR model here" in str(err.value) and "whisper-1" in str(err.value)
    assert err.value.body["code"] == "model_not_found"  # type: ignore[index]

    with pytest.raises(openai.UnprocessableEntityError, match="response_format"):
        transcribe(oai, JFK, response_format="mp3")

    before = client.get("/health").json()["queue_depth"]
    with pytest.raises(openai.UnprocessableEntityError, match="TRANSCRIPTIONS_MAX_DURATION_SECONDS"):
        transcribe(oai, LONG)
    assert client.get("/health").json()["queue_depth"] == before

    with pytest.raises(openai.APIStatusError) as bad:
        transcribe(oai, Path(__file__))  # a .py file
    assert bad.value.status_code == 415

    wrong = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="bearer token"):
        transcribe(wrong, JFK)


def test_timeout_cancels_the_task(tmp_path: Path) -> None:
    # One second is less than starting a worker and loading the model takes.
    with running_server(tmp_path / "data", secret_api_key="k", transcriptions_timeout=1) as srv:
        oai = openai.OpenAI(base_url=f"{srv.base_url}/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            transcribe(oai, JFK)
        assert err.value.status_code == 504
        assert err.value.body["code"] == "transcription_timeout"  # type: ignore[index]
        health = httpx.get(f"{srv.base_url}/health").json()
        assert health["queue_depth"] == 0, health  # cancelled, not left running
