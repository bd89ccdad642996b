"""Every table and SQL statement of the relay, behind one store interface.

SQLite (a file path) for a single node, PostgreSQL (a ``postgresql://`` URL) for several
nodes on one database: ``Store.open(path_or_url)`` or ``Store.from_config(config)``.
"""

from aliasdb.dialects import DatabaseBusy, DatabaseError, DatabaseIntegrityError
from aliasdb.store import Conflict, NotFound, Store, database_target, open_store

__all__ = ["Conflict", "DatabaseBusy", "DatabaseError", "DatabaseIntegrityError", "NotFound",
           "Store", "database_target", "open_store"]
