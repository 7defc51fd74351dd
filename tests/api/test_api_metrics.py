"""GET /metrics parsed with the Prometheus client's own parser; its counters move with a real task."""

from __future__ import annotations

from pathlib import Path

import httpx
from api_support import JFK, ApiServer, free_port, running_server, submit, wait_for
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_parse_and_move_with_a_task(
    server: ApiServer, client: httpx.Client, anon: httpx.Client
) -> None:
    before = scrape(anon)  # public, like /health
    task_id = submit(client, JFK)
    wait_for(client, task_id, {"COMPLETE"})
    client.get(f"/v1/status/{task_id}")
    after = scrape(anon)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("maie_tasks_submitted_total", route="/v1/process") == 1
    assert moved("maie_upload_bytes_total") == JFK.stat().st_size
    assert moved("maie_upload_size_bytes_count") == 1
    assert moved("maie_http_requests_total", method="POST", route="/v1/process", status="202") == 1
    assert moved("maie_http_requests_total", method="GET", route="/v1/status/{task_id}", status="200") >= 1
    assert moved("maie_http_request_duration_seconds_count", method="GET", route="/v1/status/{task_id}") >= 1
    assert moved("maie_tasks_finished_total", status="COMPLETE", error_code="") >= 1  # earlier tasks too
    assert moved("maie_stage_seconds_count", stage="asr") >= 1
    assert moved("maie_stage_seconds_sum", stage="asr") > 0
    assert moved("maie_task_processing_seconds_count") >= 1
    assert value(after, "maie_queue_depth") >= 0 and ("maie_tasks_running", ()) in after
    assert value(after, "maie_health_check_ok", check="task_store") == 1
    # Task ids never become label values.
    assert not any(task_id in str(labels) for _, labels in after)


def test_metrics_can_require_the_key(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", secret_api_key="k", metrics_require_key=True) as srv:
        assert httpx.get(f"{srv.base_url}/metrics").status_code == 401
        with httpx.Client(base_url=srv.base_url, headers={"Authorization": "Bearer k"}) as c:
            families = text_string_to_metric_families(c.get("/metrics").text)
            assert "maie_http_requests" in {f.name for f in families}


def test_operator_metrics_server() -> None:
    from maie import metrics

    port = free_port()
    metrics.start_operator_metrics_server(port, addr="127.0.0.1")
    metrics.OPERATOR_JOBS_CREATED.inc()
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"maie_operator_jobs_created", "maie_tasks_finished", "maie_stage_seconds"} <= names
