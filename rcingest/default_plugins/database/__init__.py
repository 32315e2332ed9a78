"""The ``database`` sink: SQLite or PostgreSQL through peewee, the run's cursor store."""

from __future__ import annotations

from rcingest.default_plugins.database.sink import DatabaseConfig, DatabaseSink
from rcingest.hookspecs import RegisterSink, hookimpl

__all__ = ["DatabaseConfig", "DatabaseSink"]


@hookimpl
def register_sinks(register: RegisterSink) -> None:
    """Register the ``database`` sink."""
    register("database", DatabaseSink)
