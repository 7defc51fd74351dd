"""Which audio a task may read: the rule the operator applies when it admits a resource and the
runner applies again before it reads (it holds the S3 credentials, so it is the last line).

A tenant names its audio with a URI in its own Transcription. Inside MAIE's bucket that URI must lie
under the tenant's own `audio/{namespace}/` prefix — never another namespace's uploads or anyone's
results; other buckets only when the platform team lists them (`S3_ALLOWED_AUDIO_BUCKETS`); an
http(s) URL never to this machine or the cloud's metadata service.
"""

from __future__ import annotations

from maie.errors import MaieError
from maie.settings import Settings
from maie.storage.base import TaskKeys
from maie.urls import UrlRefused, check_outbound_url


class AudioAccessError(MaieError):
    """The task names audio its tenant may not read."""

    code = "audio_not_allowed"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key → (bucket, key)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ValueError(f"s3 URI needs a bucket and a key: {uri}")
    return bucket, key


def tenant_audio_prefix(namespace: str | None) -> str:
    return f"audio/{namespace}/" if namespace else "audio/"


def check_audio_location(uri: str, keys: TaskKeys, settings: Settings, *, resolve: bool = True) -> None:
    """Raise AudioAccessError when the task's tenant may not read this audio. An http(s) URL must not
    reach this machine or the cloud's metadata service (`maie.urls`); `resolve=False` checks only
    what the URL itself says (the operator's admission: no DNS in its path)."""
    if uri.startswith(("http://", "https://")):
        try:
            check_outbound_url(uri, settings, what="the audio URL", resolve=resolve)
        except UrlRefused as exc:
            raise AudioAccessError(exc.message) from None
        return
    if uri.startswith("s3://"):
        try:
            bucket, key = parse_s3_uri(uri)
        except ValueError as exc:
            raise AudioAccessError(str(exc)) from None
    else:  # a key in the task's own store (embedded mode)
        bucket, key = settings.s3_bucket, uri
    if ".." in key.split("/"):
        raise AudioAccessError(f"audio key {key!r} climbs out of its folder")
    if bucket == settings.s3_bucket:
        own = tenant_audio_prefix(keys.namespace)
        if not key.startswith(own):
            raise AudioAccessError(
                f"audio {uri} is outside this namespace's uploads: in bucket {bucket} a task may read only "
                f"{own}… (upload there, or use a bucket listed in S3_ALLOWED_AUDIO_BUCKETS)"
            )
    elif bucket not in settings.s3_allowed_audio_buckets:
        allowed = ", ".join([settings.s3_bucket, *settings.s3_allowed_audio_buckets])
        raise AudioAccessError(
            f"bucket {bucket} is not allowed for audio (allowed: {allowed}; see S3_ALLOWED_AUDIO_BUCKETS)"
        )
