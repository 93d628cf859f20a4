"""Where backups live: one small Store over an fsspec filesystem per provider."""

from kvproxy.storage.store import NotFound, Store, StorageError

__all__ = ["NotFound", "Store", "StorageError"]
