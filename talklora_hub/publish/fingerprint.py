"""The base-weight fingerprint lives in the bundle (modeling/fingerprint.py): an adapter-only model checks it
when it fetches its base, on a machine without talklora_hub. Re-exported here for the publishing code."""

from ..modeling.fingerprint import base_fingerprint

__all__ = ["base_fingerprint"]
