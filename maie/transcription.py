"""The `Transcription` custom resource (maie.io/v1alpha1): spec and status as Pydantic models.

The one shared shape for the api (creates resources), the operator (creates Jobs, mirrors their
state) and the runner (reads the spec, reports stages). Field names are camelCase on the wire, as
Kubernetes conventions ask; in Python they are the snake_case names of `maie.contract`, so a spec
converts to a `TaskRequest` (and back) without a field map. The spec inherits TaskRequest, so an
option declared there is here too; crds/transcription.yaml is generated from these models
(`python -m maie.crd`; a test fails when it is stale).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic.alias_generators import to_camel
from typing_extensions import TypedDict

from maie.contract import (
    DEFAULT_FEATURES,
    AsrOptions,
    Feature,
    LlmOptions,
    ResultDocument,
    RunnerTask,
    Step,
    TaskRequest,
    TaskStatus,
    WebhookStatus,
    utcnow,
)

GROUP = "maie.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Transcription"
PLURAL = "transcriptions"
SHORT_NAME = "tx"

# Labels on Jobs and pods that link them back to their resource.
LABEL_TRANSCRIPTION = "maie.io/transcription"
LABEL_TASK_ID = "maie.io/task-id"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "maie-operator"
MANAGED_BY_API = "maie-api"  # on Transcriptions the API made: they expire after RESULT_TTL
LABEL_PHASE = "maie.io/phase"  # on Transcriptions: lets the API count unfinished ones by selector
ANNOTATION_UID = "maie.io/transcription-uid"  # on runner Jobs and pods: which resource, not only its name

_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class Phase(StrEnum):
    """For people and `kubectl get tx`; conditions carry the detail."""

    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class ConditionType(StrEnum):
    ACCEPTED = "Accepted"
    QUEUED = "Queued"
    JOB_CREATED = "JobCreated"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class DeletionPolicy(StrEnum):
    """What the finalizer removes from object storage when the resource is deleted."""

    DELETE = "Delete"  # audio/{ns}/{id}/ and results/{ns}/{id}/
    DELETE_AUDIO = "DeleteAudio"  # only the uploaded audio; results stay
    RETAIN = "Retain"


def _prune(value: Any) -> Any:
    """Drop empty dicts left by exclude_none (e.g. `job: {}`), so manifests stay minimal."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v != {}}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


CAMEL = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", serialize_by_alias=True)


class _Camel(BaseModel):
    model_config = CAMEL

    def wire(self) -> dict[str, Any]:
        """The camelCase JSON shape, unset fields left out (what goes to the API server)."""
        return _prune(self.model_dump(mode="json", by_alias=True, exclude_none=True))


# --------------------------------------------------------------------------------------
# spec: TaskRequest's options in camelCase, plus what only a resource has
# --------------------------------------------------------------------------------------
class AudioSource(_Camel):
    uri: str = Field(
        pattern=r"^(s3|https?)://\S+$",
        max_length=2048,
        description="s3://bucket/key (read with the runner's S3 settings) or an http(s) URL.",
    )


class AsrSpec(AsrOptions):
    """`maie.contract.AsrOptions` with camelCase names (beamSize, vadFilter, wordTimestamps …)."""

    model_config = CAMEL


class LlmSpec(LlmOptions):
    """`maie.contract.LlmOptions` with camelCase names (topP, maxTokens, baseUrl …)."""

    model_config = CAMEL


# A Kubernetes resource quantity ("500m", "4Gi", 2), as the core API's own CRDs declare it. The
# grammar is the API server's to check (the CRD's pattern, and the Job's own validation, which the
# operator reports as job_refused): the model bounds only the length.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = Annotated[
    int | Annotated[str, StringConstraints(max_length=64)],
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]


class Toleration(TypedDict, total=False):
    """core/v1 Toleration (a dict at run time: it goes into the pod spec as is)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    key: Annotated[str, StringConstraints(max_length=316)]
    operator: Literal["Exists", "Equal"]
    value: Annotated[str, StringConstraints(max_length=253)]
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
    tolerationSeconds: int


class ResourceRequirements(TypedDict, total=False):
    """core/v1 ResourceRequirements' requests and limits (a dict at run time)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    requests: Annotated[dict[str, Quantity], Field(max_length=16)]
    limits: Annotated[dict[str, Quantity], Field(max_length=16)]


