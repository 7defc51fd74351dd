"""The layering contract ([tool.importlinter] in pyproject.toml) holds, and it would catch a
wrong-way import or a cycle: each case adds one such import to a copy of the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "lint_imports.py"


def lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_the_code_keeps_the_contract() -> None:
    proc = lint()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(
    ("file", "line", "contract"),
    [
        (
            "maie/contract.py",
            "from maie.runner import preprocess",
            "The shared core (maie/) imports no deployable",
        ),
        ("maie/catalog.py", "import maie.api.schemas", "The shared core (maie/) imports no deployable"),
        ("maie/runner/transcribe.py", "import maie.api.app", "The runner knows no api/operator"),
        ("maie/api/schemas.py", "import maie.operator.jobs", "api and operator do not import each other"),
        ("maie/api/backends.py", "import maie.api.k8s_backend", "No import cycles"),
    ],
    ids=["core->runner", "core->api", "runner->api", "api->operator", "cycle"],
)
def test_a_wrong_way_import_breaks_the_contract(tmp_path: Path, file: str, line: str, contract: str) -> None:
    assert lint("--build", str(tmp_path)).returncode == 0
    target = tmp_path / file
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    proc = lint("--check", str(tmp_path))
    assert proc.returncode != 0, proc.stdout
    broken = [ln for ln in proc.stdout.splitlines() if ln.rstrip().endswith("BROKEN")]
    assert any(contract in ln for ln in broken), proc.stdout


def test_the_benchmark_scripts_import_each_other_without_cycles() -> None:
    """benchmarks/ is scripts, not a package (`from corpus import …`), so import-linter does not
    see it: the graph of its modules is read here and must sort topologically."""
    import ast
    import graphlib

    scripts = {p.stem: p for p in (ROOT / "benchmarks").glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in scripts.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                deps.update(alias.name.split(".")[0] for alias in node.names)
        graph[name] = deps & set(scripts)
    assert graph["run"] and graph["report"]  # the scripts do import each other
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
