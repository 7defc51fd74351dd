"""The benchmark report: benchmarks/results/<date>-<machine>.md with tables, plus a PNG plot."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runs import Run, ratio_summary

if TYPE_CHECKING:
    from corpus import Recording

TARGET = 0.60


def _median(runs: list[Run], engine: str, attr: str = "wall_s") -> float | None:
    values = [
        getattr(r, attr) for r in runs if r.engine == engine and not r.error and getattr(r, attr) is not None
    ]
    return statistics.median(values) if values else None


def _overhead(runs: list[Run]) -> str:
    """The pipeline's own share of maie's wall time: everything outside faster-whisper's calls."""
    shares = [
        (r.wall_s - r.engine_s) / r.wall_s
        for r in runs
        if r.engine == "maie" and not r.error and r.engine_s is not None and r.wall_s
    ]
    if not shares:
        return "maie pipeline overhead: not measured"
    return (
        f"maie pipeline overhead (wall time outside faster-whisper's calls: decoding the file, "
        f"resampling, hashing, progress, writing result.json and exports; the model loads alongside "
        f"the file's decoding, so this is what the pipeline adds to faster-whisper's own time; "
        f"target < 5%): median "
        f"{100 * statistics.median(shares):.1f}% over {len(shares)} run(s), largest {100 * max(shares):.1f}%"
    )


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _comparison_table(runs: list[Run], engines: list[str]) -> list[str]:
    lines = ["| round | " + " | ".join(f"{e} s" for e in engines) + " | maie / bare | wct2 / bare |",
             "|---|" + "---|" * (len(engines) + 2)]  # fmt: skip
    rounds = sorted({r.round for r in runs})
    for rnd in rounds:
        cells = {r.engine: r for r in runs if r.round == rnd}
        walls = [_fmt(cells[e].wall_s) if e in cells and not cells[e].error else "error" for e in engines]
        bare = cells.get("bare")
        ratio = (
            _fmt(cells["maie"].wall_s / bare.wall_s, 3)
            if bare and "maie" in cells and bare.wall_s and not cells["maie"].error
            else "–"
        )
        wct2 = (
            _fmt(cells["wct2"].wall_s / bare.wall_s, 3) if bare and "wct2" in cells and bare.wall_s else "–"
        )
        lines.append(f"| {rnd + 1} | " + " | ".join(walls) + f" | {ratio} | {wct2} |")
    _, med = ratio_summary(runs, "maie", "bare")
    _, med_wct2 = ratio_summary(runs, "wct2", "bare")
    meds = [_fmt(_median(runs, e)) for e in engines]
    lines.append("| **median** | " + " | ".join(meds) + f" | **{_fmt(med, 3)}** | {_fmt(med_wct2, 3)} |")
    return lines


