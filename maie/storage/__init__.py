"""Object storage behind one interface: a local directory (embedded) or S3/MinIO (kubernetes).

Key layout (`TaskKeys`): audio/{id}/raw.{ext} and results/{id}/… embedded; audio/{ns}/{id}/… and
results/{ns}/{id}/… in Kubernetes mode. results/ holds result.json, the exports, and the runner's
progress.json and checkpoint.json.
"""

from maie.storage.base import ObjectNotFound, ObjectStore, TaskKeys

__all__ = ["ObjectNotFound", "ObjectStore", "TaskKeys"]
