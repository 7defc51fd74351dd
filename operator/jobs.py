"""The runner Job of one Transcription: a pure function from (resource, settings) to a batch/v1 Job.

Pure so that tests can assert the whole spec, and so that a restarted operator computes exactly the
same name and body (the name is what makes creation idempotent).

The runner gets its task in the MAIE_TASK environment variable and reports only through the task's
objects in S3, so its pod has no Kubernetes credentials at all (no token is mounted): a runner that
decodes hostile audio cannot touch any resource. The operator mirrors its progress into status.

Multi-tenant clusters: anyone who may create a Transcription must not be able to schedule its Job
anywhere the platform team did not allow (tolerate a taint, pick a node pool, a priority, a runtime,
a Kueue queue). Only the fields in OPERATOR_ALLOWED_JOB_OVERRIDES may be set per resource; the
numeric limits may always be lowered (asking for less is not a privilege). Anything else makes
`build_job` raise `OverrideNotAllowed`, which the operator turns into a Failed resource.
"""

from __future__ import annotations

import copy
from typing import Any

from maie.errors import MaieError
from maie.runner_protocol import EXIT_TASK_FAILED, TASK_ENV
from maie.settings import Settings
from maie.transcription import (
    ANNOTATION_UID,
    API_VERSION,
    KIND,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_TASK_ID,
    LABEL_TRANSCRIPTION,
    MANAGED_BY,
    Transcription,
    dns_label,
    job_name_for,
    runner_task,
)

CONTAINER = "runner"
WORK_DIR = "/work"
RUNNER_UID = 10001

# Kueue: the LocalQueue label on a Job (and, per resource when allowed, on the Transcription).
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


class OverrideNotAllowed(MaieError):
    """The resource asks for a per-resource override this installation does not allow.

    `fields` names each refused field as the user wrote it (`spec.job.tolerations`,
    `metadata.labels[kueue.x-k8s.io/queue-name]`); `reason` is a Kubernetes condition reason.
    Retrying cannot help: the resource must be changed (or the platform team must allow the field).
    """

    code = "override_not_allowed"
    reason = "OverrideNotAllowed"

    def __init__(self, fields: list[str], allowed: list[str]) -> None:
        self.fields = fields
        self.allowed = allowed
        allowed_text = ", ".join(allowed) if allowed else "none"
        super().__init__(
            f"not allowed by this installation: {', '.join(fields)} (per-resource overrides allowed: "
            f"{allowed_text}; numeric limits may only be lowered; the platform team sets "
            "operator.allowedJobOverrides / OPERATOR_ALLOWED_JOB_OVERRIDES)"
        )


def _ceilings(settings: Settings) -> dict[str, int]:
    """Numeric spec.job fields a resource may always set at or below the operator's own value."""
    return {
        "gpuCount": settings.operator_gpu_count,
        "activeDeadlineSeconds": settings.job_timeout,
        "backoffLimit": settings.max_attempts - 1,
        "ttlSecondsAfterFinished": settings.operator_ttl_seconds_after_finished,
    }


def refused_overrides(tx: Transcription, settings: Settings) -> list[str]:
    """The per-resource overrides of `tx` this operator's settings do not allow (empty = fine).

    Pure and cheap: the operator can call it when it accepts a resource, before it queues it.
    """
    allowed = set(settings.operator_allowed_job_overrides)
    ceilings = _ceilings(settings)
    refused: list[str] = []
    overrides = tx.spec.job
    for field_name, info in type(overrides).model_fields.items():
        alias = info.alias or field_name
        value = getattr(overrides, field_name)
        if value is None or alias in allowed:
            continue
        ceiling = ceilings.get(alias)
        if ceiling is not None and isinstance(value, int) and value <= ceiling:
            continue
        refused.append(f"spec.job.{alias}")
    queue = _resource_queue(tx)
    if queue is not None and queue != settings.operator_kueue_queue_name and "queueName" not in allowed:
        refused.append(f"metadata.labels[{KUEUE_QUEUE_LABEL}]")
    return refused


def _resource_queue(tx: Transcription) -> str | None:
    labels = tx.metadata.get("labels") or {}
    value = labels.get(KUEUE_QUEUE_LABEL)
    return str(value) if value else None


def queue_name(tx: Transcription, settings: Settings) -> str | None:
    """The Kueue LocalQueue of this resource's Job (its allowed label, else the operator's)."""
    if "queueName" in settings.operator_allowed_job_overrides:
        return _resource_queue(tx) or settings.operator_kueue_queue_name
    return settings.operator_kueue_queue_name


def job_labels(tx: Transcription) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "maie",
        LABEL_COMPONENT: "runner",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_TRANSCRIPTION: dns_label(tx.name),
        LABEL_TASK_ID: dns_label(tx.task_id),
    }


def _env(tx: Transcription, settings: Settings, gpu_count: int) -> list[dict[str, Any]]:
    device = "cuda" if gpu_count > 0 else "cpu"
    plain = {
        TASK_ENV: runner_task(tx).model_dump_json(exclude_none=True),
        "MODE": "kubernetes",
        "NAMESPACE": tx.namespace,
        "S3_ENDPOINT": settings.s3_endpoint,
        "S3_BUCKET": settings.s3_bucket,
        "S3_SECURE": "true" if settings.s3_secure else "false",
        "S3_REGION": settings.s3_region,
        "MODELS_DIR": settings.operator_runner_models_dir,
        "DATA_DIR": f"{WORK_DIR}/data",
        "CACHE_DIR": f"{WORK_DIR}/cache",
        "HOME": WORK_DIR,
        # The Job's GPU count decides the device (a gpuCount: 0 override must not try CUDA).
        "WHISPER_DEVICE": device,
        "CHUNKFORMER_DEVICE": device,
        "PIPELINE_VERSION": settings.pipeline_version,
        "RUNNER_STATUS_INTERVAL": str(settings.runner_status_interval),
    }
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
    if settings.operator_s3_secret:
        for key in ("S3_ACCESS_KEY", "S3_SECRET_KEY"):
            env.append(
                {
                    "name": key,
                    "valueFrom": {"secretKeyRef": {"name": settings.operator_s3_secret, "key": key}},
                }
            )
    return env


