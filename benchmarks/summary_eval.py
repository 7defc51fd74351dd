"""Summaries: how good (ROUGE against human summaries, traceability to the transcript) and how fast
(seconds per part of the summary stage), today's pipeline and this one side by side in one run.

    .venv/bin/python benchmarks/summary_eval.py                 # everything (~20-40 min on 2 busy cores)
    .venv/bin/python benchmarks/summary_eval.py --old-ref aaae045 --rounds 3 --no-openai

Systems, on the two QMSum meetings in ../shared/data (transcripts as "Speaker: text" lines, the
same text `maie summarize` gets):
- `old`: the summary stage of the commit `--old-ref` (default aaae045, before grounded summaries),
  run from its own git worktree with this venv (PYTHONPATH points at a link tree of that checkout);
- `lead`: the transcript's first sentences (cleaned like the candidates), as many as the summary
  field's maxLength holds;
- `extractive`: the ranker alone (LexRank over TF-IDF, `summarize.extractive_summary`);
- `new`: this checkout's summary stage with the llama_cpp backend;
- `new-openai`: the same through the openai backend against llama-cpp-python's own server
  (`python -m llama_cpp.server`) serving the same GGUF with the same sampling settings.

Scores: ROUGE-1/2/L F1 (rouge-score, Porter stemming) of the `summary` field against the meeting's
human "Summarize the whole meeting" answer; the fraction of list items (key points, decisions,
action-item tasks) whose content words all occur in the transcript (`grounding.is_traceable`);
owners that are not names in the transcript.

Speed: the summary stage (model load + summary + unload) of old and new, interleaved (old,
old+passive, new, old, …) in fresh processes, on the JFK clip, en_mm1 (their reference transcripts)
and ES2004a; each call's prompt-evaluation and decoding milliseconds come from llama.cpp's own
counters. `old+passive` is the old code with OMP_WAIT_POLICY=PASSIVE: its prompt batches no longer
stall on spinning OpenMP threads (what evaluating prompts on the generation's thread count also
fixes): new/old is what a user gains, new/old+passive what the field-by-field design alone gains.
Ratios are medians of the per-round ratios.

Writes benchmarks/results/summary-<date>-<machine>.md and .json. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DATA = Path(os.environ.get("MAIE_SHARED_DATA", ROOT.parent / "shared" / "data"))
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
TEMPLATE = "meeting_notes_v1"
MEETINGS = ("ES2004a", "Bed016")


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------
def meeting(name: str) -> tuple[str, str]:
    """(transcript as "Speaker: text" lines, the human whole-meeting summary)."""
    data = json.loads((DATA / "meetings" / "qmsum" / f"{name}.json").read_text())
    text = "\n".join(f"{t['speaker']}: {t['content']}" for t in data["meeting_transcripts"])
    answer = str(data["general_query_list"][0]["answer"])  # "Summarize the (whole) meeting"
    return text, answer


def clip_transcript(name: str) -> str:
    """A recording's reference transcript from MANIFEST.tsv (or the refs/ file it names)."""
    for line in (DATA / "MANIFEST.tsv").read_text().splitlines()[1:]:
        cols = line.split("\t")
        if Path(cols[0]).name.startswith(name):
            ref = cols[8]
            return (DATA / ref).read_text().strip() if ref.startswith("refs/") else ref
    raise SystemExit(f"no recording {name} in {DATA}/MANIFEST.tsv")


