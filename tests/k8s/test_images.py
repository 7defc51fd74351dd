"""The images, built here by scripts/build_images.sh and run as the chart runs them.

- maie-api: no model runtime and no PyAV inside; templates from the wheel; non-root by default; labels.
- maie-runner: the portable llama.cpp build (no AVX-512, no AMX kernels) and the bundled models.
- The chart installed "by hand": `helm template` with the kind values, its Secrets and ConfigMaps put
  into KMock, then the API and the operator Deployments' containers run from maie-api with the
  rendered command, env and mounts (read-only root, UID 10001, emptyDirs as tmpfs); `helm test`'s
  pod submits its clip through the API (a Transcription in KMock, the audio in moto's S3); the
  operator in its container creates the runner Job; the Job's container runs in maie-runner exactly
  as rendered (no Kubernetes credentials); the test plays the Job controller; the operator marks the
  resource Succeeded and the helm test pod reads the transcript.
- The model loader Job's command in maie-runner.

Marked `images`; skipped (with the reason) where neither podman nor docker works. The images are built
once per session; layers are reused, so a rebuild after a code change takes seconds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from image_support import (
    BUILD_LOG,
    ROOT,
    Engine,
    Objects,
    build,
    config_map_dir,
    find_engine,
    free_port,
    image_ref,
    resolve_env,
    run_flags,
)
from k8s_support import TX, eventually, put
from test_chart import CHART, template

from maie.contract import ResultDocument, TaskStatus
from maie.storage.s3 import S3ObjectStore
from maie.transcription import job_name_for

pytestmark = [pytest.mark.e2e, pytest.mark.images, pytest.mark.timeout(5400)]

NS = "maie"  # the release namespace of the rendered chart
API_BUDGET_MB = 300
FORBIDDEN_IN_API = ("faster_whisper", "ctranslate2", "llama_cpp", "av", "numpy", "onnxruntime", "torch")


@pytest.fixture(scope="session")
def engine() -> Engine:
    found = find_engine()
    if found is None:
        pytest.skip("neither podman nor docker works here (as root: bash scripts/install_podman.sh)")
    return found


@pytest.fixture(scope="session")
def images(engine: Engine) -> dict[str, str]:
    """maie-api and maie-runner, built once per session (cached layers: seconds when unchanged)."""
    done = build(["api", "runner"])
    if done.returncode != 0:
        tail = "\n".join(BUILD_LOG.read_text(errors="replace").splitlines()[-60:])
        pytest.fail(f"scripts/build_images.sh api runner failed ({BUILD_LOG}):\n{tail}")
    return {"api": image_ref("api"), "runner": image_ref("runner")}


def labels(engine: Engine, image: str) -> dict[str, str]:
    info = engine.inspect(image)
    return dict(info.get("Labels") or info.get("Config", {}).get("Labels") or {})


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


# What the Dockerfiles copy into an image: a commit that changed none of these builds the same image.
IMAGE_INPUTS = ("Dockerfile.api", "Dockerfile.runner", "pyproject.toml", "README.md", "maie", "api",
                "operator", "runner", "templates", "scripts")  # fmt: skip


def check_labels(engine: Engine, image: str, title: str) -> None:
    """The OCI labels name this version and a revision whose image inputs are this checkout's. The
    revision is HEAD's, or, when nothing the image copies has changed since, an older commit's: podman
    (buildah) reuses a cached LABEL layer whatever the REVISION build argument says."""
    found = labels(engine, image)
    assert found["org.opencontainers.image.title"] == title
    assert found["org.opencontainers.image.version"] == version()
    assert found["org.opencontainers.image.source"]
    revision = found["org.opencontainers.image.revision"].removesuffix("-dirty")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    if revision == head.strip():
        return
    known = subprocess.run(["git", "cat-file", "-e", f"{revision}^{{commit}}"], cwd=ROOT, capture_output=True)
    assert known.returncode == 0, f"the image's revision label {revision!r} is no commit of this repository"
    same = subprocess.run(["git", "diff", "--quiet", revision, "--", *IMAGE_INPUTS], cwd=ROOT)
    assert same.returncode == 0, f"the image is labelled {revision}, but its inputs changed since"


def test_api_image_has_no_model_runtime_and_runs_as_10001(engine: Engine, images: dict[str, str]) -> None:
    image = images["api"]
    check_labels(engine, image, "maie-api")
    size_mb = int(engine.inspect(image)["Size"]) / 1e6
    assert size_mb < API_BUDGET_MB, f"maie-api is {size_mb:.0f} MB (budget {API_BUDGET_MB} MB)"
    probe = (
        "import importlib.util, json, os\n"
        f"absent = [m for m in {FORBIDDEN_IN_API!r} if importlib.util.find_spec(m) is None]\n"
        "import maie.api.app, maie.operator.main, maie.cli\n"
        "from maie.settings import Settings\n"
        "report = {'uid': os.getuid(), 'absent': absent, 'templates': str(Settings().templates_dir)}\n"
        "print(json.dumps(report))"
    )
    # The image's own user (no --user) and a read-only root: nothing is written at start.
    out = engine.run("--read-only", "--read-only-tmpfs=false", image, "python", "-c", probe)
    assert out.returncode == 0, out.stdout
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["uid"] == 10001
    assert report["absent"] == list(FORBIDDEN_IN_API)
    assert report["templates"].endswith("/site-packages/maie/template_files")
    listed = engine.run("--read-only", "--read-only-tmpfs=false", image, "maie", "templates")
    assert listed.returncode == 0, listed.stdout
    assert {"meeting_notes_v1", "interview_v1", "lecture_notes_v1"} <= {
        line.split()[0] for line in listed.stdout.splitlines() if line.strip()
    }


def test_runner_image_is_portable_and_carries_the_bundled_models(
    engine: Engine, images: dict[str, str]
) -> None:
    image = images["runner"]
    check_labels(engine, image, "maie-runner")
    probe = (
        "import json, os, sys, llama_cpp\n"
        "from pathlib import Path\n"
        "record = json.loads((Path(sys.prefix) / 'share/maie/llama-cpp-build.json').read_text())\n"
        "info = llama_cpp.llama_print_system_info().decode()\n"
        "check = os.environ['RUNNER_STARTUP_CHECK']\n"
        "print(json.dumps({'uid': os.getuid(), 'record': record, 'check': check, 'system_info': info}))"
    )
    out = engine.run("--read-only", "--read-only-tmpfs=false", image, "python", "-c", probe)
    assert out.returncode == 0, out.stdout
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["uid"] == 10001 and report["check"] == "true"
    assert "-DGGML_NATIVE=OFF" in report["record"]["cmake_args"]
    assert len(report["record"]["libggml_cpu_sha256"]) == 64  # the record describes this very library
    assert report["record"]["cpu_baseline"] == "x86-64-v3"
    info = report["system_info"]
    assert "AVX2 = 1" in info, info  # the baseline is compiled in …
    assert "AVX512" not in info and "AMX" not in info, info  # … and nothing beyond it
    read_only = ("--read-only", "--read-only-tmpfs=false", "--tmpfs", "/work:mode=1777")
    models = engine.run(*read_only, image, "maie", "models", "--json")
    assert models.returncode == 0, models.stdout
    available = {(m["kind"], m["backend_id"]) for m in json.loads(models.stdout) if m["available"]}
    assert {("asr", "whisper"), ("llm", "llama_cpp")} <= available


# --------------------------------------------------------------------------------------------
# the chart, through the images
# --------------------------------------------------------------------------------------------
def render(*sets: str) -> list[dict[str, Any]]:
    out = template(*sets)
    if out.returncode != 0:
        raise AssertionError(out.stderr)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    (doc,) = [
        d
        for d in docs
        if d["kind"] == kind
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    return doc


def pod_of(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"])


@pytest.fixture()
def containers(engine: Engine) -> Iterator[list[str]]:
    """Names of detached containers; removed after the test."""
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run(engine.command("rm", "-f", "-t", "2", name), capture_output=True)


async def wait_http(engine: Engine, container: str, url: str, timeout: float = 90) -> None:
    async def answered() -> bool:
        if not await engine.running(container):
            raise AssertionError(f"{container} stopped:\n{await engine.logs(container)}")
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(url, timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await answered():
        if loop.time() > deadline:
            raise AssertionError(f"{url} never answered 200:\n{await engine.logs(container)}")
        await asyncio.sleep(0.5)


async def test_the_chart_runs_a_task_through_the_images(
    kube: Any,
    s3_endpoint: str,
    engine: Engine,
    images: dict[str, str],
    containers: list[str],
    tmp_path: Path,
) -> None:
    bucket = f"maie-{uuid.uuid4().hex[:10]}"
    docs = render(
        *("-f", str(CHART / "values-kind.yaml")),
        *("--set", f"image.repository={images['api'].rsplit(':', 1)[0]}", "--set", "image.tag=test"),
        *("--set", f"runner.image.repository={images['runner'].rsplit(':', 1)[0]}"),
        *("--set", "runner.image.tag=test", "--set", "runner.statusIntervalSeconds=1"),
        *("--set", "minio.enabled=false", "--set", f"s3.endpoint={s3_endpoint}"),
        *("--set", f"s3.bucket={bucket}"),
    )
    # What `helm install` puts in the cluster that pods read: Secrets and ConfigMaps.
    for doc in docs:
        if doc["kind"] in ("Secret", "ConfigMap"):
            plural = "secrets" if doc["kind"] == "Secret" else "configmaps"
            body = {**doc, "metadata": {**doc["metadata"], "namespace": NS}}
            await put(kube, f"/api/v1/namespaces/{NS}/{plural}", body)
    objects = Objects(docs)
    kubeconfig = {tmp_path / "kubeconfig": "/kube/config"}  # no service account token: KMock
    api_port, health_port = free_port(), free_port()

    # The API Deployment's container, as rendered (its port moved: the host's network is shared).
    api_pod = pod_of(find(docs, "Deployment", "api"))
    (api,) = api_pod["containers"]
    assert api["image"] == images["api"] and api["command"] == ["maie", "serve"]
    env = resolve_env(api, objects, NS, "maie-api-0")
    env.update(API_PORT=str(api_port), KUBECONFIG="/kube/config")
    containers.append(name := f"maie-api-{uuid.uuid4().hex[:6]}")
    await engine.start(name, *run_flags(api_pod, api, env, {}, tmp_path / "api", kubeconfig))
    await wait_http(engine, name, f"http://127.0.0.1:{api_port}/health/ready")

    # The operator Deployment's container.
    op_pod = pod_of(find(docs, "Deployment", "operator"))
    (operator,) = op_pod["containers"]
    assert operator["image"] == images["api"] and operator["command"] == ["maie", "operator"]
    env = {
        **resolve_env(operator, objects, NS, "maie-operator-0"),
        "OPERATOR_HEALTH_PORT": str(health_port),
        "OPERATOR_METRICS_PORT": str(free_port()),
        "KUBECONFIG": "/kube/config",
    }
    containers.append(name := f"maie-operator-{uuid.uuid4().hex[:6]}")
    await engine.start(name, *run_flags(op_pod, operator, env, {}, tmp_path / "operator", kubeconfig))
    await wait_http(engine, name, f"http://127.0.0.1:{health_port}/healthz")

    # `helm test`: its pod uploads the clip through the API and waits for the transcript.
    test_pod = pod_of(find(docs, "Pod", "test"))
    (submit,) = test_pod["containers"]
    clip = config_map_dir(find(docs, "ConfigMap", "test"), tmp_path / "clip")
    env = {**resolve_env(submit, objects, NS, "maie-test-submit"), "MAIE_URL": f"http://127.0.0.1:{api_port}"}
    submit_run = engine.arun(
        *run_flags(test_pod, submit, env, {"clip": clip}, tmp_path / "test"), timeout=300
    )
    helm_test = asyncio.create_task(submit_run)

    # The operator creates the runner Job for the Transcription the API created.
    def job() -> dict[str, Any] | None:
        found = [dict(o.raw) for key, o in kube.objects.items() if key[0].plural == "jobs"]
        return found[0] if found else None

    runner_job = await eventually(job, timeout=90, what="the runner Job")
    (tx_name,) = [key[2] for key in kube.objects if key[0].plural == "transcriptions"]
    assert runner_job["metadata"]["name"] == job_name_for(tx_name)
    job_pod = pod_of(runner_job)
    (runner,) = job_pod["containers"]
    assert runner["image"] == images["runner"] and runner["command"] == ["maie", "run-task"]
    assert job_pod["automountServiceAccountToken"] is False
    # The kubelet's part: the env from the Job (its Secret and ConfigMap refs resolved in the
    # namespace), the volumes (/work, /tmp, /dev/shm emptyDirs; the models hostPath read-only).
    stored = Objects(
        [dict(o.raw) for key, o in kube.objects.items() if key[0].plural in ("secrets", "configmaps")]
    )
    env = resolve_env(runner, stored, NS, runner_job["metadata"]["name"])
    models = tmp_path / "models"
    models.mkdir()
    code, output = await engine.arun(
        *run_flags(job_pod, runner, env, {"models": models}, tmp_path / "job"), timeout=600
    )
    assert code == 0, output
    # The image's start-up check ran `maie doctor`'s checks: this image's pins, its llama.cpp build
    # (recorded, baseline only) against this CPU, /work, the configured models loaded and run once.
    checks = [
        line.split("start-up check: ", 1)[1] for line in output.splitlines() if "start-up check: " in line
    ]
    assert checks and all(line.startswith("ok") for line in checks), output
    assert any("of maie[runner] installed as pinned" in line for line in checks), checks
    assert any("llama.cpp build vs CPU: recorded build x86-64-v3" in line for line in checks), checks
    assert any("asr whisper tiny.en" in line and "transcribed 1 s" in line for line in checks), checks

    # The Job controller's verdict; the operator mirrors result.json into the resource.
    patch = {"status": {"active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}
    job_path = f"/apis/batch/v1/namespaces/{NS}/jobs/{runner_job['metadata']['name']}/status"
    async with kube.patch(job_path, json=patch) as r:
        assert r.status == 200

    def status() -> dict[str, Any]:
        return dict(dict(kube.objects[TX, NS, tx_name].raw).get("status") or {})

    await eventually(lambda: status().get("phase") == "Succeeded", timeout=60, what="Succeeded")
    code, output = await helm_test
    assert code == 0, output  # submit.py: COMPLETE and "wait" in the transcript
    assert "transcript:" in output and "wait" in output.lower()

    st = status()
    assert st["stage"] == "COMPLETE" and st["attempts"] == 1
    task_id = dict(kube.objects[TX, NS, tx_name].raw)["spec"]["taskId"]
    store = S3ObjectStore(s3_endpoint, bucket, access_key="x", secret_key="x", secure=False)
    assert st["resultUri"] == f"s3://{bucket}/results/{NS}/{task_id}/result.json"
    doc = ResultDocument.model_validate_json(store.get_bytes(f"results/{NS}/{task_id}/result.json"))
    assert doc.status is TaskStatus.COMPLETE
    assert "wait no longer" in (doc.results.raw_transcript or "").lower()  # type: ignore[union-attr]
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{api_port}/health", timeout=10)
    assert health.status_code == 200, health.text


def test_the_model_loader_command_runs_in_the_runner_image(
    engine: Engine, images: dict[str, str], tmp_path: Path
) -> None:
    docs = render(
        *("--set", f"runner.image.repository={images['runner'].rsplit(':', 1)[0]}"),
        *("--set", "runner.image.tag=test"),
    )
    loader = find(docs, "Job", "model-loader")
    pod = pod_of(loader)
    (container,) = pod["containers"]
    assert container["image"] == images["runner"]
    wanted = container["args"]
    assert wanted == ["whisper:large-v3-turbo", "llm:Qwen3-4B-Instruct-2507"]
    env = resolve_env(container, Objects(docs), NS, "loader")
    # A volume that already holds the Whisper model; the LLM is missing and Hugging Face is out of
    # reach (a closed port), so the script must get as far as the download with the image's `hf`.
    models = tmp_path / "models"
    (models / "whisper" / "large-v3-turbo").mkdir(parents=True)
    (models / "whisper" / "large-v3-turbo" / "model.bin").write_bytes(b"weights")
    models.chmod(0o777)
    (models / "whisper").chmod(0o777)
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    env["HF_HUB_ETAG_TIMEOUT"] = env["HF_HUB_DOWNLOAD_TIMEOUT"] = "2"
    out = engine.run(*run_flags(pod, container, env, {"models": models}, tmp_path / "loader"), timeout=300)
    assert f"ok   {env['MODELS_DIR']}/whisper/large-v3-turbo (already there)" in out.stdout, out.stdout
    assert "get  Qwen/Qwen3-4B-Instruct-2507" in out.stdout, out.stdout
    assert "CLI is missing" not in out.stdout and "No such file" not in out.stdout, out.stdout
    assert out.returncode != 0  # no network: the download itself fails
