"""The `maie` command: transcribe and summarize locally, serve the API, run the operator or a task.

Heavy modules (models, FastAPI, kopf) are imported inside the commands, so `maie --help` is quick.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import typer
from pydantic import BaseModel
from rich.console import Console

from maie.contract import Feature, ResultDocument, TaskRequest, TaskStatus
from maie.errors import MaieError
from maie.options import Option, nest, public_name, request_options

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="maie",
    help="MAIE — audio to raw transcript, clean transcript and structured summary.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()


def _print_error(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    _print_error(message)
    raise typer.Exit(code)


def _parse_features(value: str) -> list[Feature]:
    try:
        return [Feature(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        allowed = ", ".join(f.value for f in Feature)
        _fail(f"unknown feature in '{value}'; choose from: {allowed}")
        raise  # unreachable


_CLI_TYPES: dict[str, type] = {"boolean": bool, "integer": int, "number": float}


def cli_parameters(options: Iterable[Option]) -> list[inspect.Parameter]:
    """Typer parameters for request options: --flag per option (booleans: --flag/--no-flag),
    type and help from the model; bounds are checked when the request is validated."""
    params = []
    for option in options:
        kind: Any = _CLI_TYPES.get(option.kind, str)
        help_text = option.help
        if option.kind == "array":
            help_text = f"Comma list: {', '.join(option.choices or [])}."
        flags = [option.cli_flag]
        if kind is bool:
            flags = [f"{option.cli_flag}/--no-{option.cli_flag.removeprefix('--')}"]
        annotation = Annotated[kind | None, typer.Option(*flags, help=help_text, show_default=False)]
        params.append(
            inspect.Parameter(
                option.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
            )
        )
    return params


def with_request_options(
    select: Callable[[Option], bool], model: type[BaseModel] = TaskRequest
) -> Callable[[F], F]:
    """Give a command one option per selected request option (generated from the model): the
    command's `**options` receives them by public name (asr_model, beam_size …)."""

    def decorate(fn: F) -> F:
        chosen = [o for o in request_options(model) if o.on_cli and select(o)]
        own = inspect.signature(fn, eval_str=True)
        fixed = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        generated = cli_parameters(chosen)

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        # Positional parameters first, then keyword-only: fixed ones keep their order and defaults.
        ordered = [
            *fixed[:1],
            *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in fixed[1:]),
            *generated,
        ]
        command.__signature__ = own.replace(parameters=ordered)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in ordered}
        return cast(F, command)

    return decorate


