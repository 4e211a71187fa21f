"""Database servers (PostgreSQL, MySQL) as a tracking store or an Optuna storage: one quick
connection before anything runs, so a stopped server, a wrong port or a missing driver is one line
and exit 2 rather than a traceback after SQLAlchemy's pool gives up."""

from __future__ import annotations

from urllib.parse import urlparse

import sqlalchemy
import sqlalchemy.exc

from bench.errors import BenchError

SERVER_SCHEMES = ("postgresql", "mysql", "mssql")  # SQLAlchemy dialects that talk to a server
CONNECT_TIMEOUT_SECONDS = 5
_DRIVERS = {"postgresql": "psycopg (pip install -e '.[postgres]')", "mysql": "a MySQL driver (e.g. pymysql)"}


def is_database_server(url: str) -> bool:
    """``postgresql://...``, ``postgresql+psycopg2://...``, ``mysql+pymysql://...`` and the like."""
    return urlparse(url).scheme.split("+")[0] in SERVER_SCHEMES


def redacted(url: str) -> str:
    """The URL as it may be printed: without its password."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def check_database(url: str, what: str) -> None:
    """Connect once (``what`` names the role, e.g. ``tracking store``) and refuse with one line."""
    dialect = urlparse(url).scheme.split("+")[0]
    try:
        engine = sqlalchemy.create_engine(url, connect_args=_timeout_args(dialect), poolclass=sqlalchemy.pool.NullPool)
    except (ImportError, ModuleNotFoundError):
        raise BenchError(f"{what} {redacted(url)} needs {_DRIVERS.get(dialect, 'its database driver')}") from None
    except sqlalchemy.exc.ArgumentError as exc:
        raise BenchError(f"{what} {redacted(url)} is not a database URL ({exc})") from None
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc) or type(exc).__name__).strip().splitlines()
        first = next((line.strip() for line in reason if line.strip()), type(exc).__name__)
        raise BenchError(f"{what} {redacted(url)} is not reachable ({first}); start the database server") from None
    finally:
        engine.dispose()


def _timeout_args(dialect: str) -> dict[str, int]:
    return {"connect_timeout": CONNECT_TIMEOUT_SECONDS} if dialect in ("postgresql", "mysql") else {}
