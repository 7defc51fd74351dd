"""`maie operator`: the kopf operator for Transcriptions, with its own registry and settings.

The registry is built per run (not kopf's global one) so tests can start several operators with
different settings in one process, exactly as `maie operator` would run them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import kopf
from kubernetes.config.config_exception import ConfigException

from maie.errors import MaieError
from maie.kube import load_configuration
from maie.metrics import start_operator_metrics_server
from maie.operator.handlers import Context, register
from maie.settings import Settings, get_settings


def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then KUBECONFIG (read now, not at import time)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def configure(kopf_settings: kopf.OperatorSettings) -> kopf.OperatorSettings:
    """Keep status clean (kopf's bookkeeping in annotations) and Events meaningful."""
    prefix = "operator.maie.io"
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=prefix)
    kopf_settings.persistence.finalizer = f"{prefix}/cleanup"
    kopf_settings.posting.level = logging.WARNING  # our handlers post the Events worth reading
    kopf_settings.scanning.disabled = True  # namespaces are given; no cluster-wide namespace list
    kopf_settings.watching.server_timeout = 300
    kopf_settings.execution.max_workers = 8
    return kopf_settings


def build(
    settings: Settings | None = None, namespaces: Sequence[str] = ()
) -> tuple[kopf.OperatorRegistry, Context]:
    """A registry with every handler, and the context they share."""
    registry = kopf.OperatorRegistry()
    ctx = Context(settings=settings or get_settings(), namespaces=list(namespaces))
    kopf.on.login(registry=registry)(_login)
    register(registry, ctx)
    return registry, ctx


def run(namespaces: Sequence[str] = ()) -> None:
    """Watch the given namespaces (all when none); blocks until stopped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        load_configuration()  # fail fast with a clear error when no cluster is configured
    except ConfigException as exc:
        raise MaieError(f"no Kubernetes configuration: run in a pod or set KUBECONFIG ({exc})") from exc
    registry, ctx = build(namespaces=namespaces)
    start_operator_metrics_server(ctx.settings.operator_metrics_port)  # Prometheus /metrics, own port
    kopf.run(
        registry=registry,
        settings=configure(kopf.OperatorSettings()),
        standalone=True,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint="http://0.0.0.0:8080/healthz",
    )
