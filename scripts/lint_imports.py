"""Check the layering contract ([tool.importlinter] in pyproject.toml) with import-linter.

import-linter (grimp) reads a package from one directory, but `maie` is assembled from four
(maie/, api/, runner/, operator/ per [tool.setuptools.package-dir]) and operator/ has no
__init__.py on purpose (a top-level `operator` package would shadow Python's own module), which
grimp skips. So this lays the package out as installed, in a temporary directory (operator/ with
an __init__.py there), and runs `lint-imports` on that copy.

    .venv/bin/python scripts/lint_imports.py              # build a copy, check it (exit 1 if broken)
    .venv/bin/python scripts/lint_imports.py --build DIR  # only lay the package out in DIR
    .venv/bin/python scripts/lint_imports.py --check DIR  # check a copy laid out before
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"


def build(dest: Path) -> Path:
    """Copy every package of [tool.setuptools] into dest/ as it installs; returns dest."""
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]
    mapping: dict[str, str] = config.get("package-dir", {})
    for package in config["packages"]:
        # The folder of the package: its own mapping, else its parent's mapping plus its last name.
        parts = package.split(".")
        for cut in range(len(parts), 0, -1):
            head = ".".join(parts[:cut])
            if head in mapping:
                source = ROOT / mapping[head] / Path(*parts[cut:])
                break
        else:
            source = ROOT / Path(*parts)
        target = dest / Path(*parts)
        target.mkdir(parents=True, exist_ok=True)
        for file in source.glob("*.py"):
            shutil.copy2(file, target / file.name)
        (target / "__init__.py").touch()
    return dest


def check(tree: Path) -> int:
    """Run lint-imports on a laid-out copy; its exit status (0 = every contract kept)."""
    lint = Path(sys.executable).with_name("lint-imports")
    cmd = [str(lint), "--config", str(PYPROJECT), "--no-cache", "--no-logo"]
    return subprocess.run(cmd, cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}).returncode


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--build", type=Path, help="lay the package out in this directory and stop")
    parser.add_argument("--check", type=Path, help="check a directory laid out with --build")
    args = parser.parse_args()
    if args.build:
        build(args.build)
        return 0
    if args.check:
        return check(args.check)
    with tempfile.TemporaryDirectory(prefix="maie-layers-") as tmp:
        return check(build(Path(tmp)))


if __name__ == "__main__":
    raise SystemExit(main())
