"""A real `maie serve` in a subprocess on a free port, and helpers to talk to it over HTTP."""

from __future__ import annotations

import contextlib
import mimetypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from maie.settings import Settings

# The redistributable recordings the repository carries (tests/data/MANIFEST.tsv).
AUDIO = Path(__file__).resolve().parents[1] / "data" / "audio"

JFK = AUDIO / "en_jfk_inaugural.flac"
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you,"
    " ask what you can do for your country."
)
TIMIT = AUDIO / "en_timit_LDC93S1.wav"
TIMIT_TEXT = "She had your dark suit in greasy wash water all year."
STEW = AUDIO / "en_librispeech_1089-134686-0000.flac"
STEW_TEXT = (
    "HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS AND BRUISED POTATOES AND FAT MUTTON PIECES"
    " TO BE LADLED OUT IN THICK PEPPERED FLOUR FATTENED SAUCE"
)
LIBRI = AUDIO / "en_librispeech_1089-134691-0000.flac"
LIBRI_TEXT = "HE COULD WAIT NO LONGER"

MAX_FILE_SIZE_MB = 2  # the shared test server's upload limit
FINISHED = {"COMPLETE", "FAILED"}
RUNNING_STAGES = {"PREPROCESSING", "PROCESSING_ASR", "PROCESSING_LLM"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**overrides: Any) -> dict[str, str]:
    """This process's environment without any MAIE setting, plus the given ones (upper-cased)."""
    names = {n.upper() for n in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update({k.upper(): str(v) for k, v in overrides.items()})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class ApiServer:
    """`python -m maie.cli serve` on a free port, with its own data directory and log file."""

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        self.data_dir = data_dir
        self.settings = {"heartbeat_interval": 0.5, **settings}
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ApiServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "maie.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir)],
            env=clean_env(**self.settings),
            cwd=self.data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"server did not become healthy in {timeout} s:\n{self.log_text()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def api_key(self) -> str:
        if "secret_api_key" in self.settings:
            return str(self.settings["secret_api_key"])
        return (self.data_dir / "api-key").read_text().strip()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"X-API-Key": self.api_key}, timeout=60, **kwargs)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs (what a crash or OOM kill does)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def running_server(data_dir: Path, **settings: Any) -> Iterator[ApiServer]:
    server = ApiServer(data_dir, **settings).start()
    try:
        yield server
    finally:
        server.stop()


def submit(client: httpx.Client, path: Path, features: list[str] | None = None, **fields: Any) -> str:
    data: dict[str, Any] = {"features": features or ["raw_transcript"], **fields}
    with path.open("rb") as fh:
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        response = client.post("/v1/process", files={"file": (path.name, fh, ctype)}, data=data)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    assert isinstance(task_id, str)
    return task_id


def wait_for(
    client: httpx.Client, task_id: str, statuses: set[str], timeout: float = 180.0
) -> dict[str, Any]:
    """Poll GET /v1/status until the task's status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"/v1/status/{task_id}")
        assert response.status_code == 200, response.text
        doc = response.json()
        if doc["status"] in statuses:
            return doc
        if doc["status"] in FINISHED:
            raise AssertionError(f"task ended as {doc['status']}: {doc.get('error')}")
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} still {doc.get('status')} after {timeout} s")


def normalise(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


def multipart(
    filename: str | None = "clip.wav",
    content_type: str = "audio/wav",
    data: bytes = b"",
    fields: list[tuple[str, str]] | None = None,
    boundary: str = "maieboundary1234",
) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body built by hand, so filenames reach the server exactly as written."""
    out = bytearray()
    for name, value in fields or []:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    if filename is not None:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def wav_header(data_bytes: int, sample_rate: int = 16000) -> bytes:
    """A canonical 16-bit mono PCM wav header announcing `data_bytes` of samples."""
    import struct

    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def trimmed_wav(source: Path, seconds: float, target: Path) -> Path:
    """The first `seconds` of a real PCM wav recording, as a new wav file."""
    import wave

    with wave.open(str(source), "rb") as src:
        frames = src.readframes(int(src.getframerate() * seconds))
        with wave.open(str(target), "wb") as dst:
            dst.setparams(src.getparams())
            dst.writeframes(frames)
    return target
