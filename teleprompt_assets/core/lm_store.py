"""What the LM gateway keeps beyond one process: answers, rate-limit buckets, each run's spend.

A run's steps are separate processes (and, in a deployment, separate machines), yet a provider's
rate limit and a run's budget are one number for all of them, and an answer paid for once should
serve every later run. So this state lives in one database named by a SQLAlchemy URL: a sqlite
file under ``TELEPROMPT_HOME`` by default (every process on the machine shares it), a PostgreSQL
database in a deployment (every machine shares it). Each read-modify-write is one transaction
holding the row (``BEGIN IMMEDIATE`` on sqlite, ``SELECT ... FOR UPDATE`` on PostgreSQL).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

_META = sa.MetaData()
ANSWERS = sa.Table(
    "lm_answers", _META,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("record", sa.Text, nullable=False),
)
BUCKETS = sa.Table(
    "lm_buckets", _META,
    sa.Column("name", sa.String(300), primary_key=True),
    sa.Column("level", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)
SPEND = sa.Table(
    "lm_spend", _META,
    sa.Column("run_id", sa.String(100), primary_key=True),
    sa.Column("calls", sa.BigInteger, nullable=False),
    sa.Column("tokens", sa.BigInteger, nullable=False),
    sa.Column("micro_usd", sa.BigInteger, nullable=False),
)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def default_url(home: Path) -> str:
    return f"sqlite:///{home / 'lm-state.sqlite'}"


def _engine(url: str) -> Engine:
    with _engines_lock:
        if url not in _engines:
            if url.startswith("sqlite"):
                path = sa.engine.make_url(url).database
                if path:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False, "isolation_level": None}, pool_size=64, max_overflow=64)

                @sa.event.listens_for(engine, "connect")
                def _pragmas(dbapi, _record):
                    dbapi.execute("PRAGMA journal_mode=WAL")
                    dbapi.execute("PRAGMA synchronous=NORMAL")

                @sa.event.listens_for(engine, "begin")
                def _begin(conn):  # a write takes the lock up front (no deadlock upgrading a read); a read takes none
                    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")
            else:
                engine = sa.create_engine(url, pool_size=64, max_overflow=64, pool_pre_ping=True)
            _create_tables(engine)
            _engines[url] = engine
        return _engines[url]


def _create_tables(engine: Engine) -> None:
    """Several step processes may open a new store at once; a loser of the race finds the tables made."""
    for attempt in range(3):
        try:
            _META.create_all(engine, checkfirst=True)
            return
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError):
            if attempt == 2:
                raise


@contextmanager
def _writing(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        conn.execution_options(write=True)
        with conn.begin():
            yield conn


def _insert_missing(conn: Connection, table: sa.Table, row: dict[str, Any]) -> None:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"LM state store: unsupported database {dialect!r} (use sqlite or postgresql)")
    conn.execute(insert(table).values(**row).on_conflict_do_nothing())


class LMStore:
    """The three tables, and the only code that touches them."""

    def __init__(self, url: str):
        self.url = url
        self.engine = _engine(url)

    def answer(self, key: str) -> dict | None:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(ANSWERS.c.record).where(ANSWERS.c.key == key)).scalar()
        return None if found is None else json.loads(found)

    def keep_answer(self, key: str, model: str, record: dict) -> None:
        with _writing(self.engine) as conn:
            _insert_missing(conn, ANSWERS, {"key": key, "model": model, "record": json.dumps(record, sort_keys=True)})

    def answers(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(ANSWERS)).scalar() or 0)

    @contextmanager
    def _row(self, table: sa.Table, key: sa.Column, name: str, fresh: dict[str, Any]) -> Iterator[tuple[Connection, Any]]:
        with _writing(self.engine) as conn:
            _insert_missing(conn, table, fresh)
            row = conn.execute(sa.select(table).where(key == name).with_for_update()).one()
            yield conn, row

    def update_bucket(self, name: str, full: float, change: Callable[[float, float], tuple[float, float, Any]]) -> Any:
        """``change(level, updated) -> (level, updated, result)`` applied atomically; a new bucket starts at ``full``."""
        with self._row(BUCKETS, BUCKETS.c.name, name, {"name": name, "level": full, "updated": 0.0}) as (conn, row):
            level, updated, result = change(row.level, row.updated)
            conn.execute(sa.update(BUCKETS).where(BUCKETS.c.name == name).values(level=level, updated=updated))
        return result

    def update_spend(self, run_id: str, change: Callable[[int, int, int], tuple[int, int, int]]) -> None:
        """``change(calls, tokens, micro_usd) -> (calls, tokens, micro_usd)`` applied atomically; it may raise to refuse."""
        with self._row(SPEND, SPEND.c.run_id, run_id, {"run_id": run_id, "calls": 0, "tokens": 0, "micro_usd": 0}) as (conn, row):
            calls, tokens, micro = change(row.calls, row.tokens, row.micro_usd)
            conn.execute(sa.update(SPEND).where(SPEND.c.run_id == run_id).values(calls=calls, tokens=tokens, micro_usd=micro))

    def spend(self, run_id: str) -> tuple[int, int, int]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(SPEND).where(SPEND.c.run_id == run_id)).one_or_none()
        return (0, 0, 0) if row is None else (row.calls, row.tokens, row.micro_usd)
