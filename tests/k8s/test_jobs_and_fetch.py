"""Pure parts: Job naming for long resource names, status translation edge cases, audio fetching."""

from __future__ import annotations

from pathlib import Path

import pytest

from maie.contract import RunnerTask, TaskRequest
from maie.operator import status as st
from maie.operator.jobs import build_job
from maie.runner.task import TaskInputError, fetch_audio
from maie.settings import Settings
from maie.storage.access import AudioAccessError
from maie.storage.s3 import S3ObjectStore
from maie.transcription import Transcription, TranscriptionStatus, job_name_for


def tx(name: str, **spec: object) -> Transcription:
    return Transcription.model_validate(
        {
            "metadata": {"name": name, "namespace": "ns", "uid": "u-1"},
            "spec": {"audio": {"uri": "s3://maie/audio/a/raw.flac"}, "features": ["raw_transcript"], **spec},
        }
    )


def test_long_names_give_valid_unique_job_names_and_labels() -> None:
    a, b = "x" * 200 + "a", "x" * 200 + "b"
    job_a, job_b = build_job(tx(a), Settings()), build_job(tx(b), Settings())
    assert len(job_a["metadata"]["name"]) <= 63 and job_a["metadata"]["name"] != job_b["metadata"]["name"]
    assert job_a["metadata"]["name"] == job_name_for(a)  # deterministic
    assert all(len(v) <= 63 for v in job_a["metadata"]["labels"].values())
    assert job_a["metadata"]["annotations"]["maie.io/transcription"] == a  # the full name survives
    assert job_a["spec"]["template"]["metadata"]["annotations"]["maie.io/transcription"] == a


def test_gpu_count_override_replaces_a_gpu_in_configured_resources() -> None:
    settings = Settings(operator_resources={"limits": {"nvidia.com/gpu": "2", "memory": "8Gi"}})
    (container,) = build_job(tx("t", job={"gpuCount": 0}), settings)["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {"limits": {"memory": "8Gi"}}


def test_condition_transition_time_moves_only_when_status_flips() -> None:
    s = TranscriptionStatus()
    assert s.set_condition("Running", False, "Unschedulable", "no GPU")
    first = s.condition("Running")
    assert first is not None
    assert not s.set_condition("Running", False, "Unschedulable", "no GPU")  # no change, no patch
    s.set_condition("Running", False, "ErrImagePull", "pull failed")
    second = s.condition("Running")
    assert second is not None and second.last_transition_time == first.last_transition_time
    assert st.status_patch(TranscriptionStatus(error="x"), TranscriptionStatus()) == {"error": None}


def task(uri: str, namespace: str = "ns") -> RunnerTask:
    return RunnerTask(
        task_id="t", namespace=namespace, request=TaskRequest(features=["raw_transcript"]), audio=uri
    )


def test_fetch_audio_from_s3_and_from_a_presigned_http_url(s3_store: S3ObjectStore, tmp_path: Path) -> None:
    s3_store.put_bytes("audio/ns/t/raw.FLAC", b"fLaC-bytes")
    settings = Settings(
        max_file_size_mb=1, s3_bucket=s3_store.bucket, allowed_internal_networks=["127.0.0.0/8"]
    )
    (tmp_path / "a").mkdir()
    got = fetch_audio(task(f"s3://{s3_store.bucket}/audio/ns/t/raw.FLAC"), s3_store, tmp_path / "a", settings)
    assert got.name == "raw.flac" and got.read_bytes() == b"fLaC-bytes"
    (tmp_path / "b").mkdir()
    url = s3_store.presigned_url("audio/ns/t/raw.FLAC")
    got = fetch_audio(task(url), s3_store, tmp_path / "b", settings)
    assert got.read_bytes() == b"fLaC-bytes" and got.suffix == ".flac"
    with pytest.raises(TaskInputError, match="audio not found"):
        fetch_audio(task(f"s3://{s3_store.bucket}/audio/ns/none/raw.wav"), s3_store, tmp_path / "a", settings)


def test_fetch_audio_refuses_oversized_and_missing_urls(s3_store: S3ObjectStore, tmp_path: Path) -> None:
    s3_store.put_bytes("audio/ns/big/raw.wav", b"\0" * (1024 * 1024 + 10))
    settings = Settings(
        max_file_size_mb=1, s3_bucket=s3_store.bucket, allowed_internal_networks=["127.0.0.0/8"]
    )
    with pytest.raises(TaskInputError, match="larger than MAX_FILE_SIZE_MB=1"):
        fetch_audio(task(s3_store.presigned_url("audio/ns/big/raw.wav")), s3_store, tmp_path, settings)
    missing = s3_store.presigned_url("audio/ns/nothing/raw.wav")
    with pytest.raises(TaskInputError, match="answered 404"):
        fetch_audio(task(missing), s3_store, tmp_path, settings)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://maie/audio/other-ns/t/raw.flac", "outside this namespace's uploads"),
        ("s3://maie/results/ns/t/result.json", "outside this namespace's uploads"),
        ("s3://maie/audio/ns/../other-ns/t/raw.flac", "climbs out"),
        ("s3://elsewhere/a.flac", "bucket elsewhere is not allowed"),
        ("http://169.254.169.254/latest/meta-data/", "link-local or metadata"),
        ("http://127.0.0.1:9000/maie/audio/ns/t/raw.flac", "loopback"),
    ],
)
def test_a_task_reads_no_other_tenants_audio(
    s3_store: S3ObjectStore, tmp_path: Path, uri: str, message: str
) -> None:
    """The runner's own guard (the operator refuses such a resource before it queues, too)."""
    settings = Settings(s3_bucket="maie")
    with pytest.raises(AudioAccessError, match=message):
        fetch_audio(task(uri), s3_store, tmp_path, settings)
