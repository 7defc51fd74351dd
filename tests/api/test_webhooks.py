"""Webhooks: signed POSTs of the status document to a real local HTTP receiver, retried with backoff
and recorded in the status; SSRF targets refused with a clear 422."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import LIBRI, running_server, submit, wait_for

from maie.settings import Settings
from maie.webhooks import WebhookUrlError, check_url, signature, verify
from tests.receiver import Receiver

pytestmark = pytest.mark.e2e

SECRET = "webhook-test-secret"


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    r = Receiver(getattr(request, "param", []))
    yield r
    r.close()


# --- the signature and the URL rules, on their own ---------------------------------------------
@pytest.mark.unit
def test_the_documented_signature_recipe_verifies_and_rejects_tampering() -> None:
    body = b'{"task_id": "t", "status": "COMPLETE"}'
    now = int(time.time())
    header = signature(SECRET, now, body)
    assert header.startswith(f"t={now},v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, header, body)
    assert not verify(SECRET, header, body + b" ")  # a changed body
    assert not verify("another-secret", header, body)
    assert not verify(SECRET, signature(SECRET, now - 3600, body), body)  # an old replay
    assert not verify(SECRET, "nonsense", body)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/x",
        "http://localhost/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://0.0.0.0/",
        "ftp://example.org/x",
        "http:///nohost",
        "http://\x80/x",  # no valid host name (found by the API fuzz test: it was a 500)
        "http://example.org:99999/x",  # no valid port
    ],
)
@pytest.mark.unit
def test_loopback_link_local_and_metadata_targets_are_refused(url: str) -> None:
    with pytest.raises(WebhookUrlError):
        check_url(url, Settings())


@pytest.mark.unit
def test_an_allowed_network_is_reachable() -> None:
    check_url("http://127.0.0.1:9/x", Settings(allowed_internal_networks=["127.0.0.0/8"]))
    check_url("http://10.1.2.3/x", Settings())  # private (in-cluster) receivers are fine
    with pytest.raises(WebhookUrlError):
        check_url("http://169.254.169.254/", Settings(allowed_internal_networks=["127.0.0.0/8"]))


# --- end to end through the embedded service ------------------------------------------------------
@pytest.mark.parametrize("receiver", [[500, 503]], indirect=True)
def test_a_receiver_that_fails_twice_then_succeeds(receiver: Receiver, data_dir: Path) -> None:
    with (
        running_server(
            data_dir,
            secret_api_key="k-hook",
            webhook_secret=SECRET,
            allowed_internal_networks='["127.0.0.0/8"]',
        ) as srv,
        srv.client() as c,
    ):
        task_id = submit(c, LIBRI, ["raw_transcript"], callback_url=receiver.url)
        wait_for(c, task_id, {"COMPLETE"})
        deadline = time.monotonic() + 30
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            doc = c.get(f"/v1/status/{task_id}").json()
            if (doc.get("webhook") or {}).get("state") == "delivered":
                break
            time.sleep(0.2)
    hook = doc["webhook"]
    assert hook["state"] == "delivered" and hook["url"] == receiver.url
    assert [a["status"] for a in hook["attempts"]] == [500, 503, 200]
    assert len(receiver.received) == 3  # and no more once it succeeded
    gaps = [b[2] - a[2] for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    assert gaps[1] > gaps[0] * 1.5  # backoff: 1 s, then 2 s
    headers, body, _ = receiver.received[-1]
    assert verify(SECRET, headers["maie-signature"], body)
    sent = json.loads(body)
    assert sent["task_id"] == task_id and sent["status"] == "COMPLETE"
    assert "wait no longer" in sent["results"]["raw_transcript"].lower()


@pytest.mark.parametrize("receiver", [[500] * 100], indirect=True)
def test_retries_stop_after_their_time(receiver: Receiver, data_dir: Path) -> None:
    with (
        running_server(
            data_dir,
            secret_api_key="k-hook2",
            allowed_internal_networks='["127.0.0.0/8"]',
            webhook_retry_seconds=4,
        ) as srv,
        srv.client() as c,
    ):
        task_id = submit(c, LIBRI, ["raw_transcript"], callback_url=receiver.url)
        wait_for(c, task_id, {"COMPLETE"})
        deadline = time.monotonic() + 30
        hook: dict[str, Any] = {}
        while time.monotonic() < deadline and hook.get("state") != "failed":
            hook = c.get(f"/v1/status/{task_id}").json().get("webhook") or {}
            time.sleep(0.2)
        count = len(receiver.received)
        time.sleep(2.5)
        # The generated secret signs too: it is in DATA_DIR/webhook-secret, owner-only.
        secret = (data_dir / "webhook-secret").read_text().strip()
    assert hook["state"] == "failed" and 2 <= len(hook["attempts"]) <= 4
    assert all(a["status"] == 500 for a in hook["attempts"])
    assert len(receiver.received) == count  # it stopped
    assert verify(secret, receiver.received[0][0]["maie-signature"], receiver.received[0][1])
    assert (data_dir / "webhook-secret").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:9/x", "not a url", "http://\x80"]
)
def test_an_ssrf_target_is_refused_with_a_clear_422(client: httpx.Client, url: str) -> None:
    with LIBRI.open("rb") as fh:
        response = client.post(
            "/v1/process",
            files={"file": (LIBRI.name, fh, "audio/flac")},
            data={"features": "raw_transcript", "callback_url": url},
        )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] in ("callback_url_refused", "invalid_parameter") and "callback_url" in body["detail"]
