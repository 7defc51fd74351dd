"""The API and the operator need no model runtime: `maie serve` (MODE=kubernetes) and `maie operator`
run in processes where importing maie.runner, faster-whisper, CTranslate2, llama.cpp, PyAV, NumPy,
onnxruntime or torch raises, and still do their work against KMock and moto's S3 — an upload becomes
a Transcription (a non-audio file is refused), the operator turns it into a runner Job. This is what
lets the maie-api image leave them all out; the `images` tests check the image itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from k8s_support import JOBS, NS, TX, eventually, free_port

from maie.settings import Settings
from maie.storage.s3 import S3ObjectStore
from maie.transcription import job_name_for
from tests.conftest import recording

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

FORBIDDEN = ("faster_whisper", "ctranslate2", "llama_cpp", "av", "numpy", "onnxruntime", "torch", "vllm")
GUARD = f"""
import importlib.abc, sys
FORBIDDEN = {FORBIDDEN!r}
class Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN or name == "maie.runner" or name.startswith("maie.runner."):
            print("FORBIDDEN IMPORT", name, file=sys.stderr, flush=True)
            raise ImportError(f"{{name}} is not installed in the API image")
        return None
sys.meta_path.insert(0, Guard())
"""

SERVE = """
import json, sys
from fastapi.testclient import TestClient
from maie.api.app import create_app
from maie.settings import Settings
settings = Settings()
audio, junk = sys.argv[1], sys.argv[2]
headers = {"X-API-Key": "k"}
with TestClient(create_app(settings)) as client:
    with open(audio, "rb") as f:
        ok = client.post("/v1/process", headers=headers, files={"file": ("talk.flac", f, "audio/flac")},
                         data={"features": "raw_transcript"})
    with open(junk, "rb") as f:
        refused = client.post("/v1/process", headers=headers, files={"file": ("notes.mp3", f, "audio/mpeg")},
                              data={"features": "raw_transcript"})
    task = ok.json().get("task_id")
    status = client.get(f"/v1/status/{task}", headers=headers)
    templates = client.get("/v1/templates", headers=headers)
print(json.dumps({"submit": [ok.status_code, ok.json()], "refused": [refused.status_code, refused.json()],
                  "status": [status.status_code, status.json().get("status")],
                  "templates": [t["template_id"] for t in templates.json()["templates"]]}))
"""


def env(**settings: str) -> dict[str, str]:
    names = {n.upper() for n in Settings.model_fields}
    out = {k: v for k, v in os.environ.items() if k.upper() not in names}
    out.update(settings)
    return out


async def test_serve_and_operator_run_without_any_model_runtime(
    kube: Any, s3_store: S3ObjectStore, s3_endpoint: str, tmp_path: Path
) -> None:
    s3 = {
        "S3_ENDPOINT": s3_endpoint,
        "S3_BUCKET": s3_store.bucket,
        "S3_ACCESS_KEY": "testing",
        "S3_SECRET_KEY": "testing",
    }
    junk = tmp_path / "notes.mp3"
    junk.write_text("meeting notes, not audio\n" * 50)
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-c", GUARD + SERVE, str(recording("en_jfk_inaugural.flac").path), str(junk),
        env=env(MODE="kubernetes", SECRET_API_KEY="k", NAMESPACE=NS, DATA_DIR=str(tmp_path / "data"), **s3),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    out, err = await asyncio.wait_for(serve.communicate(), timeout=120)
    assert serve.returncode == 0, err.decode()
    assert b"FORBIDDEN IMPORT" not in err, err.decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["submit"][0] == 202, report
    assert report["refused"][0] == 415 and report["refused"][1]["code"] == "undecodable_audio", report
    assert report["status"] == [200, "PENDING"]
    assert "meeting_notes_v1" in report["templates"]
    task_id = report["submit"][1]["task_id"]
    (name,) = [key[2] for key in kube.objects if key[0] == TX]
    assert dict(kube.objects[TX, NS, name].raw)["spec"]["taskId"] == task_id
    assert any(key.startswith(f"audio/{NS}/{task_id}/") for key in s3_store.list_keys("audio/"))

    log = tmp_path / "operator.log"
    run_operator = f"from maie.cli import main; sys.argv[1:] = ['operator', '--namespace', {NS!r}]; main()"
    operator = await asyncio.create_subprocess_exec(
        sys.executable, "-c", GUARD + run_operator,
        env=env(OPERATOR_NAMESPACE=NS, OPERATOR_HEALTH_PORT=str(free_port()), OPERATOR_METRICS_PORT="0",
                OPERATOR_GPU_COUNT="0",
                OPERATOR_LEASE_SECONDS="2", OPERATOR_QUEUE_RETRY_SECONDS="0.3", **s3),
        stdout=log.open("wb"), stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        await eventually(lambda: dict(kube.objects[JOBS, NS, job_name_for(name)].raw), timeout=60, what="Job")
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(operator.wait(), timeout=30)
        except TimeoutError:
            operator.kill()
    assert "FORBIDDEN IMPORT" not in log.read_text(errors="replace")