# --------------------------------------------------------------------------------------
# the worker: one summary stage in this process, instrumented (run with old or new code)
# --------------------------------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    from maie.contract import TaskRequest
    from maie.runner.enhance import prompt_environment
    from maie.runner.llm import create_llm_backend
    from maie.runner.llm.generation import env_options, model_options, resolve
    from maie.runner.summarize import Summarizer
    from maie.settings import Settings
    from maie.templates import TemplateCatalog

    text = Path(args.input).read_text()
    templates = Path(args.templates)
    settings = Settings(templates_dir=templates)  # type: ignore[call-arg]
    if args.base_url:
        settings = settings.model_copy(update={"openai_context_tokens": 8192})
    calls: list[dict[str, Any]] = []
    started = time.perf_counter()
    backend = create_llm_backend(args.backend, settings, model=None, base_url=args.base_url or None)
    backend.load()
    loaded = time.perf_counter()
    # The sampling settings MAIE resolves for the bundled GGUF (the openai run sends the same).
    gguf = templates / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf.generation_config.json"
    params, _ = resolve(
        TaskRequest(features=["summary"], template_id=TEMPLATE).llm,
        env_options(settings, "summary"),
        model_options(gguf),
        {"temperature": 0.2, "top_p": 0.95, "top_k": 40, "repetition_penalty": 1.0},
    )
    # Imported only now, as the pipeline does: an OpenMP setting made before (OMP_WAIT_POLICY)
    # must be in place when llama_cpp (and with it libgomp) is first loaded.
    import llama_cpp

    llm = getattr(backend, "_llm", None)
    complete = backend.complete

    def timed(messages: Any, p: Any, json_schema: Any = None) -> str:
        if llm is not None:
            llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
        t = time.perf_counter()
        out = complete(messages, p, json_schema=json_schema)
        call: dict[str, Any] = {"seconds": round(time.perf_counter() - t, 3)}
        if llm is not None:
            perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
            call.update(
                prompt_ms=round(perf.t_p_eval_ms, 1),
                prompt_tokens=perf.n_p_eval,
                decode_ms=round(perf.t_eval_ms, 1),
                decode_tokens=perf.n_eval,
            )
        calls.append(call)
        return out

    backend.complete = timed  # type: ignore[method-assign]
    env = prompt_environment(str(templates / "prompts"))
    schema = TemplateCatalog(templates).schema(TEMPLATE)
    error = None
    summary: dict[str, Any] | None = None
    outcome: Any = None
    try:
        outcome = Summarizer(
            backend, params, env, settings.llm_summary_max_retries, settings.llm_chunk_tokens
        ).run(text, TEMPLATE, schema)
        summary = outcome.summary
    except Exception as exc:  # a failed summary is a result too (today's pipeline fails on some)
        error = f"{type(exc).__name__}: {exc}"
    summarized = time.perf_counter()
    backend.unload()
    ended = time.perf_counter()
    print(
        json.dumps(
            {
                "summary": summary,
                "error": error,
                "load_s": round(loaded - started, 3),
                "summarize_s": round(summarized - loaded, 3),
                "unload_s": round(ended - summarized, 3),
                "stage_s": round(ended - started, 3),
                "calls": calls,
                "attempts": getattr(outcome, "attempts", None),
                "grounding": getattr(outcome, "grounding", None),
                "chunks": getattr(outcome, "chunks", None),
            }
        )
    )


# --------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------
def old_tree(ref: str) -> Path:
    """A link tree that imports as `maie` from a worktree of `ref` (runner/ etc. at its top)."""
    tree = Path(f"/tmp/maie-old-{ref}")
    pkg = Path(f"/tmp/maie-old-{ref}-pkg")
    if not tree.is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True)
    if not pkg.is_dir():
        (pkg / "maie").mkdir(parents=True)
        for entry in (tree / "maie").iterdir():
            (pkg / "maie" / entry.name).symlink_to(entry)
        for part in ("runner", "api", "operator"):
            (pkg / "maie" / part).symlink_to(tree / part)
    return pkg


def run_worker(
    code: str,
    text: str,
    templates: Path,
    pythonpath: Path | None,
    backend: str,
    base_url: str = "",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    work = ROOT / "benchmarks" / "work"
    work.mkdir(parents=True, exist_ok=True)
    source = work / "summary_input.txt"
    source.write_text(text, encoding="utf-8")
    env = {**os.environ, **(env or {})}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--input",
        str(source),
        "--templates",
        str(templates),
        "--backend",
        backend,
    ]
    if base_url:
        cmd += ["--base-url", base_url]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/tmp", check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr[-1500:], "code": code}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["code"] = code
    return result


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    from maie.model_paths import resolve_gguf
    from maie.settings import Settings

    gguf = resolve_gguf(None, Settings())
    port = 8765
    threads = max((os.cpu_count() or 2) // 2, 1)  # what the llama_cpp backend uses
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "8192", "--n_threads", str(threads), "--seed", "0"]  # fmt: skip
    # Prompt batches on spinning OpenMP threads stall on a busy CPU (see the module docstring).
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/models", timeout=2) as r:
                if json.load(r)["data"]:
                    return proc, base
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start")