class JobOverrides(_Camel):
    """Per-resource overrides of the operator's Job settings; unset = the operator's setting."""

    gpu_count: int | None = Field(None, ge=0, le=8, description="GPUs requested (0 = CPU).")
    active_deadline_seconds: int | None = Field(None, ge=10, description="The Job's deadline.")
    backoff_limit: int | None = Field(None, ge=0, le=10, description="Retries of a failed pod.")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, description="Finished Job's lifetime.")
    node_selector: dict[str, Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        None, max_length=32, description="Node labels the pod must match."
    )
    tolerations: list[Toleration] | None = Field(None, max_length=32, description="Pod tolerations.")
    runtime_class_name: str | None = Field(None, max_length=253, description="e.g. nvidia.")
    priority_class_name: str | None = Field(None, max_length=253, description="Pod priority class.")
    resources: ResourceRequirements | None = Field(
        None, description="Container requests/limits; the GPU limit is added from gpuCount."
    )


def default_features(template_id: str | None) -> list[Feature]:
    """A resource that names no features: the request's defaults, less the summary when there is
    no template (so a manifest with only `audio` is valid and transcribes)."""
    return [f for f in DEFAULT_FEATURES if template_id or f is not Feature.SUMMARY]


class TranscriptionSpec(TaskRequest, _Camel):
    """TaskRequest in camelCase, inherited (add an option to TaskRequest, never here), plus what only
    a resource has: the audio, its storage id, the deletion policy and Job overrides."""

    model_config = CAMEL
    request_model: ClassVar[type[TaskRequest]] = TaskRequest  # what to_task_request() returns

    asr: AsrSpec = Field(default_factory=AsrSpec, description=TaskRequest.model_fields["asr"].description)
    llm: LlmSpec = Field(default_factory=LlmSpec, description=TaskRequest.model_fields["llm"].description)
    audio: AudioSource = Field(description="Where the recording is.")
    task_id: str | None = Field(
        None,
        max_length=63,
        pattern=TASK_ID_PATTERN,
        description="Storage id (audio/{namespace}/{taskId}/, results/{namespace}/{taskId}/); "
        "unset = the resource's uid.",
    )
    deletion_policy: DeletionPolicy | None = Field(
        None,
        description="What deleting the resource removes from object storage (only under "
        "audio/{namespace}/{taskId}/ and results/{namespace}/{taskId}/); unset = the operator's "
        "OPERATOR_DELETION_POLICY.",
    )
    job: JobOverrides = Field(
        default_factory=JobOverrides, description="Overrides of the operator's Job settings."
    )

    @model_validator(mode="before")
    @classmethod
    def _features_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("features") is None:
            template = data.get("templateId", data.get("template_id"))
            data = {**data, "features": default_features(template)}
        return data

    def to_task_request(self) -> TaskRequest:
        fields = set(self.request_model.model_fields)
        return self.request_model.model_validate(self.model_dump(include=fields, by_alias=False))

    @classmethod
    def from_task_request(
        cls, request: TaskRequest, *, audio_uri: str, task_id: str | None = None
    ) -> TranscriptionSpec:
        return cls.model_validate({**request.model_dump(), "audio": {"uri": audio_uri}, "task_id": task_id})


def spec_model(request: type[TaskRequest]) -> type[TranscriptionSpec]:
    """The spec for a variant of TaskRequest (more fields, or groups with more): its fields join
    TranscriptionSpec's, groups in camelCase. The CRD generator runs on it in tests."""
    if request is TaskRequest:
        return TranscriptionSpec
    fields: dict[str, Any] = {}
    for name, field in request.model_fields.items():
        if name in TaskRequest.model_fields and field.annotation is TaskRequest.model_fields[name].annotation:
            continue
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            camel = type(f"{group.__name__}Spec", (group,), {"model_config": CAMEL, "__module__": __name__})
            fields[name] = (camel, Field(default_factory=camel, description=field.description))
        else:
            fields[name] = (field.annotation, field)
    model = create_model(f"{request.__name__}Spec", __base__=TranscriptionSpec, **fields)
    model.request_model = request
    return model


# --------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------
class Condition(_Camel):
    """metav1.Condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = None


class StatusMetrics(_Camel):
    """`maie.contract.Metrics` in camelCase (printer columns read processingTimeSeconds and rtf)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", serialize_by_alias=True
    )

    input_duration_seconds: float | None = None
    processing_time_seconds: float | None = None
    rtf: float | None = None
    vad_coverage: float | None = None
    asr_confidence_avg: float | None = None
    edit_rate_cleaning: float | None = None
    stage_seconds: dict[str, float] = Field(default_factory=dict)


