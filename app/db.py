"""Engine, sessions and the column types shared by every domain's models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Literal, TypeVar, TypeVarTuple, cast, overload

from sqlalchemy import (
    JSON,
    URL,
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    Row,
    Select,
    Table,
    any_,
    bindparam,
    event,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, QueryableAttribute
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.schema import ColumnDefault
from sqlalchemy.types import TypeDecorator

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

# Deterministic constraint names so Alembic migrations are the same on both databases.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# SQLite only auto-increments INTEGER PRIMARY KEY, so big ids fall back to Integer there.
BigId = BigInteger().with_variant(Integer, "sqlite")
JSONData = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime; use utcnow()")
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        # WAL lets pages read while the worker writes.
        def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


class Database:
    """One engine and session factory per process (the app and the CLI each hold one)."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def dispose(self) -> None:
        await self.engine.dispose()


ColumnLike = ColumnElement[Any] | QueryableAttribute[Any]


@overload
async def select_where_in(
    session: AsyncSession,
    query: Select[*_Ts],
    column: ColumnLike,
    values: Iterable[Any],
    *,
    scalars: Literal[False] = False,
) -> list[Row[*_Ts]]: ...
@overload
async def select_where_in(
    session: AsyncSession,
    query: Select[_T],
    column: ColumnLike,
    values: Iterable[Any],
    *,
    scalars: Literal[True],
) -> list[_T]: ...
async def select_where_in(
    session: AsyncSession,
    query: Select[*tuple[Any, ...]],
    column: ColumnLike,
    values: Iterable[Any],
    *,
    scalars: bool = False,
) -> list[Any]:
    """Rows of `query` whose `column` is one of `values`, for lists of any size.

    PostgreSQL gets one array parameter (`= ANY($1)`): one plan, hashed lookups. A long
    `IN ($1..$5000)` can be cached as a generic plan made while the table was empty, which
    then compares every row with every parameter. SQLite gets IN lists in chunks.
    """
    values = list(values)
    if not values:
        return []
    if session.get_bind().dialect.name == "postgresql":
        array = bindparam("values", values, type_=ARRAY(column.type))
        chunks = [query.where(column == any_(array))]
    else:
        chunks = [query.where(column.in_(values[i : i + 5000])) for i in range(0, len(values), 5000)]
    rows: list[Any] = []
    for statement in chunks:
        result = await session.execute(statement)
        rows += result.scalars().all() if scalars else result.all()
    return rows


