"""Which database errors mean "storage is unavailable, try again later" (a 503, never a 500).

PostgreSQL names the cause in its SQLSTATE; psycopg picks the exception class from it, and Django
wraps that class in its own of the same name. The class alone is not enough: a read-only
transaction (25006, after a failover to a standby or with `default_transaction_read_only` set
while a disk fills up) arrives as `InternalError`, the same class as a bug in a trigger. So:
- `OperationalError` and `InterfaceError` (connection lost, server shutting down, disk full,
  out of memory, too many connections, lock or statement timeouts, serialization failures): all
  conditions of the moment, none caused by the input;
- any error whose SQLSTATE is in a class below, whatever Python class it came as.
Anything else (an integrity error, a bug) is not "unavailable" and stays a 500 for us to fix.
"""

from __future__ import annotations

from django.db import DatabaseError, InterfaceError, OperationalError

# SQLSTATE codes and classes (https://www.postgresql.org/docs/current/errcodes-appendix.html).
UNAVAILABLE_SQLSTATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: a standby, or the database set read-only
        "25P03",  # idle_in_transaction_session_timeout
    }
)
UNAVAILABLE_SQLSTATE_PREFIXES = (
    "08",  # connection exception
    "53",  # insufficient resources: disk full, out of memory, too many connections
    "57P",  # operator intervention: admin/crash shutdown, cannot connect now, database dropped
    "58",  # system error: I/O error
)


def sqlstate(error: BaseException) -> str:
    """The SQLSTATE PostgreSQL gave, or "" (SQLite, or an error raised before the server answered)."""
    for candidate in (error, error.__cause__):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return ""


def storage_unavailable(error: BaseException) -> bool:
    """Whether this error means the database cannot take writes now (so: 503 and retry later)."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    if not isinstance(error, DatabaseError):
        return False
    code = sqlstate(error)
    return code in UNAVAILABLE_SQLSTATES or code.startswith(UNAVAILABLE_SQLSTATE_PREFIXES)
