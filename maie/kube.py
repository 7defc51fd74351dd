"""A thin, dict-based client of the few API calls the operator, the runner and the API make.

Dicts rather than the client's generated models: the custom resource has no generated model, and
dicts go straight into the Pydantic models of maie.transcription. The configuration is resolved the
standard way — in-cluster service account first, then KUBECONFIG / ~/.kube/config — and read when a
client is made (not at import time), so tests and tools can point it elsewhere.
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from maie.transcription import GROUP, PLURAL, VERSION

Body = dict[str, Any]


def load_configuration() -> client.Configuration:
    """In-cluster config when running in a pod, else the kubeconfig named by KUBECONFIG (or the default)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
        )
    return configuration


class Kube:
    """The operator's, runner's and API's view of the cluster (blocking calls; wrap in threads)."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or client.ApiClient(load_configuration())
        self.custom = client.CustomObjectsApi(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    # --- Transcriptions -------------------------------------------------------------------
    def get_transcription(self, namespace: str, name: str) -> Body | None:
        try:
            found = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            return dict(cast(Body, found))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_transcriptions(self, namespace: str, *, label_selector: str = "", limit: int = 0) -> list[Body]:
        """Transcriptions in a namespace: a bounded page when `limit` is set (never the whole cluster)."""
        listing = cast(
            Body,
            self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, label_selector=label_selector, limit=limit or None
            ),
        )
        return [dict(item) for item in listing.get("items", [])]

    def label_transcription(self, namespace: str, name: str, labels: dict[str, str]) -> bool:
        """Merge-patch metadata.labels (what lets the API count unfinished tasks by selector)."""
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"labels": labels}}
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create_transcription(self, namespace: str, body: Body) -> bool:
        """Create; False when it already exists (a retried submission), never a second resource."""
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def patch_transcription_status(self, namespace: str, name: str, patch: Body) -> bool:
        """Merge-patch .status through the status subresource; False when the resource is gone."""
        if not patch:
            return True
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": patch}
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def delete_transcription(self, namespace: str, name: str) -> bool:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create_event(self, namespace: str, body: Body) -> None:
        """Post a core/v1 Event (the operator's, where kopf's own poster is not available)."""
        self.core.create_namespaced_event(namespace, body)  # type: ignore[arg-type]  # dicts are accepted

    # --- runner Jobs ----------------------------------------------------------------------
    def create_job(self, namespace: str, body: Body) -> bool:
        """Create the Job; False if it exists already (409 is success: names are deterministic)."""
        try:
            self.batch.create_namespaced_job(namespace, body)  # type: ignore[arg-type]  # dicts are accepted
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def get_job(self, namespace: str, name: str) -> Body | None:
        try:
            response: Any = self.batch.read_namespaced_job(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(json.loads(response.data))

    def delete_job(self, namespace: str, name: str) -> bool:
        """Delete the Job and (in the background) its pods; False if it was already gone."""
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True
