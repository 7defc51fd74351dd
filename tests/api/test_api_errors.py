"""Every error code of the contract, each triggered by a real HTTP request to a real server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_support import (
    JFK,
    LIBRI,
    MAX_FILE_SIZE_MB,
    TIMIT,
    ApiServer,
    multipart,
    running_server,
    trimmed_wav,
    wav_header,
)

pytestmark = pytest.mark.e2e

MB = 1024 * 1024


def assert_error(response: httpx.Response, status: int, code: str, words: str = "") -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail", "code"}, body  # the one error shape, no internals
    assert body["code"] == code, body
    assert words.lower() in body["detail"].lower(), body
    assert "Traceback" not in response.text
    return body  # type: ignore[no-any-return]


def no_leftovers(server: ApiServer) -> None:
    """Refused uploads leave nothing behind: no staged part files."""
    staged = list((server.data_dir / "uploads").glob("*"))
    assert staged == [], staged


def audio_dirs(server: ApiServer) -> set[str]:
    root = server.data_dir / "objects" / "audio"
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


# --- 401 -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("GET", "/v1/templates"),
        ("GET", f"/v1/status/{uuid.uuid4()}"),
        ("DELETE", f"/v1/tasks/{uuid.uuid4()}"),
        ("POST", "/v1/process"),
    ],
)
def test_401_without_or_with_wrong_key(anon: httpx.Client, method: str, path: str) -> None:
    assert_error(anon.request(method, path), 401, "missing_api_key", "X-API-Key")
    wrong = anon.request(method, path, headers={"X-API-Key": "not-the-key"})
    assert_error(wrong, 401, "invalid_api_key", "does not match")


def test_health_and_docs_are_public(anon: httpx.Client) -> None:
    assert anon.get("/health").status_code == 200
    assert anon.get("/docs").status_code == 200
    spec = anon.get("/openapi.json").json()
    assert {"/v1/process", "/v1/status/{task_id}", "/v1/tasks/{task_id}", "/health"} <= set(spec["paths"])
    # The streaming endpoint still documents its multipart body.
    body = spec["paths"]["/v1/process"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["properties"]["file"]["format"] == "binary"


def test_generated_key_is_owner_only_and_never_logged(server: ApiServer) -> None:
    key_file = server.data_dir / "api-key"
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    log = server.log_text()
    assert str(key_file) in log  # `maie serve` says where the key is …
    assert server.api_key not in log  # … and never what it is


# --- 400 -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "filename", ["../../etc/cron.d/x.wav", "a/b.wav", "..\\\\x.wav", "..wav", ".hidden.wav"]
)
def test_400_path_tricks_in_filename(client: httpx.Client, server: ApiServer, filename: str) -> None:
    body, headers = multipart(filename, "audio/wav", TIMIT.read_bytes(), [("features", "raw_transcript")])
    assert_error(client.post("/v1/process", content=body, headers=headers), 400, "invalid_filename")
    no_leftovers(server)


def test_400_malformed_multipart(client: httpx.Client) -> None:
    headers = {"Content-Type": "multipart/form-data"}  # no boundary
    assert_error(client.post("/v1/process", content=b"x", headers=headers), 400, "malformed_multipart")


# --- 413 -----------------------------------------------------------------------------------
def test_413_while_streaming_and_partial_file_removed(client: httpx.Client, server: ApiServer) -> None:
    """A chunked upload (no Content-Length): the limit can only be enforced while bytes arrive."""
    size = (MAX_FILE_SIZE_MB + 1) * MB
    head, headers = multipart("big.wav", "audio/wav", b"", [("features", "raw_transcript")])
    opening, closing = head.split(b"\r\n\r\n\r\n")  # the empty file part: split around its data
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield opening + b"\r\n\r\n" + wav_header(size)
        block = bytes(64 * 1024)
        while sent < size:
            sent += len(block)
            yield block
        yield b"\r\n" + closing

    before = audio_dirs(server)
    response = client.post("/v1/process", content=chunks(), headers=headers)
    assert_error(response, 413, "file_too_large", f"{MAX_FILE_SIZE_MB} MB")
    no_leftovers(server)
    assert audio_dirs(server) == before
    assert f"larger than {MAX_FILE_SIZE_MB * MB} bytes; partial file removed" in server.log_text()


def test_413_from_content_length_before_reading(client: httpx.Client, server: ApiServer) -> None:
    body, headers = multipart("big.wav", "audio/wav", wav_header(4 * MB) + bytes(4 * MB))
    assert_error(client.post("/v1/process", content=body, headers=headers), 413, "file_too_large")
    no_leftovers(server)


# --- 415 -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("filename", "ctype", "code"),
    [
        ("notes.txt", "text/plain", "unsupported_extension"),
        ("clip", "audio/wav", "unsupported_extension"),
        ("clip.wav", "image/png", "unsupported_media_type"),
        ("clip.exe", "application/octet-stream", "unsupported_extension"),
    ],
)
def test_415_type_and_extension(
    client: httpx.Client, server: ApiServer, filename: str, ctype: str, code: str
) -> None:
    body, headers = multipart(filename, ctype, TIMIT.read_bytes())
    assert_error(client.post("/v1/process", content=body, headers=headers), 415, code)
    no_leftovers(server)


def test_415_not_multipart(client: httpx.Client) -> None:
    response = client.post("/v1/process", json={"file": "x"})
    assert_error(response, 415, "unsupported_media_type", "multipart/form-data")


def test_415_undecodable_content_is_rejected_not_queued(client: httpx.Client, server: ApiServer) -> None:
    before = audio_dirs(server)
    junk = os.urandom(64 * 1024)
    for data in (b"this is plainly not audio\n" * 100, wav_header(len(junk))[:12] + junk):
        body, headers = multipart("clip.wav", "audio/wav", data, [("features", "raw_transcript")])
        assert_error(client.post("/v1/process", content=body, headers=headers), 415, "undecodable_audio")
    assert audio_dirs(server) == before
    no_leftovers(server)


# --- 422 -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ([("features", "summary")], "template_required", "template_id is required"),
        ([], "template_required", "template_id is required"),  # default features include summary
        (
            [("features", "summary"), ("template_id", "no_such_template")],
            "template_not_found",
            "meeting_notes_v1",
        ),
        ([("features", "raw_transcript"), ("beam_size", "abc")], "invalid_parameter", "beam_size"),
        ([("features", "raw_transcript"), ("beam_size", "99")], "invalid_parameter", "beam_size"),
        ([("features", "raw_transcript"), ("temperature", "nan")], "invalid_parameter", "temperature"),
        ([("features", "transcribe_everything")], "invalid_parameter", "unknown feature"),
        ([("features", "raw_transcript"), ("asr_model", "../../etc")], "invalid_parameter", "not a path"),
        ([("features", "raw_transcript"), ("colour", "blue")], "unknown_field", "colour"),
        ([("features", "raw_transcript"), ("template_id", "a b")], "invalid_parameter", "template_id"),
        ([("features", "raw_transcript"), ("llm_backend", "vllm")], "backend_unavailable", "vllm"),
    ],
)
def test_422_bad_parameters(
    client: httpx.Client, server: ApiServer, fields: list[tuple[str, str]], code: str, words: str
) -> None:
    body, headers = multipart("clip.flac", "audio/flac", LIBRI.read_bytes(), fields)
    assert_error(client.post("/v1/process", content=body, headers=headers), 422, code, words)
    no_leftovers(server)


def test_422_missing_file(client: httpx.Client) -> None:
    body, headers = multipart(None, fields=[("features", "raw_transcript")])
    assert_error(client.post("/v1/process", content=body, headers=headers), 422, "missing_file", "file")


def test_422_audio_shorter_than_a_second(client: httpx.Client, server: ApiServer, tmp_path: Path) -> None:
    short = trimmed_wav(TIMIT, 0.5, tmp_path / "short.wav")
    body, headers = multipart("short.wav", "audio/wav", short.read_bytes(), [("features", "raw_transcript")])
    assert_error(client.post("/v1/process", content=body, headers=headers), 422, "audio_too_short", "0.50 s")
    no_leftovers(server)


# --- 404 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("task_id", [str(uuid.uuid4()), "not-a-uuid", "9" * 300])
def test_404_unknown_task(client: httpx.Client, task_id: str) -> None:
    assert_error(client.get(f"/v1/status/{task_id}"), 404, "task_not_found")
    assert_error(client.delete(f"/v1/tasks/{task_id}"), 404, "task_not_found")


def test_404_unknown_route_has_the_error_shape(client: httpx.Client) -> None:
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.put("/v1/process"), 405, "method_not_allowed")


# --- 429 -----------------------------------------------------------------------------------
def test_429_when_queue_is_full(data_dir: Path) -> None:
    with running_server(data_dir, max_queue_depth=1, secret_api_key="k-429") as srv, srv.client() as c:
        body, headers = multipart(
            "jfk.flac", "audio/flac", JFK.read_bytes(), [("features", "raw_transcript")]
        )
        first = c.post("/v1/process", content=body, headers=headers)
        assert first.status_code == 202, first.text
        refused = c.post("/v1/process", content=body, headers=headers)
        assert_error(refused, 429, "queue_full", "MAX_QUEUE_DEPTH")
        assert int(refused.headers["Retry-After"]) > 0
        # Room again once the first task is gone.
        assert c.delete(f"/v1/tasks/{first.json()['task_id']}").status_code == 200
        again = c.post("/v1/process", content=body, headers=headers)
        assert again.status_code == 202, again.text
        assert c.delete(f"/v1/tasks/{again.json()['task_id']}").status_code == 200
