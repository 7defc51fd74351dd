"""A runner that died, in words: which step, what killed it, and the last thing it printed.

The embedded executor sees a worker's return code and stderr; the operator sees a pod's terminated
state (exit code 128 + signal, `OOMKilled`, the log tail the kubelet keeps as the termination
message). Both describe the death the same way here, so "the summary stage crashed: SIGSEGV
(segmentation fault) in the LLM runtime; last output: …" reads the same in both modes.
"""

from __future__ import annotations

import signal

from maie.contract import Step

_SIGNAL_WORDS = {
    signal.SIGSEGV: "segmentation fault",
    signal.SIGBUS: "bus error",
    signal.SIGILL: "illegal instruction: code built for another CPU",
    signal.SIGFPE: "arithmetic fault",
    signal.SIGABRT: "aborted",
    signal.SIGKILL: "killed",
    signal.SIGTERM: "terminated",
}
_CRASHES = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
EXCERPT_CHARS = 600


def signal_from_returncode(returncode: int | None) -> int | None:
    """The signal of a subprocess return code (-N) or a container exit code (128 + N)."""
    if returncode is None:
        return None
    if returncode < 0:
        return -returncode
    if 128 < returncode < 128 + 65:
        return returncode - 128
    return None


def signal_label(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    words = _SIGNAL_WORDS.get(signal.Signals(number))
    return f"{name} ({words})" if words else name


def output_excerpt(text: str) -> str:
    """The lines of a dying process's output that say where it died.

    Python's faulthandler writes "Fatal Python error: Segmentation fault" followed by the stack, most
    recent call first: that line and the innermost frames say more than the tail of a long log."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    fatal = next((i for i, line in enumerate(lines) if line.startswith("Fatal Python error")), None)
    if fatal is not None:
        frames = [line for line in lines[fatal + 1 :] if line.startswith("File ")][:3]
        chosen = [lines[fatal], *frames]
    else:
        chosen = lines[-4:]
    excerpt = " | ".join(chosen)
    return excerpt if len(excerpt) <= EXCERPT_CHARS else "…" + excerpt[-EXCERPT_CHARS:]


def describe_death(
    *,
    step: Step | None,
    returncode: int | None = None,
    oom: bool = False,
    output: str = "",
    when: str = "",
) -> str:
    """One sentence for people: "the summary stage crashed: SIGSEGV (segmentation fault) in the LLM
    runtime; last output: …", "the ASR stage was killed: out of memory (OOMKilled)". `when` adds
    context such as "on attempt 3 of 3"."""
    where = f"the {step.value} stage" if step is not None else "the runner"
    number = signal_from_returncode(returncode)
    if oom:
        what = f"{where} was killed: out of memory (OOMKilled); give it more memory or use a smaller model"
    elif number is not None and number in _CRASHES:
        runtime = f" in {step.runtime}" if step is not None else ""
        what = f"{where} crashed: {signal_label(number)}{runtime}"
    elif number == signal.SIGKILL:
        what = f"{where} was killed (SIGKILL: usually out of memory, or stopped from outside)"
    elif number is not None:
        what = f"{where} was stopped by {signal_label(number)}"
    elif returncode is not None:
        what = f"{where} exited with code {returncode} without finishing"
    else:
        what = f"{where} stopped without finishing"
    if when:
        what += f" ({when})"
    excerpt = output_excerpt(output)
    return f"{what}; last output: {excerpt}" if excerpt else what
