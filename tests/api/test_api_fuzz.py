"""Schemathesis fuzzes each operation of the OpenAPI schema over real HTTP: no 5xx, one error shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from api_support import LIBRI, ApiServer
from hypothesis import HealthCheck, given, settings

FUZZ_KEY = "fuzz-key"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    # A small queue: should the fuzzer ever produce decodable audio, it cannot pile up work.
    server = ApiServer(tmp_path_factory.mktemp("fuzz") / "data", secret_api_key=FUZZ_KEY, max_queue_depth=2)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# Operations are listed when the server is up, so the test loops over them itself (schemathesis'
# lazy pytest loader does not work with this pytest version).
def test_no_server_errors(fuzz_server: ApiServer) -> None:
    api = schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 12, [op.label for op in operations]
    seen: dict[str, set[int]] = {}

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: Any) -> None:
            response = case.call(headers={"X-API-Key": FUZZ_KEY}, timeout=60)
            seen.setdefault(case.operation.label, set()).add(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.path} -> {response.status_code}: {response.text}"
            )
            if response.status_code >= 400:
                body = response.json()
                assert {"detail", "code"} <= set(body), body
                assert "Traceback" not in response.text

        fuzz()
    # The fuzzer reached the handlers, not only the auth and validation layers.
    assert 202 in seen.get("POST /v1/process", set()) or 415 in seen.get("POST /v1/process", set()), seen
    assert 404 in seen.get("GET /v1/status/{task_id}", set()), seen


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_process_form_fields_with_real_audio(fuzz_server: ApiServer) -> None:
    """The schema's file part is random bytes (415 every time); here the fields are fuzzed with a real
    recording attached, so the option parsing and validation behind the upload get fuzzed too."""
    api = schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json")
    operation = api["/v1/process"]["POST"]
    audio = LIBRI.read_bytes()
    statuses: set[int] = set()

    with fuzz_server.client() as client:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: Any) -> None:
            body = case.body if isinstance(case.body, dict) else {}
            data: dict[str, list[str]] = {}
            for name, value in body.items():
                if name != "file":
                    data[name] = [
                        _form_value(item) for item in (value if isinstance(value, list) else [value])
                    ]
            response = client.post(
                "/v1/process",
                data=data,
                files={"file": ("clip.flac", audio, "audio/flac")},
            )
            statuses.add(response.status_code)
            assert response.status_code < 500, f"{data} -> {response.status_code}: {response.text}"
            body_json = response.json()
            if response.status_code == 202:  # keep the box free: accepted work is cancelled at once
                assert client.delete(f"/v1/tasks/{body_json['task_id']}").status_code == 200
            else:
                assert {"detail", "code"} <= set(body_json), body_json

        fuzz()
    assert 422 in statuses, statuses  # the option validation was reached (random options rarely all fit)
