"""GET /v1/status/{id}/events over a real streaming HTTP connection (httpx), with resumption."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from api_support import JFK, JFK_TEXT, LIBRI, ApiServer, submit, wait_for, wer

RANK = {
    "PENDING": 0, "PREPROCESSING": 1, "PROCESSING_ASR": 2, "PROCESSING_LLM": 3, "COMPLETE": 4, "FAILED": 4,
}  # fmt: skip


@dataclass
class Event:
    event: str
    id: int | None
    data: str
    comment: bool = False


def read_events(response: httpx.Response) -> Iterator[Event]:
    """Parse text/event-stream as it arrives (blank line = end of one event; no data = no event, as
    EventSource does with the `retry:` block)."""
    fields: dict[str, str] = {}
    comment = False
    for line in response.iter_lines():
        if line == "":
            if "data" in fields or (comment and not fields):
                raw_id = fields.get("id")
                yield Event(fields.get("event", "message"), int(raw_id) if raw_id else None,
                            fields.get("data", ""), comment and not fields)  # fmt: skip
            fields, comment = {}, False
        elif line.startswith(":"):
            comment = True
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def stream(server: ApiServer, task_id: str, last_id: int | None = None) -> httpx.Response:
    headers = {"X-API-Key": server.api_key}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    client = httpx.Client(base_url=server.base_url, timeout=120)
    request = client.build_request("GET", f"/v1/status/{task_id}/events", headers=headers)
    return client.send(request, stream=True)


def test_stage_events_in_order_then_the_final_document(server: ApiServer, client: httpx.Client) -> None:
    task_id = submit(client, JFK)
    response = stream(server, task_id)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in read_events(response) if not e.comment]
    response.close()

    kinds = [e.event for e in events]
    assert kinds[-1] == "result" and "result" not in kinds[:-1], kinds
    assert kinds[0] == "stage" and kinds.count("stage") >= 2, kinds  # PENDING, then the stages seen
    ids = [e.id for e in events]
    assert all(i is not None for i in ids) and ids == sorted(set(ids)), ids  # strictly increasing
    states = [json.loads(e.data) for e in events[:-1]]
    ranks = [RANK[s["status"]] for s in states]
    assert ranks == sorted(ranks), states
    stages = [s["status"] for s, e in zip(states, events, strict=False) if e.event == "stage"]
    assert len(stages) == len(set(stages)), stages  # one `stage` event per stage
    assert "PROCESSING_ASR" in stages, stages
    assert all(s["step"] == "asr" for s in states if s["status"] == "PROCESSING_ASR"), states
    final = json.loads(events[-1].data)
    assert final["task_id"] == task_id and final["status"] == "COMPLETE"
    assert wer(JFK_TEXT, final["results"]["raw_transcript"]) < 0.2
    assert final["versions"]["asr_backend"]["name"] == "whisper" and final["metrics"]["rtf"] > 0


def test_resumed_stream_repeats_nothing_and_idle_streams_get_keepalives(
    server: ApiServer, client: httpx.Client
) -> None:
    # The second task waits in the queue behind the first (one worker): PENDING long enough to be idle.
    first = submit(client, LIBRI)
    task_id = submit(client, JFK)
    response = stream(server, task_id)
    seen: list[Event] = []
    keepalive = False
    for event in read_events(response):
        if event.comment:
            keepalive = True
            continue
        seen.append(event)
        if event.event == "stage" and json.loads(event.data)["status"] != "PENDING":
            break  # hang up mid-task, as a dropped connection would
    response.close()
    assert seen and seen[-1].id is not None
    assert keepalive, "no keep-alive comment while the task waited (SSE_KEEPALIVE_SECONDS=1)"

    resumed = stream(server, task_id, last_id=seen[-1].id)
    assert resumed.status_code == 200
    rest = [e for e in read_events(resumed) if not e.comment]
    resumed.close()
    assert rest and rest[-1].event == "result"
    last = seen[-1].id
    assert all(e.id is not None and e.id > last for e in rest), ([e.id for e in seen], [e.id for e in rest])
    all_ids = [e.id for e in seen + rest]
    assert len(all_ids) == len(set(all_ids))
    assert json.loads(rest[-1].data)["status"] == "COMPLETE"

    # After the final event there is nothing more: 204 tells EventSource to stop reconnecting.
    done = stream(server, task_id, last_id=rest[-1].id)
    assert done.status_code == 204
    done.close()
    # A client that saw nothing yet gets the whole finished story at once: just the result.
    again = stream(server, task_id)
    assert [e.event for e in read_events(again) if not e.comment] == ["result"]
    again.close()
    wait_for(client, first, {"COMPLETE"})


def test_unknown_task_and_missing_key(server: ApiServer, anon: httpx.Client) -> None:
    response = stream(server, "00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    response.read()
    assert response.json()["code"] == "task_not_found"
    response.close()
    assert anon.get("/v1/status/00000000-0000-0000-0000-000000000000/events").status_code == 401