def _engine_table(runs: list[Run], engines: list[str]) -> list[str]:
    lines = [
        "| engine | wall s (median) | RTF | WER | WER (Whisper norm.) | peak RSS MB | inference |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in engines:
        sel = [r for r in runs if r.engine == e and not r.error]
        if not sel:
            err = next((r.error for r in runs if r.engine == e), "no run")
            lines.append(f"| {e} | error: {err} | | | | | |")
            continue
        wall = statistics.median(r.wall_s for r in sel)
        wers = [r.wer for r in sel if r.wer is not None]
        wn = [r.wer_whisper_norm for r in sel if r.wer_whisper_norm is not None]
        lines.append(
            f"| {e} | {wall:.2f} | {wall / sel[0].duration:.3f} | "
            f"{_fmt(statistics.median(wers), 3) if wers else '–'} | "
            f"{_fmt(statistics.median(wn), 3) if wn else '–'} | "
            f"{max(r.peak_rss_mb for r in sel):.0f} | "
            f"{sel[0].inference or ('sequential' if e == 'bare' else '–')} |"
        )
    return lines


def write_report(
    results: Path,
    machine: str,
    info: dict[str, Any],
    hp0: Recording,
    hp0_runs: list[Run],
    per_recording: list[Run],
    long_rec: Recording | None,
    long_runs: list[Run],
    llm_run: Run | None,
    api: dict[str, Any] | None,
) -> Path:

    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    path = results / f"{stamp}-{machine}.md"
    engines = [e for e in ("maie", "bare", "wct2") if any(r.engine == e for r in hp0_runs)]
    _, med = ratio_summary(hp0_runs, "maie", "bare")
    maie_wer, bare_wer = _median(hp0_runs, "maie", "wer"), _median(hp0_runs, "bare", "wer")
    met = med is not None and med <= TARGET and maie_wer is not None and bare_wer is not None
    met = met and maie_wer <= bare_wer + 1e-9  # type: ignore[operator]

    out: list[str] = [f"# MAIE benchmark — {info['date']} — {machine}", ""]
    out += [
        f"- CPU: {info['cpu']} ({info['cores']} cores, shared with other work: load average "
        f"{info['loadavg_start'][0]:.1f} at start, {info.get('loadavg_end', (0,))[0]:.1f} at end)",
        f"- GPU: {info['gpu']}",
        f"- faster-whisper {info['faster-whisper']}, ctranslate2 {info['ctranslate2']}, "
        f"llama-cpp-python {info['llama-cpp-python']}, Python {info['python']}",
        "- ASR for every engine: `tiny.en` (bundled CTranslate2 model), int8, beam 5, Silero VAD "
        "(min_silence_duration_ms=500, speech_pad_ms=400), condition_on_previous_text where sequential.",
        "- maie = `run_pipeline` (PyAV preprocessing + the whisper backend, default settings: batched "
        "inference, batch 4, for audio ≥ 60 s, then speech left without words decoded again); "
        "bare = plain sequential `WhisperModel.transcribe`; "
        "wct2 = the `whisper-ctranslate2` CLI (own venv, same model directory).",
        "- Wall time includes model load. maie and bare are timed inside their process (imports "
        "excluded); wct2 is the whole CLI process (interpreter start and imports included, ~1–2 s).",
        "- WER after lower-casing and removing punctuation (jiwer); references from the data MANIFESTs. "
        "'WER (Whisper norm.)' uses Whisper's English text normaliser (package whisper-normalizer) "
        'instead, which also unifies numbers and spellings ("2,046,343" = "2 million 46 343").',
        "",
        f"## Target: maie ≤ {TARGET:.2f}× bare faster-whisper on {hp0.name} ({hp0.duration:.0f} s), "
        "WER no worse",
        "",
        f"**{'MET' if met else 'NOT MET'}** — median time ratio maie/bare = {_fmt(med, 3)} over "
        f"{len({r.round for r in hp0_runs})} interleaved rounds; WER maie {_fmt(maie_wer, 3)} vs bare "
        f"{_fmt(bare_wer, 3)}.",
        "",
        *_comparison_table(hp0_runs, engines),
        "",
        *_engine_table(hp0_runs, engines),
        "",
        _overhead(hp0_runs),
        "",
    ]
    if long_rec is not None:
        out += [
            f"## Long input: {long_rec.duration / 60:.1f} min of concatenated real recordings",
            "",
            *_engine_table(long_runs, engines),
            "",
        ]
        _, long_ratio = ratio_summary(long_runs, "maie", "bare")
        out += [f"maie / bare wall-time ratio: {_fmt(long_ratio, 3)}", "", _overhead(long_runs), ""]
        maie_long = next((r for r in long_runs if r.engine == "maie" and not r.error), None)
        if maie_long:
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in maie_long.stage_seconds.items())
            out += [
                f"maie stages: {stages}; RTF {maie_long.rtf:.3f}; peak RSS {maie_long.peak_rss_mb:.0f} MB",
                "",
            ]

    out += [
        "## Every recording (maie and bare faster-whisper, one round each)",
        "",
        "| recording | dur s | maie s | stages (s) | RTF | RSS MB | mode | bare s | ratio | WER maie "
        "| WER bare |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = list(dict.fromkeys(r.recording for r in per_recording))
    for name in names:
        m = next((r for r in per_recording if r.recording == name and r.engine == "maie"), None)
        b = next((r for r in per_recording if r.recording == name and r.engine == "bare"), None)
        if m is None or m.error:
            out.append(f"| {name} | | error: {m.error if m else 'no run'} | | | | | | | | |")
            continue
        stages = " / ".join(f"{k[:3]} {v:.2f}" for k, v in m.stage_seconds.items())
        ratio = _fmt(m.wall_s / b.wall_s, 2) if b and not b.error and b.wall_s else "–"
        out.append(
            f"| {name} | {m.duration:.1f} | {m.wall_s:.2f} | {stages} | {m.rtf:.3f} | {m.peak_rss_mb:.0f} | "
            f"{m.inference or '–'} | {_fmt(b.wall_s if b else None)} | {ratio} | "
            f"{_fmt(m.wer, 3)} | {_fmt(b.wer if b else None, 3)} |"
        )
    out += ["", "Vietnamese clips have no WER here: `tiny.en` is English-only (they show timing only).", ""]

    if llm_run is not None:
        out += ["## With the LLM stages (bundled SmolLM2-135M Q4_1, summary template meeting_notes_v1)", ""]
        if llm_run.error:
            out += [f"error: {llm_run.error}", ""]
        else:
            stages = ", ".join(f"{k} {v:.2f} s" for k, v in llm_run.stage_seconds.items())
            out += [
                f"{llm_run.recording} ({llm_run.duration:.0f} s): {llm_run.wall_s:.2f} s end to end "
                f"(RTF {llm_run.rtf:.2f}), peak RSS {llm_run.peak_rss_mb:.0f} MB; stages: {stages}",
                "",
            ]

    out += ["## API (embedded mode, `maie serve` on 127.0.0.1)", ""]
    if api is None:
        out += ["not run (--no-api)", ""]
    elif "skipped" in api:
        out += [f"skipped: {api['skipped']}", ""]
    else:
        from api_load import report as api_report

        out += [api_report(api).split("\n", 2)[2], ""]  # api_load's own table and ratios, less its title
    out += ["GPU: none on this machine — no VRAM or GPU timing figures (none invented).", ""]

    plot = _plot(path.with_suffix(".png"), hp0_runs, long_runs, per_recording, engines)
    if plot is not None:
        out += [f"![benchmark]({plot.name})", ""]
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def _plot(
    target: Path, hp0_runs: list[Run], long_runs: list[Run], per: list[Run], engines: list[str]
) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    colours = {"maie": "#2a7de1", "bare": "#999999", "wct2": "#e1892a"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    groups = [("en_hp0 (4.5 min)", hp0_runs)] + ([("long input", long_runs)] if long_runs else [])
    width = 0.8 / max(1, len(engines))
    ax = axes[0]
    for i, engine in enumerate(engines):
        vals = [_median(runs, engine) or 0.0 for _, runs in groups]
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, vals, width, label=engine, color=colours.get(engine))
        for x, v in zip(xs, vals, strict=True):
            ax.text(x, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks([g + width * (len(engines) - 1) / 2 for g in range(len(groups))], [g for g, _ in groups])
    ax.set_ylabel("wall seconds (median, model load included)")
    ax.set_title("maie vs bare faster-whisper vs whisper-ctranslate2 (tiny.en int8)")
    ax.legend()
    ax = axes[1]
    names = list(dict.fromkeys(r.recording for r in per))
    for i, engine in enumerate(["maie", "bare"]):
        vals = [
            next((r.rtf for r in per if r.recording == n and r.engine == engine and not r.error), 0.0)
            for n in names
        ]
        ax.bar([x + i * 0.4 for x in range(len(names))], vals, 0.4, label=engine, color=colours[engine])
    ax.set_xticks([x + 0.2 for x in range(len(names))], [n.split(".")[0][:22] for n in names], rotation=60,
                  ha="right", fontsize=7)  # fmt: skip
    ax.set_ylabel("RTF (wall / audio duration)")
    ax.set_title("every recording (short clips: model load dominates)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
