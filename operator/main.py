"""`maie operator`: the kopf operator for Transcriptions, with its own registry and settings.

The registry is built per run (not kopf's global one) so tests can start several operators with
different settings in one process, exactly as `maie operator` would run them.

Several replicas may run (a Deployment with replicas: 2): one leads, the others wait. Leadership is a
coordination.k8s.io Lease (the Kubernetes client's own leader election); only the leader starts
kopf, and a leader that cannot renew its Lease exits at once, so two operators never admit Jobs
together and the concurrency cap holds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import kopf
from kubernetes import client
from kubernetes.config.config_exception import ConfigException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from maie.errors import MaieError
from maie.kube import load_configuration
from maie.metrics import start_operator_metrics_server
from maie.operator.handlers import Context, register
from maie.settings import Settings, get_settings
from maie.transcription import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger("maie.operator")
LEASE_NAME = "maie-operator"


def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then KUBECONFIG (read now, not at import time)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def configure(kopf_settings: kopf.OperatorSettings) -> kopf.OperatorSettings:
    """Keep status clean (kopf's bookkeeping in annotations), Events meaningful, watches narrow."""
    prefix = "operator.maie.io"
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=prefix)
    kopf_settings.persistence.finalizer = f"{prefix}/cleanup"
    kopf_settings.posting.level = logging.WARNING  # our handlers post the Events worth reading
    kopf_settings.scanning.disabled = True  # namespaces are given; no cluster-wide namespace list
    kopf_settings.watching.server_timeout = 300
    kopf_settings.execution.max_workers = 8
    # Only MAIE's Jobs and pods, filtered by the API server (not every pod of the cluster, client-side).
    ours = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    kopf_settings.watching.label_selectors["batch", "jobs"] = ours
    kopf_settings.watching.label_selectors["pods"] = ours
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


def wait_for_leadership(settings: Settings, identity: str) -> None:
    """Block until this replica holds the Lease; renew it in the background, exit when it is lost."""
    lease = settings.operator_lease_seconds
    leading = threading.Event()

    def lost() -> None:
        log.error(
            "lost the leader Lease %s/%s; exiting so another replica leads",
            settings.operator_namespace,
            LEASE_NAME,
        )
        logging.shutdown()
        os._exit(1)

    config = electionconfig.Config(
        LeaseLock(LEASE_NAME, settings.operator_namespace, identity),
        lease_duration=lease,
        renew_deadline=lease * 2 / 3,
        retry_period=max(1.0, lease / 7.5),
        onstarted_leading=leading.set,
        onstopped_leading=lost,
    )
    election = leaderelection.LeaderElection(config)

    def elect() -> None:
        try:
            election.run()
        except Exception:  # the election itself broke: never go on without knowing who leads
            log.exception("leader election failed")
            lost()

    threading.Thread(target=elect, name="leader-election", daemon=True).start()
    log.info("waiting to lead (Lease %s/%s, identity %s)", settings.operator_namespace, LEASE_NAME, identity)
    leading.wait()
    log.info("leading: starting the operator")


def run(namespaces: Sequence[str] = ()) -> None:
    """Watch the given namespaces (all when none); blocks until stopped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        configuration = load_configuration()  # fail fast with a clear error when no cluster is configured
    except ConfigException as exc:
        raise MaieError(f"no Kubernetes configuration: run in a pod or set KUBECONFIG ({exc})") from exc
    client.Configuration.set_default(configuration)  # the leader election's client uses the default
    settings = get_settings()
    start_operator_metrics_server(settings.operator_metrics_port)  # Prometheus /metrics, own port
    wait_for_leadership(settings, f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    registry, _ = build(settings, namespaces=namespaces)
    kopf.run(
        registry=registry,
        settings=configure(kopf.OperatorSettings()),
        standalone=True,  # the Lease, not kopf's peering, decides who works
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=f"http://0.0.0.0:{settings.operator_health_port}/healthz",
    )
