#!/usr/bin/env python3
"""Print the pinned requirements of some of MAIE's extras, one per line, for `pip install -r`.

    python3 scripts/requirements.py api operator        # what the maie-api image installs
    python3 scripts/requirements.py runner              # maie-runner
    python3 scripts/requirements.py runner-gpu          # maie-runner-gpu

The images install `maie` itself with --no-deps and exactly these requirements, because
`pip install maie` (the embedded mode) brings everything. References to MAIE's own extras
(`maie[core]`) are expanded. Needs only the standard library (Python 3.11+), so a Dockerfile can run
it with the base image's Python before anything is installed. Reads pyproject.toml beside scripts/
(or the path in --pyproject).
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
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
