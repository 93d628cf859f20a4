"""Where backups live: one small Store over an fsspec filesystem per provider."""

from kvproxy.storage.store import (
    AccessDenied,
    BucketNotFound,
    NotFound,
    StorageError,
    Store,
    Unavailable,
)

__all__ = ["AccessDenied", "BucketNotFound", "NotFound", "Store", "StorageError", "Unavailable"]