def list_items(summary: dict[str, Any] | None) -> list[str]:
    if not summary:
        return []
    items = [str(x) for x in summary.get("key_points", []) + summary.get("decisions", [])]
    items += [str(a.get("task", "")) for a in summary.get("action_items", []) if isinstance(a, dict)]
    return items


def score(
    system: str, text: str, summary_text: str, items: list[str], reference: str, owners: list[Any]
) -> dict[str, Any]:
    from rouge_score import rouge_scorer

    from maie.runner import grounding

    vocab = grounding.vocabulary([text])
    people = set(grounding.names(text))
    rouge = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(
        reference, summary_text
    )
    traced = [grounding.is_traceable(i, vocab) for i in items]
    return {
        "system": system,
        "rouge1": round(rouge["rouge1"].fmeasure, 4),
        "rouge2": round(rouge["rouge2"].fmeasure, 4),
        "rougeL": round(rouge["rougeL"].fmeasure, 4),
        "items": len(items),
        "items_traceable": round(sum(traced) / len(items), 3) if items else None,
        "owners_not_names": sum(1 for o in owners if o is not None and o not in people),
        "summary_chars": len(summary_text),
    }


def lead(text: str, max_chars: int) -> list[str]:
    from maie.runner.candidates import split_units

    chosen: list[str] = []
    for unit in split_units(text):
        if sum(len(c) + 1 for c in [*chosen, unit.text]) > max_chars and chosen:
            break
        chosen.append(unit.text)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--templates", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="llama_cpp", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--old-ref", default="aaae045", help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=3, help="old/new rounds on the short clips")
    parser.add_argument("--no-openai", action="store_true", help="skip the openai-backend run")
    parser.add_argument("--skip-speed", action="store_true", help="quality only (report *-quality.md)")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    old_pkg = old_tree(args.old_ref)
    old_templates = Path(f"/tmp/maie-old-{args.old_ref}") / "templates"
    new_templates = ROOT / "templates"
    old_ref = subprocess.run(["git", "-C", str(old_pkg / "maie" / "runner"), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    new_ref = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "old": old_ref,
        "new": new_ref + (" (+ uncommitted changes)" if _dirty() else ""),
        "speed": [],
        "quality": [],
        "runs": {},
    }

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"summary-{datetime.now(UTC).date()}-{platform.node()[:12] or 'machine'}"
    stem += "-quality" if args.skip_speed else ""

    def save() -> None:  # after every step: a late failure loses nothing measured
        (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str))
        (RESULTS / f"{stem}.md").write_text(render(report))

    # --- speed: old and new interleaved, fresh processes ------------------------------------
    clips = {"jfk": clip_transcript("en_jfk_inaugural.flac"), "en_mm1": clip_transcript("en_mm1")}
    for name, text in clips.items():
        for rnd in range(1, 0 if args.skip_speed else args.rounds + 1):
            for code, pkg, templates in (
                ("old", old_pkg, old_templates),
                ("old+passive", old_pkg, old_templates),
                ("new", None, new_templates),
            ):
                print(f"== speed {name} round {rnd} {code}", flush=True)
                passive = {"OMP_WAIT_POLICY": "PASSIVE"} if code == "old+passive" else {}
                result = run_worker(code, text, templates, pkg, "llama_cpp", env=passive)
                report["speed"].append({"input": name, "round": rnd, **_speed(result)})
                save()

    # --- quality (and the speed of one long meeting) ------------------------------------------
    server = None
    try:
        for name in MEETINGS:
            text, reference = meeting(name)
            runs: dict[str, Any] = {}
            # The old code runs with PASSIVE here: the wait policy changes its speed, not its output.
            for code, pkg, templates in (
                ("old+passive", old_pkg, old_templates),
                ("new", None, new_templates),
            ):
                print(f"== {name} {code}", flush=True)
                passive = {"OMP_WAIT_POLICY": "PASSIVE"} if code == "old+passive" else {}
                runs[code] = run_worker(code, text, templates, pkg, "llama_cpp", env=passive)
                report["speed"].append({"input": name, "round": 1, **_speed(runs[code])})
            if not args.no_openai:
                if server is None:
                    server = start_server()
                print(f"== {name} new-openai", flush=True)
                runs["new-openai"] = run_worker("new", text, new_templates, None, "openai", server[1])
            report["runs"][name] = runs
            max_chars = 400
            from maie.runner.summarize import extractive_summary

            lead_sentences = lead(text, max_chars)
            extract = extractive_summary(text, max_chars)
            rows = [
                score("lead", text, " ".join(lead_sentences), lead_sentences, reference, []),
                score("extractive", text, extract, [extract], reference, []),
            ]
            for code in ("old+passive", "new", "new-openai"):
                run = runs.get(code)
                if run is None:
                    continue
                summary = run.get("summary") or {}
                owners = [a.get("owner") for a in summary.get("action_items", []) if isinstance(a, dict)]
                row = score(
                    code, text, str(summary.get("summary", "")), list_items(summary), reference, owners
                )
                row["error"] = run.get("error")
                row["title"] = summary.get("title")
                rows.append(row)
            for row in rows:
                report["quality"].append({"meeting": name, **row})
            save()
    finally:
        if server is not None:
            server[0].terminate()
            server[0].wait(timeout=10)

    save()
    print(render(report))
    print(f"wrote {RESULTS / stem}.md and .json")