def one_of(dialect: str, column: ColumnLike, name: str) -> ColumnElement[bool]:
    """`column` is one of the list given at execution as parameter `name`: one array parameter
    on PostgreSQL (select_where_in says why), an expanding IN on SQLite (`in_chunks`). For
    statements built once and executed many times: building one and computing its cache key
    costs more CPU than running it."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


def in_chunks(dialect: str, values: list[_T]) -> list[list[_T]]:
    """`values` for a `one_of` parameter: whole on PostgreSQL, in chunks on SQLite (its limit
    on a statement's variables)."""
    if dialect == "postgresql":
        return [values] if values else []
    return [values[i : i + 5000] for i in range(0, len(values), 5000)]


async def insert_returning(
    session: AsyncSession,
    model: type[Base],
    rows: list[dict[str, Any]],
    *columns: QueryableAttribute[Any],
    chunk: int = 1000,
) -> list[Row[Any]]:
    """Bulk INSERT ... RETURNING in chunks: one huge executemany with RETURNING makes
    SQLAlchemy splice every page's rows into the result again (quadratic)."""
    from sqlalchemy import insert

    returned: list[Row[Any]] = []
    for i in range(0, len(rows), chunk):
        result = await session.execute(insert(model).returning(*columns), rows[i : i + chunk])
        returned += result.all()
    return returned


async def bulk_insert(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT many rows without RETURNING. PostgreSQL: COPY (several times faster than
    executemany for tens of thousands of rows); SQLite: executemany."""
    if not rows:
        return
    connection = await session.connection()
    if connection.dialect.name != "postgresql" or len(rows) < 500:
        await session.execute(table.insert(), rows)
        return
    columns, records = copy_records(table, rows)
    raw = await connection.get_raw_connection()
    assert raw.driver_connection is not None  # asyncpg's connection, open while the session is
    await raw.driver_connection.copy_records_to_table(table.name, records=records, columns=columns)


class Driver:
    """The asyncpg connection under a session or connection (PostgreSQL), for the few
    statements run thousands of times a second (the result writer's, the claim): asyncpg's
    own prepared statements, arguments as plain lists, records read by index, none of
    SQLAlchemy's work per statement and per row. In the caller's transaction (begun first if
    it was not yet); a failure is raised as SQLAlchemy's exception (DBAPIError and its
    subclasses, with the driver's error as `orig`), as from any other statement, so the one
    retry rule (`in_transaction`) and the outage handling treat it alike.
    Use `driver_of` to get one."""

    __slots__ = ("_adapted", "_connection", "driver")

    def __init__(self, connection: AsyncConnection, adapted: Any) -> None:
        self._connection = connection
        self._adapted = adapted  # SQLAlchemy's adapter of the asyncpg connection (its DBAPI connection)
        self.driver = adapted.driver_connection

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """The rows (asyncpg Records: by index or by name) of this statement."""
        try:
            return cast(list[Any], await self.driver.fetch(sql, *args))
        except Exception as error:
            raise self._translated(error, sql, args) from error

    async def execute(self, sql: str, *args: Any) -> str:
        """Run this statement; its status ("UPDATE 12")."""
        try:
            return cast(str, await self.driver.execute(sql, *args))
        except Exception as error:
            raise self._translated(error, sql, args) from error

    def _translated(self, error: Exception, sql: str, args: tuple[Any, ...]) -> Exception:
        """The exception SQLAlchemy raises for this driver error on its own statements."""
        dialect = self._connection.dialect
        dbapi = dialect.loaded_dbapi
        try:
            self._adapted._handle_exception(error)  # raises the DBAPI's translation of it
        except Exception as translated:
            if not isinstance(translated, dbapi.Error):
                return translated  # not a database error (a bug in the arguments): as it is
            invalidated = dialect.is_disconnect(translated, self._adapted, None)
            return DBAPIError.instance(
                sql,
                args,
                translated,
                dbapi.Error,
                connection_invalidated=invalidated,
                dialect=dialect,
            )
        return error  # pragma: no cover (_handle_exception always raises)


async def driver_of(session: AsyncSession | AsyncConnection, *, begin: bool = True) -> Driver:
    """The `Driver` of this session's (or connection's) PostgreSQL connection, in its
    transaction: begun here, by SQLAlchemy, if nothing ran in it yet (SQLAlchemy's adapter
    begins it with the first statement it sends, and the driver's statements bypass it).
    begin=False: for one statement that needs no transaction of its own (it is atomic), on a
    connection where nothing else runs: it runs as it is, without the round trip of a BEGIN."""
    connection = await session.connection() if isinstance(session, AsyncSession) else session
    raw = await connection.get_raw_connection()
    adapted = raw.dbapi_connection
    assert adapted is not None and adapted.driver_connection is not None
    if begin and not adapted.driver_connection.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    return Driver(connection, adapted)


def copy_records(table: Table, rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The columns and the records COPY takes for `rows` (all with the keys of the first): the
    Python-side column defaults added (COPY skips them), JSON columns as text. Built with
    itemgetter, no dict per row: a first import builds a hundred thousand of them."""
    given = list(rows[0])
    defaults = _defaults(table, given)
    json_at = [i for i, name in enumerate(given) if _is_json(table.columns[name])]
    extra = tuple(defaults.values())
    get = itemgetter(*given)
    values = [(get(row),) for row in rows] if len(given) == 1 else [get(row) for row in rows]
    if json_at:
        dumps = json.dumps
        for n, record in enumerate(values):
            cells = list(record)
            for i in json_at:
                cells[i] = dumps(cells[i])
            values[n] = tuple(cells)
    records = [record + extra for record in values] if extra else values
    return given + list(defaults), records


def _is_json(column: Column[Any]) -> bool:
    return isinstance(column.type, (JSON, JSONB)) or isinstance(getattr(column.type, "impl", None), JSON)


def _defaults(table: Table, given: list[str]) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for column in table.columns:
        if column.name in given or column.default is None or column.primary_key:
            continue
        assert isinstance(column.default, ColumnDefault)  # the models' defaults: values or callables
        arg = column.default.arg
        defaults[column.name] = arg(None) if callable(arg) else arg
    return defaults


async def server_execute(url: str | URL, statement: str) -> None:
    """Run one statement (CREATE/DROP DATABASE) on the maintenance database of the
    PostgreSQL server that `url` (a string or URL) points at. For tests and benchmarks."""
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url) if isinstance(url, str) else url
    conn = await asyncpg.connect(
        host=u.host,
        port=u.port or 5432,
        user=u.username or "postgres",
        password=u.password,
        database="postgres",
        timeout=10,
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


# SQLSTATEs worth retrying on PostgreSQL: deadlock detected, serialization failure.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


def is_transient(exc: BaseException) -> bool:
    """A failure that the same transaction may not meet again: a deadlock, a serialization
    failure, SQLite busy or locked, a connection the pool has just invalidated."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if _sqlstate(exc) in _TRANSIENT_SQLSTATES:
        return True
    orig = getattr(exc, "orig", None)
    sqlite_code = getattr(orig, "sqlite_errorcode", None) or getattr(
        getattr(orig, "__cause__", None), "sqlite_errorcode", None
    )
    return sqlite_code is not None and sqlite_code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def is_unreachable(exc: BaseException) -> bool:
    """The database could not be reached at all (no connection from the pool, the server
    gone or refusing): everything waits for it, nothing about the work itself is wrong."""
    if isinstance(exc, DBAPIError):
        return (
            exc.connection_invalidated
            or isinstance(exc, OperationalError | InterfaceError)
            or _sqlstate(exc)[:2] in _UNREACHABLE_SQLSTATE_CLASSES
        )
    return isinstance(exc, SATimeoutError | OSError | TimeoutError)


def is_bad_value(exc: BaseException) -> bool:
    """The database refused a value as such (SQLSTATE class 22, data exception: a number out
    of range, a string too long, a NUL character), or its driver did before sending it (asyncpg:
    an integer beyond int32/int64): the input's fault, not the database's."""
    return isinstance(exc, DataError | OverflowError) or (
        isinstance(exc, DBAPIError) and _sqlstate(exc)[:2] == "22"
    )


# PostgreSQL SQLSTATE classes of a server that is going away or not there: 08 connection
# exception, 57 operator intervention (57P01 admin shutdown, 57P02 crash, 57P03 starting up).
_UNREACHABLE_SQLSTATE_CLASSES = frozenset({"08", "57"})


def _sqlstate(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(
        getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None) or ""
    )


async def in_transaction(
    database: Database, work: Callable[[AsyncSession], Awaitable[_T]], *, attempts: int = 5
) -> _T:
    """Run `work` in a new session and commit, retrying transient failures with backoff.

    The one retry rule of every writer; anything else (or the last attempt) raises."""
    for attempt in range(attempts):
        try:
            async with database.sessionmaker() as session:
                result = await work(session)
                await session.commit()
                return result
        except DBAPIError as exc:
            if attempt + 1 < attempts and is_transient(exc):
                await asyncio.sleep(0.05 * 2**attempt)
                continue
            raise
    raise AssertionError("unreachable")


def table_of(model: type[Base]) -> Table:
    """A model's Table, typed as one (core statements on it skip the ORM's per-row work)."""
    return cast(Table, model.__table__)


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name
