"""Streaming multipart upload: the body goes chunk by chunk from the socket to a staging file.

Starlette's own form parser spools files through SpooledTemporaryFile and keeps every field; here
python-multipart's push parser sees each chunk once, the file part is written straight to disk and
the size limit is enforced while bytes arrive (413 mid-stream, partial file removed). Filename and
type are checked as soon as the part's headers arrive, before any of its data is stored.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from maie.api.errors import ApiError

log = logging.getLogger("maie.api.uploads")

# Extension → the MIME types clients send for it. application/octet-stream (curl's default for
# unknown types) is accepted for any allowed extension: the content is probed afterwards anyway.
AUDIO_TYPES: dict[str, set[str]] = {
    "wav": {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"},
    "flac": {"audio/flac", "audio/x-flac"},
    "mp3": {"audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg-3"},
    "ogg": {"audio/ogg", "application/ogg", "audio/vorbis"},
    "opus": {"audio/opus", "audio/ogg"},
    "m4a": {"audio/mp4", "audio/x-m4a", "audio/m4a", "audio/aac"},
    "aac": {"audio/aac", "audio/x-aac"},
    "webm": {"audio/webm", "video/webm"},
}
GENERIC_TYPES = {"application/octet-stream", ""}
ALLOWED_MIME = set().union(*AUDIO_TYPES.values())

MAX_FIELDS = 64
MAX_FIELD_BYTES = 16 * 1024
_MULTIPART_OVERHEAD = 1024 * 1024  # headers, boundaries and text fields around the file
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class StagedUpload:
    """The file part, stored under a server-side name; the client's name is only metadata."""

    path: Path
    filename: str
    extension: str
    content_type: str
    size: int


@dataclass
class ParsedForm:
    fields: dict[str, list[str]] = field(default_factory=dict)
    upload: StagedUpload | None = None


class _Abort(Exception):
    """Stops parsing from inside a parser callback; carries the ApiError to answer with."""

    def __init__(self, error: ApiError):
        self.error = error


def check_filename(raw: str) -> str:
    """Reject names that try to be paths (400): separators, `..`, control characters, absurd length."""
    name = raw.strip()
    if not name:
        raise ApiError(400, "invalid_filename", "the file part has an empty filename")
    if len(name) > 255:
        raise ApiError(400, "invalid_filename", "the filename is longer than 255 characters")
    if "/" in name or "\\" in name or ".." in name or _CONTROL.search(name):
        raise ApiError(
            400, "invalid_filename", "the filename must be a plain name without path separators or '..'"
        )
    if PurePosixPath(name).name != name or name.startswith("."):
        raise ApiError(400, "invalid_filename", "the filename must be a plain, non-hidden name")
    return name


def check_type(filename: str, content_type: str) -> str:
    """The extension (lower case) when extension and MIME type are accepted audio types; else 415."""
    ext = PurePosixPath(filename).suffix.lower().lstrip(".")
    if ext not in AUDIO_TYPES:
        allowed = ", ".join(sorted(AUDIO_TYPES))
        raise ApiError(
            415,
            "unsupported_extension",
            f"'.{ext}' is not a supported audio file extension (allowed: {allowed})"
            if ext
            else f"the filename has no extension (allowed: {allowed})",
        )
    ctype = content_type.split(";")[0].strip().lower()
    if ctype not in GENERIC_TYPES and ctype not in ALLOWED_MIME:
        raise ApiError(
            415, "unsupported_media_type", f"content type '{ctype}' is not audio (send audio/* for the file)"
        )
    return ext