def _dirty() -> bool:
    out = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                         capture_output=True, text=True, check=False).stdout  # fmt: skip
    return bool(out.strip())


def _speed(result: dict[str, Any]) -> dict[str, Any]:
    calls = result.get("calls") or []
    return {
        "code": result.get("code"),
        "stage_s": result.get("stage_s"),
        "load_s": result.get("load_s"),
        "summarize_s": result.get("summarize_s"),
        "llm_calls": len(calls),
        "prompt_eval_s": round(sum(c.get("prompt_ms", 0) for c in calls) / 1000, 2),
        "prompt_tokens": sum(c.get("prompt_tokens", 0) for c in calls),
        "decode_s": round(sum(c.get("decode_ms", 0) for c in calls) / 1000, 2),
        "decode_tokens": sum(c.get("decode_tokens", 0) for c in calls),
        "llm_s": round(sum(c["seconds"] for c in calls), 2),
        "error": (result.get("error") or "")[:300] or None,
    }


def render(report: dict[str, Any]) -> str:
    out = [
        f"# Summaries: quality and speed ({report['date']}, {report['machine']}, {report['cpus']} CPUs)",
        "",
        f"old = {report['old']} (today's pipeline), new = {report['new']}; bundled SmolLM2-135M Q4_1, "
        f"template {TEMPLATE}. Command: `.venv/bin/python benchmarks/summary_eval.py`.",
        "",
        "## Quality on the QMSum meetings (summary field vs the human summary; list items)",
        "",
        "| meeting | system | ROUGE-1 | ROUGE-2 | ROUGE-L | list items | traceable to transcript "
        "| owners not names | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["quality"]:
        traced = "n/a" if r["items_traceable"] is None else f"{r['items_traceable']:.0%}"
        out.append(
            f"| {r['meeting']} | {r['system']} | {r['rouge1']:.3f} | {r['rouge2']:.3f} | {r['rougeL']:.3f} | "
            f"{r['items']} | {traced} | {r['owners_not_names']} | {(r.get('error') or '')[:80]} |"
        )
    out += [
        "",
        "## Speed of the summary stage (seconds; fresh process each, model load included)",
        "",
        "| input | round | code | stage | load | summarize | LLM calls | prompt eval (tokens) "
        "| decoding (tokens) | error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["speed"]:
        out.append(
            f"| {s['input']} | {s['round']} | {s['code']} | {s['stage_s']} | {s['load_s']} "
            f"| {s['summarize_s']} | {s['llm_calls']} | {s['prompt_eval_s']} ({s['prompt_tokens']}) "
            f"| {s['decode_s']} ({s['decode_tokens']}) | "
            f"{(s.get('error') or '')[:60]} |"
        )
    for name, base in (("jfk", "old"), ("jfk", "old+passive"), ("en_mm1", "old"), ("en_mm1", "old+passive")):
        ratios = []
        for rnd in sorted({s["round"] for s in report["speed"] if s["input"] == name}):
            pair = {s["code"]: s for s in report["speed"] if s["input"] == name and s["round"] == rnd}
            if pair.get(base, {}).get("stage_s") and pair.get("new", {}).get("stage_s"):
                ratios.append(pair["new"]["stage_s"] / pair[base]["stage_s"])
        if ratios:
            out += ["", f"**{name}: summary stage new/{base} = {statistics.median(ratios):.2f}** "
                    f"(median of per-round ratios {', '.join(f'{r:.2f}' for r in ratios)})"]  # fmt: skip
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
