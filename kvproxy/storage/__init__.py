"""Where backups live: one small Store over an fsspec filesystem per provider."""

from kvproxy.storage.store import NotFound, StorageError, Store

__all__ = ["NotFound", "Store", "StorageError"]
