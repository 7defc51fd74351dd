"""Object storage behind one interface: a local directory (embedded) or S3/MinIO (kubernetes).

Key layout, the same in both: audio/{id}/raw.{ext}, results/{id}/result.json, results/{id}/<export>.
"""

from maie.storage.base import ObjectStore, audio_key, result_key, results_prefix

__all__ = ["ObjectStore", "audio_key", "result_key", "results_prefix"]