def _build_request(
    features: str | None,
    template: str | None,
    options: dict[str, Any],
    default_features: list[Feature] | None = None,
) -> TaskRequest:
    """The TaskRequest from CLI values (public names → the model's shape); one-line errors."""
    from pydantic import ValidationError

    chosen = _parse_features(features) if features else None
    if chosen is None:
        chosen = default_features or [Feature.RAW_TRANSCRIPT, Feature.CLEAN_TRANSCRIPT]
        if template:
            chosen = [*chosen, Feature.SUMMARY]
    try:
        return TaskRequest.model_validate(nest({**options, "features": chosen, "template_id": template}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = public_name(first["loc"]) if first["loc"] else ""
        flag = next((o.cli_flag for o in request_options() if o.name == where), where)
        _fail(f"{flag + ': ' if flag else ''}{str(first['msg']).removeprefix('Value error, ')}")
        raise  # unreachable


def _progress_runner(run):  # type: ignore[no-untyped-def]
    """Run `run(observer)` under a rich progress bar with one line per step."""
    from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from maie.contract import Step

    labels = {
        Step.PREPROCESSING: "Preprocess",
        Step.ASR: "Transcribe",
        Step.ENHANCEMENT: "Enhance",
        Step.SUMMARY: "Summarize",
    }
    with Progress(
        TextColumn("{task.description:<11}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal and not _force_progress(),
    ) as bar:
        tasks: dict[Step, TaskID] = {}

        def observer(update) -> None:  # type: ignore[no-untyped-def]
            if update.step not in tasks:
                tasks[update.step] = bar.add_task(labels[update.step], total=100)
            bar.update(tasks[update.step], completed=max(0.0, min(100.0, 100.0 * update.fraction)))

        return run(observer)


def _force_progress() -> bool:
    import os

    return os.environ.get("MAIE_PROGRESS", "") == "1"


def _write_outputs(doc: ResultDocument, exports: dict[str, str], output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in exports.items():
        (output_dir / name).write_text(text, encoding="utf-8")
    doc.exports = {name: str(output_dir / name) for name in exports}
    (output_dir / "result.json").write_text(doc.to_json(), encoding="utf-8")


def _print_summary(doc: ResultDocument, output_dir: Path) -> None:
    m = doc.metrics
    r = doc.results
    if m is not None:
        duration = f"{m.input_duration_seconds:.1f}s audio, " if m.input_duration_seconds else ""
        rtf = f", RTF {m.rtf:.3f}" if m.rtf is not None else ""
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in m.stage_seconds.items())
        out.print(f"[bold green]done[/] {duration}{m.processing_time_seconds:.1f}s{rtf} ({stages})")
    if r is not None:
        text = r.clean_transcript or r.raw_transcript
        if text:
            preview = text if len(text) <= 300 else text[:297] + "..."
            out.print(f"[bold]transcript:[/] {preview}", highlight=False)
        if r.summary is not None:
            title = r.summary.get("title") if isinstance(r.summary, dict) else None
            out.print(f"[bold]summary:[/] {title or '(see result.json)'}", highlight=False)
    out.print(f"[bold]written:[/] {output_dir / 'result.json'}" + "".join(f", {n}" for n in doc.exports))


@app.command()
@with_request_options(lambda o: True)
def transcribe(
    audio: Annotated[Path, typer.Argument(help="Audio file (wav, flac, mp3, ogg, m4a, opus, webm).")],
    output_dir: Annotated[Path, typer.Option(help="Where result.json and exports go.")] = Path("maie-output"),
    **options: Any,
) -> None:
    """Transcribe (and optionally clean and summarize) one recording."""
    from maie.runner.pipeline import run_pipeline
    from maie.settings import get_settings

    if not audio.is_file():
        _fail(f"no such file: {audio}")
    features, template = options.pop("features"), options.pop("template_id")
    request = _build_request(features, template, options)
    settings = get_settings()
    task_id = str(uuid.uuid4())

    def run(observer):  # type: ignore[no-untyped-def]
        return run_pipeline(
            audio, request, settings=settings, task_id=task_id, observer=observer, work_dir=output_dir
        )

    doc, exports = _progress_runner(run)
    _finish(doc, exports, output_dir)


@app.command()
@with_request_options(lambda o: o.path[0] == "llm")
def summarize(
    transcript: Annotated[Path, typer.Argument(help="A plain-text transcript.")],
    template: Annotated[str, typer.Option(help="Summary template id (see `maie templates`).")],
    output_dir: Annotated[Path, typer.Option(help="Where result.json goes.")] = Path("maie-output"),
    **options: Any,
) -> None:
    """Run the LLM stages on a transcript you already have (--enhancement auto = never here)."""
    from maie.checkpoint import Checkpoint
    from maie.runner.pipeline import run_pipeline
    from maie.settings import get_settings

    if not transcript.is_file():
        _fail(f"no such file: {transcript}")
    try:
        text = transcript.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        _fail(f"{transcript} is not UTF-8 text")
        raise
    if not text.strip():
        _fail(f"{transcript} is empty")
    features = "clean_transcript,summary" if options.get("enhancement") == "always" else "summary"
    request = _build_request(features, template, options)
    settings = get_settings()

    task_id = str(uuid.uuid4())
    given = Checkpoint(task_id=task_id, text_input=" ".join(text.split()))

    def run(observer):  # type: ignore[no-untyped-def]
        return run_pipeline(
            None, request, settings=settings, task_id=task_id, checkpoint=given, observer=observer
        )

    doc, exports = _progress_runner(run)
    _finish(doc, exports, output_dir)


def _finish(doc: ResultDocument, exports: dict[str, str], output_dir: Path) -> None:
    _write_outputs(doc, exports, output_dir)
    if doc.status is TaskStatus.FAILED:
        _fail(f"{doc.error} (details: {output_dir / 'result.json'})", code=1)
    _print_summary(doc, output_dir)


@app.command()
def templates() -> None:
    """List the summary templates."""
    from maie.settings import get_settings
    from maie.templates import TemplateCatalog

    catalog = TemplateCatalog(get_settings().templates_dir)
    for t in catalog.list():
        out.print(f"[bold]{t.template_id}[/]  {t.name} — {t.description}", highlight=False)


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List ASR and LLM backends and whether each is available here."""
    from rich.markup import escape

    from maie.catalog import list_models
    from maie.settings import get_settings

    items = list_models(get_settings())
    if as_json:
        out.print_json(json.dumps([m.model_dump() for m in items]))
        return
    for m in items:
        mark = "[green]available[/]" if m.available else f"[yellow]unavailable[/] ({escape(m.reason or '')})"
        out.print(f"[bold]{m.kind}/{m.backend_id}[/] {m.default_model or ''} — {mark}", highlight=False)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds each model probe (a child process) may take.")
    ] = 180.0,
    only_configured: Annotated[
        bool,
        typer.Option(
            "--only-configured", help="Skip bundled models the settings do not use (e.g. at a Job's start)."
        ),
    ] = False,
) -> None:
    """Check that this machine can do the work: one line per check, ok or PROBLEM with its fix.

    Python and packages, the llama.cpp build against this CPU, DATA_DIR, the API key file, and every
    bundled and configured model loaded and run once in a child process (a crash is caught and
    named). Exit status 1 when any check fails.
    """
    from maie.runner.doctor import main as doctor_main

    raise typer.Exit(doctor_main(as_json=as_json, timeout=timeout, bundled=not only_configured))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default API_PORT).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Store, files and API key (default DATA_DIR).")
    ] = None,
) -> None:
    """Start the REST API and the local executor (embedded mode)."""
    from maie.api.server import serve as run_server

    run_server(host=host, port=port, data_dir=data_dir)


@app.command("operator")
def operator_cmd(
    namespace: Annotated[list[str] | None, typer.Option(help="Namespaces to watch (default: all).")] = None,
) -> None:
    """Run the kopf operator (uses the standard kubeconfig / in-cluster config)."""
    from maie.operator.main import run

    run(namespaces=namespace or [])


@app.command("run-task")
def run_task() -> None:
    """Run one task (the runner Job's entrypoint): the task is in MAIE_TASK, storage is S3."""
    from maie.runner.task import main as run_task_main

    sys.exit(run_task_main([]))


def main() -> None:
    try:
        app()
    except MaieError as exc:  # raised outside a command's own handling: still one line
        _print_error(exc.message)  # (typer.Exit only works inside a command)
        sys.exit(2)


if __name__ == "__main__":
    main()
