"""The baseline of the webhook-inbox benchmark: a Bitbucket receiver as a tutorial writes it.

Not rcingest code, and deliberately not tuned: this is the "textbook FastAPI +
SQLite" receiver that issue 15 compares ``rcingest serve`` against, written the
way the FastAPI tutorial and the usual webhook how-tos do it:

* one ``async def`` endpoint that reads the raw body (the signature is over
  the bytes), verifies ``X-Hub-Signature`` with ``hmac.compare_digest``,
  parses the JSON with the standard ``json`` module;
* a ``sqlite3`` connection per request from a ``Depends`` dependency that
  opens it and closes it afterwards (the tutorial's session-per-request);
* one ``INSERT`` per commit and one for the delivery, ``commit()``, ``200``;
* SQLite's defaults (rollback journal, ``synchronous=FULL``: an fsync per
  commit), tables created at start-up;
* run under ``uvicorn`` with one worker (access log off so that printing is
  not what is measured).

``RECEIVER_WAL=1`` switches the database to WAL with ``synchronous=NORMAL``
(what rcingest uses), for a variant that compares like with like on the
durability setting; the default is the textbook one.

    RECEIVER_DB=/tmp/r.db RECEIVER_SECRET=s uvicorn fastapi_receiver:app --port 8000
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Request

DATABASE = os.environ.get("RECEIVER_DB", "webhooks.db")
SECRET = os.environ.get("RECEIVER_SECRET", "")
WAL = os.environ.get("RECEIVER_WAL") == "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    request_uuid TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    repository TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS commits (
    hash TEXT PRIMARY KEY,
    repository TEXT NOT NULL,
    branch TEXT NOT NULL,
    author TEXT,
    message TEXT,
    date TEXT
);
"""


def create_db_and_tables() -> None:
    with sqlite3.connect(DATABASE) as conn:
        if WAL:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)


@asynccontextmanager
async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
    create_db_and_tables()
    yield


app = FastAPI(lifespan=lifespan)


def get_db() -> Iterator[sqlite3.Connection]:
    # FastAPI runs a sync dependency in its thread pool and the endpoint on
    # the event loop: the tutorial's check_same_thread=False is for that.
    conn = sqlite3.connect(DATABASE, check_same_thread=False)
    if WAL:
        conn.execute("PRAGMA synchronous=NORMAL")
    try:
        yield conn
    finally:
        conn.close()


def verify_signature(body: bytes, signature: str | None) -> None:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    if signature is None or not hmac.compare_digest(expected, signature):
        raise HTTPException(status_code=401, detail="invalid signature")


@app.post("/webhooks/bitbucket")
async def bitbucket_webhook(
    request: Request,
    db: Annotated[sqlite3.Connection, Depends(get_db)],
    x_event_key: Annotated[str, Header()],
    x_request_uuid: Annotated[str, Header()],
    x_hub_signature: Annotated[str | None, Header()] = None,
) -> dict[str, str]:
    body = await request.body()
    verify_signature(body, x_hub_signature)
    payload = json.loads(body)
    repository = payload["repository"]["full_name"]
    if x_event_key == "repo:push":
        for change in payload["push"]["changes"]:
            branch = (change.get("new") or {}).get("name", "")
            for commit in change.get("commits", []):
                db.execute(
                    "INSERT OR IGNORE INTO commits VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        commit["hash"],
                        repository,
                        branch,
                        commit["author"]["raw"],
                        commit["message"],
                        commit["date"],
                    ),
                )
    db.execute(
        "INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?, ?)",
        (x_request_uuid, x_event_key, repository, datetime.now(UTC).isoformat()),
    )
    db.commit()
    return {"status": "ok"}