def _resources(tx: Transcription, settings: Settings, gpu_count: int) -> dict[str, Any]:
    resources = copy.deepcopy(tx.spec.job.resources or settings.operator_resources) or {}
    limits = dict(resources.get("limits") or {})
    limits.pop(settings.operator_gpu_resource, None)
    if gpu_count > 0:
        limits[settings.operator_gpu_resource] = str(gpu_count)
    requests = dict(resources.get("requests") or {})
    requests.pop(settings.operator_gpu_resource, None)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = {k: str(v) for k, v in requests.items()}
    if limits:
        out["limits"] = {k: str(v) for k, v in limits.items()}
    return out


def _volumes(settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "work", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "work", "mountPath": WORK_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    if settings.operator_models_pvc:
        volumes.append(
            {
                "name": "models",
                "persistentVolumeClaim": {"claimName": settings.operator_models_pvc, "readOnly": True},
            }
        )
    elif settings.operator_models_host_path:
        volumes.append(
            {"name": "models", "hostPath": {"path": settings.operator_models_host_path, "type": "Directory"}}
        )
    if len(volumes) > 3:
        mounts.append({"name": "models", "mountPath": settings.operator_runner_models_dir, "readOnly": True})
    return volumes, mounts


def build_job(tx: Transcription, settings: Settings) -> dict[str, Any]:
    """The Job that runs `maie run-task NAME --namespace NS` for this resource.

    Raises `OverrideNotAllowed` when the resource asks for an override the settings do not allow.
    """
    refused = refused_overrides(tx, settings)
    if refused:
        raise OverrideNotAllowed(refused, list(settings.operator_allowed_job_overrides))
    overrides = tx.spec.job
    gpu_count = settings.operator_gpu_count if overrides.gpu_count is None else overrides.gpu_count
    labels = job_labels(tx)
    queue = queue_name(tx, settings)
    job_meta_labels = {**labels, KUEUE_QUEUE_LABEL: queue} if queue else labels
    # Labels are cut to 63 characters; the annotations keep the full name and id.
    annotations = {
        LABEL_TASK_ID: tx.task_id,
        LABEL_TRANSCRIPTION: tx.name,
        ANNOTATION_UID: str(tx.metadata.get("uid") or ""),
    }
    volumes, mounts = _volumes(settings)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.operator_runner_image,
        "imagePullPolicy": settings.operator_image_pull_policy,
        "command": ["maie", "run-task"],
        "env": _env(tx, settings, gpu_count),
        "resources": _resources(tx, settings, gpu_count),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.operator_runner_config_map:
        container["envFrom"] = [
            {"configMapRef": {"name": settings.operator_runner_config_map, "optional": True}}
        ]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # The run's own limit, counted from the pod's start: time waiting for a GPU node is not in it.
        "activeDeadlineSeconds": overrides.active_deadline_seconds or settings.job_timeout,
        "serviceAccountName": settings.operator_service_account,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "fsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    node_selector = (
        overrides.node_selector if overrides.node_selector is not None else settings.operator_node_selector
    )
    tolerations = (
        overrides.tolerations if overrides.tolerations is not None else settings.operator_tolerations
    )
    runtime_class = overrides.runtime_class_name or settings.operator_runtime_class
    priority_class = overrides.priority_class_name or settings.operator_priority_class
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = [dict(t) for t in tolerations]
    if runtime_class:
        pod_spec["runtimeClassName"] = runtime_class
    if priority_class:
        pod_spec["priorityClassName"] = priority_class
    if settings.operator_image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.operator_image_pull_secrets]

    backoff_limit = (
        overrides.backoff_limit if overrides.backoff_limit is not None else settings.max_attempts - 1
    )
    # The Job's limit covers every attempt plus the time its pods may wait to be scheduled.
    deadline = (backoff_limit + 1) * pod_spec["activeDeadlineSeconds"] + settings.operator_pending_timeout
    ttl = (
        overrides.ttl_seconds_after_finished
        if overrides.ttl_seconds_after_finished is not None
        else settings.operator_ttl_seconds_after_finished
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name_for(tx.name),
            "namespace": tx.namespace,
            "labels": job_meta_labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": tx.name,
                    "uid": str(tx.metadata.get("uid", "")),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            # Kueue admits a queued Job by unsuspending it (created suspended: no pod before admission).
            **({"suspend": True} if queue else {}),
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": deadline,
            # A new pod only once the old one has fully stopped: two runners never share a task.
            "podReplacementPolicy": "Failed",
            "ttlSecondsAfterFinished": ttl,
            # A task's own failure (exit 2: bad audio, missing model) fails the Job at once;
            # crashes and lost nodes are retried by backoffLimit; evictions do not count.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": [EXIT_TASK_FAILED],
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                ]
            },
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
        },
    }
