"""Every table and SQL statement of the relay, behind one store interface."""

from aliasdb.store import Conflict, NotFound, Store

__all__ = ["Conflict", "NotFound", "Store"]
