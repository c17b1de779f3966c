"""Object storage: one interface (`ObjectStore`), one module per provider, three error kinds.

Import from here: `open_custom_store`, `open_default_store`, `probe_store`, `StorageError`...
"""

from callvault.storage.base import ObjectInfo, ObjectStore, StorageError, StorageErrorKind
from callvault.storage.factory import open_custom_store, open_default_store
from callvault.storage.local import LocalStore
from callvault.storage.probe import probe_store
from callvault.storage.registry import BACKENDS as CUSTOM_BACKENDS
from callvault.storage.registry import bucket_name_error
from callvault.storage.signed_links import sign_link, verify_link

__all__ = [
    "CUSTOM_BACKENDS",
    "LocalStore",
    "ObjectInfo",
    "ObjectStore",
    "StorageError",
    "StorageErrorKind",
    "bucket_name_error",
    "open_custom_store",
    "open_default_store",
    "probe_store",
    "sign_link",
    "verify_link",
]
