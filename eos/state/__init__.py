"""State stores: declarations, backends, the transaction overlay and restore.

Writes go to a per-transaction overlay and to the changelog; after the Kafka
commit the overlay and the changelog checkpoint are written to the backend in
one batch.
"""

from __future__ import annotations

from eos.state.base import StateStore, Store, StoreBackendFactory, open_backend
from eos.state.memory import MemoryStore
from eos.state.restore import RestoreProgress, apply_changelog
from eos.state.transaction import ChangelogWriter, StoreTransaction, TransactionState
from eos.state.window import WindowStore, WindowStoreTransaction

__all__ = [
    "ChangelogWriter",
    "MemoryStore",
    "RestoreProgress",
    "StateStore",
    "Store",
    "StoreBackendFactory",
    "StoreTransaction",
    "TransactionState",
    "WindowStore",
    "WindowStoreTransaction",
    "apply_changelog",
    "open_backend",
]