class _FormSink:
    """Parser callbacks: text fields into memory (bounded), the file part onto disk (bounded)."""

    def __init__(self, staging_dir: Path, max_bytes: int, chunk_bytes: int) -> None:
        self.staging_dir = staging_dir
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self.form = ParsedForm()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._name: str | None = None
        self._value = bytearray()
        self._is_file = False
        self._fh: BinaryIO | None = None
        self._field_count = 0
        self.too_large = False

    # headers
    def on_part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._value = bytearray()
        self._is_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        key = self._header_field.decode("latin-1").strip().lower()
        self._headers[key] = self._header_value.decode("latin-1").strip()
        self._header_field = bytearray()
        self._header_value = bytearray()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        name = options.get(b"name")
        if name is None:
            raise _Abort(ApiError(400, "malformed_multipart", "a form part has no name"))
        self._name = name.decode("utf-8", errors="replace")
        self._field_count += 1
        if self._field_count > MAX_FIELDS:
            raise _Abort(ApiError(400, "malformed_multipart", f"more than {MAX_FIELDS} form fields"))
        raw_filename = options.get(b"filename")
        if self._name != "file":
            if raw_filename is not None:
                raise _Abort(ApiError(400, "malformed_multipart", f"unexpected file in field '{self._name}'"))
            return
        if self.form.upload is not None:
            raise _Abort(ApiError(400, "malformed_multipart", "send exactly one 'file' part"))
        try:
            filename = check_filename((raw_filename or b"").decode("utf-8", errors="replace"))
            ext = check_type(filename, self._headers.get("content-type", ""))
        except ApiError as exc:
            raise _Abort(exc) from None
        # A random name (not a uuid4: no os.urandom call; it needs to be unique, not unguessable).
        path = self.staging_dir / f"{random.getrandbits(128):032x}.part"
        try:
            self._fh = path.open("wb", buffering=self.chunk_bytes)  # UPLOAD_CHUNK_BYTES: disk writes
        except FileNotFoundError:  # the backend makes the directory at start; someone removed it
            self.staging_dir.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("wb", buffering=self.chunk_bytes)
        self._is_file = True
        self.form.upload = StagedUpload(
            path=path,
            filename=filename,
            extension=ext,
            content_type=self._headers.get("content-type", "application/octet-stream"),
            size=0,
        )

    # data
    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            upload = self.form.upload
            assert upload is not None and self._fh is not None
            upload.size += end - start
            if upload.size > self.max_bytes:
                self.too_large = True
                raise _Abort(
                    ApiError(
                        413,
                        "file_too_large",
                        f"the file is larger than the {self.max_bytes // (1024 * 1024)} MB limit",
                    )
                )
            self._fh.write(data[start:end])
        else:
            self._value += data[start:end]
            if len(self._value) > MAX_FIELD_BYTES:
                raise _Abort(ApiError(400, "malformed_multipart", f"form field '{self._name}' is too long"))

    def on_part_end(self) -> None:
        if self._is_file:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
        elif self._name is not None:
            self.form.fields.setdefault(self._name, []).append(self._value.decode("utf-8", errors="replace"))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def discard(self) -> None:
        self.close()
        if self.form.upload is not None:
            self.form.upload.path.unlink(missing_ok=True)
            self.form.upload = None


async def _drain(chunks: AsyncIterator[bytes], limit: int) -> None:
    """Read and drop the rest of the body so the client can read our error (up to `limit` bytes)."""
    seen = 0
    with contextlib.suppress(ClientDisconnect):
        async for chunk in chunks:
            seen += len(chunk)
            if seen > limit:
                break


async def receive_form(
    request: Request, staging_dir: Path, max_bytes: int, chunk_bytes: int = 1024 * 1024
) -> ParsedForm:
    """Parse a multipart/form-data body as it streams in; the caller owns (and must remove) the file."""
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise ApiError(
            415, "unsupported_media_type", "send the upload as multipart/form-data with a 'file' part"
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(400, "malformed_multipart", "the multipart content type has no boundary")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + _MULTIPART_OVERHEAD:
        # Refuse before reading: with `Expect: 100-continue` (curl) the body is never even sent.
        raise ApiError(
            413, "file_too_large", f"the upload is larger than the {max_bytes // (1024 * 1024)} MB limit"
        )

    if declared and declared.isdigit():
        # A write buffer larger than the whole body only costs its allocation (1 MiB by default,
        # more than the rest of a small upload's handling together).
        chunk_bytes = max(min(chunk_bytes, int(declared)), 4096)
    sink = _FormSink(staging_dir, max_bytes, chunk_bytes)
    callbacks = {
        "on_part_begin": sink.on_part_begin,
        "on_header_field": sink.on_header_field,
        "on_header_value": sink.on_header_value,
        "on_header_end": sink.on_header_end,
        "on_headers_finished": sink.on_headers_finished,
        "on_part_data": sink.on_part_data,
        "on_part_end": sink.on_part_end,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    chunks = request.stream()
    try:
        async for chunk in chunks:
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except _Abort as abort:
        sink.discard()
        await _drain(chunks, limit=max_bytes * 4 + _MULTIPART_OVERHEAD)
        if abort.error.status_code == 413:
            log.info("upload refused while streaming: larger than %d bytes; partial file removed", max_bytes)
        raise abort.error from None
    except ClientDisconnect:
        sink.discard()
        raise ApiError(400, "client_disconnected", "the client closed the connection mid-upload") from None
    except Exception as exc:  # python-multipart's MultipartParseError and friends
        sink.discard()
        raise ApiError(
            400, "malformed_multipart", f"the multipart body could not be parsed ({exc})"
        ) from None
    finally:
        sink.close()
    if sink.form.upload is not None and sink.form.upload.size == 0:
        sink.discard()
        raise ApiError(422, "empty_file", "the uploaded file is empty")
    return sink.form
