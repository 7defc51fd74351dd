"""What a Transcription may ask of its runner Job on a shared cluster (OPERATOR_ALLOWED_JOB_OVERRIDES),
and Kueue: `build_job` is pure, so the whole Job is asserted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from maie.operator.jobs import KUEUE_QUEUE_LABEL, OverrideNotAllowed, build_job, refused_overrides
from maie.settings import Settings
from maie.transcription import Transcription

pytestmark = pytest.mark.unit

GPU_POOL = {
    "operator_gpu_count": 1,
    "operator_node_selector": {"pool": "gpu"},
    "operator_tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "operator_runtime_class": "nvidia",
    "operator_priority_class": "batch",
    "operator_resources": {"requests": {"cpu": "2"}, "limits": {"memory": "16Gi"}},
    "job_timeout": 1800,
    "max_attempts": 3,
    "operator_ttl_seconds_after_finished": 600,
}


def settings(**extra: Any) -> Settings:
    return Settings(**{**GPU_POOL, **extra})


def tx(job: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> Transcription:
    return Transcription.model_validate(
        {
            "metadata": {"name": "t", "namespace": "team-a", "uid": "u-1", "labels": labels or {}},
            "spec": {
                "audio": {"uri": "s3://maie/audio/t/raw.flac"},
                "features": ["raw_transcript"],
                "job": job or {},
            },
        }
    )


def pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize(
    "override",
    [
        {"tolerations": [{"operator": "Exists"}]},  # tolerate every taint: any node of the cluster
        {"tolerations": []},
        {"nodeSelector": {"pool": "reserved"}},
        {"nodeSelector": {}},  # dropping the operator's nodeSelector is an override too
        {"runtimeClassName": "kata"},
        {"priorityClassName": "system-cluster-critical"},
        {"resources": {"limits": {"memory": "512Gi"}}},
        {"gpuCount": 8},
        {"activeDeadlineSeconds": 86400},
        {"backoffLimit": 10},
        {"ttlSecondsAfterFinished": 999999},
    ],
)
def test_by_default_a_resource_cannot_move_or_grow_its_job(override: dict[str, Any]) -> None:
    (field,) = override
    with pytest.raises(OverrideNotAllowed) as refused:
        build_job(tx(override), settings())
    assert refused.value.fields == [f"spec.job.{field}"]
    assert refused.value.code == "override_not_allowed" and refused.value.reason == "OverrideNotAllowed"
    assert f"spec.job.{field}" in refused.value.message and "allowed: none" in refused.value.message


def test_asking_for_less_is_always_allowed() -> None:
    lower = {"gpuCount": 0, "activeDeadlineSeconds": 600, "backoffLimit": 0, "ttlSecondsAfterFinished": 60}
    assert refused_overrides(tx(lower), settings()) == []
    job = build_job(tx(lower), settings())
    assert (pod(job)["activeDeadlineSeconds"], job["spec"]["backoffLimit"]) == (600, 0)
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    (container,) = pod(job)["containers"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    # The scheduling the platform team chose stays.
    assert pod(job)["nodeSelector"] == {"pool": "gpu"} and pod(job)["runtimeClassName"] == "nvidia"
    assert pod(job)["tolerations"] == GPU_POOL["operator_tolerations"]


def test_allowed_fields_are_applied_and_only_those() -> None:
    allowed = settings(operator_allowed_job_overrides=["nodeSelector", "tolerations", "gpuCount"])
    wish = {
        "nodeSelector": {"pool": "a100"},
        "tolerations": [{"key": "a100", "operator": "Exists"}],
        "gpuCount": 2,
    }
    job = build_job(tx(wish), allowed)
    assert pod(job)["nodeSelector"] == {"pool": "a100"}
    assert pod(job)["tolerations"] == [{"key": "a100", "operator": "Exists"}]
    (container,) = pod(job)["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    # Every refused field is named at once, in the spec's order.
    with pytest.raises(OverrideNotAllowed) as refused:
        build_job(tx({**wish, "priorityClassName": "x", "resources": {"limits": {"cpu": 1}}}), allowed)
    assert refused.value.fields == ["spec.job.priorityClassName", "spec.job.resources"]
    assert "allowed: nodeSelector, tolerations, gpuCount;" in refused.value.message


def test_the_allow_list_is_a_validated_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPERATOR_ALLOWED_JOB_OVERRIDES", '["tolerations", "queueName"]')
    assert Settings(_env_file=None).operator_allowed_job_overrides == ["tolerations", "queueName"]  # type: ignore[call-arg]
    monkeypatch.setenv("OPERATOR_ALLOWED_JOB_OVERRIDES", '["image"]')
    with pytest.raises(ValueError, match="image"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert Settings(_env_file=None, operator_allowed_job_overrides=[]).operator_allowed_job_overrides == []  # type: ignore[call-arg]


def test_kueue_queue_labels_the_job_and_creates_it_suspended() -> None:
    plain = build_job(tx(), settings())
    assert "suspend" not in plain["spec"] and KUEUE_QUEUE_LABEL not in plain["metadata"]["labels"]
    queued = build_job(tx(), settings(operator_kueue_queue_name="gpu-queue"))
    assert queued["spec"]["suspend"] is True
    assert queued["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-queue"
    # The operator still finds its Job by the same labels; only the Job carries the queue.
    assert queued["spec"]["template"]["metadata"]["labels"] == plain["spec"]["template"]["metadata"]["labels"]
    assert {k: v for k, v in queued["metadata"]["labels"].items() if k != KUEUE_QUEUE_LABEL} == plain[
        "metadata"
    ]["labels"]


def test_a_resource_picks_its_own_queue_only_when_allowed() -> None:
    mine = tx(labels={KUEUE_QUEUE_LABEL: "team-a-queue"})
    with pytest.raises(OverrideNotAllowed) as refused:
        build_job(mine, settings(operator_kueue_queue_name="gpu-queue"))
    assert refused.value.fields == [f"metadata.labels[{KUEUE_QUEUE_LABEL}]"]
    # Naming the operator's own queue asks for nothing.
    same = tx(labels={KUEUE_QUEUE_LABEL: "gpu-queue"})
    assert build_job(same, settings(operator_kueue_queue_name="gpu-queue"))["spec"]["suspend"] is True
    allowed = settings(operator_kueue_queue_name="gpu-queue", operator_allowed_job_overrides=["queueName"])
    job = build_job(mine, allowed)
    assert job["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a-queue" and job["spec"]["suspend"] is True
    # Allowed, with no queue of the operator's own: only resources that name one are queued.
    only_per_resource = settings(operator_allowed_job_overrides=["queueName"])
    assert build_job(mine, only_per_resource)["spec"]["suspend"] is True
    assert "suspend" not in build_job(tx(), only_per_resource)["spec"]


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")))
def test_every_example_runs_on_a_default_install(path: Path) -> None:
    """The examples ask only for what the chart's defaults allow (no allow-list, no queue)."""
    example = Transcription.model_validate({**yaml.safe_load(path.read_text()), "status": {}})
    example.metadata.setdefault("namespace", "default")
    assert refused_overrides(example, Settings(_env_file=None)) == []  # type: ignore[call-arg]
