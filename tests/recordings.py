"""Where the real recordings are: tests/data/ first, then the shared data beside the checkout.

tests/data/ holds the clips that may be redistributed (MANIFEST.tsv there says where each came
from and under which licence), so a clone anywhere passes its tests. The others (a copyrighted
advert, a clip of unclear rights, non-commercial VIVOS) stay in ../shared/data (or
MAIE_SHARED_DATA): tests that need them skip, naming why they are not in the repository.
No pytest here, so the benchmarks find data the same way (tests/conftest.py wraps it with skips).
"""

from __future__ import annotations

import csv
import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REPO_DATA = REPO / "tests" / "data"
SHARED_DATA = Path(os.environ.get("MAIE_SHARED_DATA") or REPO.parent / "shared" / "data")
DATA_DIRS = (REPO_DATA, SHARED_DATA)

# Why a clip of ../shared/data is not copied into tests/data (glob over the file name → reason).
NOT_REDISTRIBUTABLE = {
    "en_mm1_*": "a copyrighted 1980s TV advert",
    "en_hotwords_*": "cut from a YouTube video, rights unclear",
    "vi_vivos_*": "VIVOS corpus, CC BY-NC-SA 4.0 (non-commercial only)",
}


@dataclass(frozen=True)
class Recording:
    name: str
    path: Path
    duration: float
    reference: str | None  # None: no word transcript (speaker turns only, or approximate)
    language: str


def _reference(data: Path, cell: str) -> str | None:
    if cell.startswith("refs/") and cell.endswith(".txt"):
        return (data / cell).read_text(encoding="utf-8").strip()
    if cell.startswith(("refs/", "[approximate]")) or "LEFT:" in cell:
        return None
    return cell.strip() or None


def _manifest(data: Path) -> dict[str, Recording]:
    manifest = data / "MANIFEST.tsv"
    if not manifest.is_file():
        return {}
    out: dict[str, Recording] = {}
    with manifest.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            path = data / row["file"]
            if not path.is_file():
                continue
            name = path.name
            out[name] = Recording(
                name=name,
                path=path,
                duration=float(row["duration_s"]),
                reference=_reference(data, row["reference_transcript_or_path"]),
                language=name.split("_", 1)[0],
            )
    return out


def all_recordings() -> dict[str, Recording]:
    """Every recording found, in manifest order; a copy in tests/data wins over the shared one."""
    found: dict[str, Recording] = {}
    for data in reversed(DATA_DIRS):
        found.update(_manifest(data))
    order = [*_manifest(REPO_DATA), *_manifest(SHARED_DATA)]
    return {name: found[name] for name in dict.fromkeys(order)}


def why_missing(relpath: str) -> str:
    """One line for a skip: which file, where it was looked for, and why it is not in the repo."""
    name = Path(relpath).name
    reason = next((why for pat, why in NOT_REDISTRIBUTABLE.items() if fnmatch.fnmatch(name, pat)), None)
    where = f"not in {SHARED_DATA} (set MAIE_SHARED_DATA to a copy of shared/data)"
    if reason:
        return f"{name} is not redistributable ({reason}), so not in tests/data, and {where}"
    return f"{relpath} is neither in tests/data nor in {SHARED_DATA}"


def find(relpath: str) -> Path | None:
    """A data file by its path under the data root (audio/x.wav, meetings/qmsum/y.json), or None."""
    for data in DATA_DIRS:
        if (data / relpath).is_file():
            return data / relpath
    return None
