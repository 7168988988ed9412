"""sweep.yaml's places in their portable form: `dagwire.portable` owns the rule (a run's config.yaml follows it too)."""

from ..portable import CHECKOUT, SHARED_DATA, checkout_root, portable_identity, recorded_path, resolved_path

__all__ = ["CHECKOUT", "SHARED_DATA", "checkout_root", "portable_identity", "recorded_path", "resolved_path"]