class TranscriptionStatus(_Camel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", serialize_by_alias=True
    )

    phase: Phase | None = None
    stage: TaskStatus | None = None
    step: Step | None = Field(None, description="The pipeline step running now (finer than stage).")
    progress: float | None = Field(None, ge=0, le=100)
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    task_id: str | None = None
    job_name: str | None = None
    attempts: int | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    versions: dict[str, Any] | None = Field(None, description="result.json's versions, as is.")
    metrics: StatusMetrics | None = None
    result_uri: str | None = None
    exports: dict[str, str] | None = None
    error: str | None = None
    error_code: str | None = None
    webhook: WebhookStatus | None = None
    last_failure: str | None = Field(
        None, description="How the last failed attempt ended (the next one resumes after its last stage)."
    )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def set_condition(
        self,
        type_: str,
        status: bool | Literal["Unknown"],
        reason: str,
        message: str = "",
        *,
        generation: int | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Upsert a condition; lastTransitionTime moves only when status flips. True if changed."""
        value: Literal["True", "False", "Unknown"] = (
            "Unknown" if status == "Unknown" else ("True" if status else "False")
        )
        old = self.condition(type_)
        if old is not None and (old.status, old.reason, old.message) == (value, reason, message):
            return False
        new = Condition(
            type=type_,
            status=value,
            reason=reason,
            message=message[:32768],
            last_transition_time=(
                old.last_transition_time
                if old and old.status == value
                else (now or utcnow()).replace(microsecond=0)
            ),
            observed_generation=generation,
        )
        self.conditions = (
            [new if c.type == type_ else c for c in self.conditions]
            if old
            else [
                *self.conditions,
                new,
            ]
        )
        return True


class Transcription(_Camel):
    """A whole resource as read from the API server."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", serialize_by_alias=True
    )

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: TranscriptionSpec
    status: TranscriptionStatus = Field(default_factory=TranscriptionStatus)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "default")

    @property
    def task_id(self) -> str:
        """Where its objects live: spec.taskId (the API's uuid), else the uid, else the name."""
        return self.spec.task_id or str(self.metadata.get("uid") or self.name)


# --------------------------------------------------------------------------------------
# helpers shared by api, operator and runner
# --------------------------------------------------------------------------------------
def resource_name_for_task(task_id: str) -> str:
    """The deterministic resource name the API gives a task (no generateName: retries are safe)."""
    return dns_label(f"tx-{task_id}")


def dns_label(value: str, max_len: int = 63) -> str:
    """A valid DNS-1123 label; long values keep a hash suffix so they stay unique."""
    clean = _DNS_LABEL.sub("-", value.lower()).strip("-") or "x"
    if len(clean) <= max_len:
        return clean
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{clean[: max_len - 9].rstrip('-')}-{digest}"


def job_name_for(resource_name: str) -> str:
    """The one Job name of a resource: deterministic, so a second create is a 409, never a 2nd Job."""
    return dns_label(f"{resource_name}-run")


def live_document(resource: Transcription, stored: ResultDocument | None = None) -> ResultDocument:
    """The API's view of a task: the stored result.json when there is one, else the live status."""
    status = resource.status
    if stored is not None:
        if status.phase is Phase.FAILED and stored.status is not TaskStatus.FAILED:
            stored = stored.model_copy(update={"status": TaskStatus.FAILED, "error": status.error})
        return stored
    stage = status.stage or TaskStatus.PENDING
    if status.phase is Phase.FAILED:
        stage = TaskStatus.FAILED
    return ResultDocument(
        task_id=resource.task_id,
        status=stage,
        step=status.step,
        progress=status.progress,
        submitted_at=status.submitted_at,
        started_at=status.started_at,
        completed_at=status.completed_at,
        request=resource.spec.to_task_request(),
        error=status.error or status.last_failure,
        error_code=status.error_code,
        attempts=status.attempts,
    )


def runner_task(resource: Transcription) -> RunnerTask:
    """The task the resource's runner Job is given (in its MAIE_TASK environment variable)."""
    return RunnerTask(
        task_id=resource.task_id,
        namespace=resource.namespace,
        request=resource.spec.to_task_request(),
        audio=resource.spec.audio.uri,
        submitted_at=resource.status.submitted_at,
        request_id=(resource.metadata.get("annotations") or {}).get("maie.io/request-id"),
    )
