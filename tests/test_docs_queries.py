"""The ready queries of docs/database.md find rows in the database ``rcingest demo`` writes.

tests/test_database_sink.py checks their exact answers on hand-made rows, on
SQLite and PostgreSQL; this checks that a new user who runs the demo and
pastes a query sees something, because the demo scans the day and the
repository the queries name.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "database.md"
README = ROOT / "README.md"
RCINGEST = Path(sys.executable).with_name("rcingest")
#: Queries whose rows the demo cannot have, with the reason docs/database.md gives.
EXPECTED_EMPTY = {
    "branch-keys-without-evidence": "only rows written before schema version 3",
    "deliveries-by-outcome": "deliveries come from webhooks; the demo only scans",
    "open-findings": "findings come from pull-request scans; the demo only scans",
    "merges-not-compliant": "evaluations come from the compliance enforcer",
    "compliance-history": "evaluations come from the compliance enforcer",
    "repositories-with-open-findings": "repository scans come from the inventory pipeline",
    "tombstoned-repositories": "tombstones come from repository syncs",
}


def doc_queries() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    return dict(re.findall(r"```sql\n-- query: (\S+)\n(.*?)```", text, flags=re.S))


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    done = subprocess.run(  # the README's first command, bounded
        [str(RCINGEST), "demo", "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return folder / "commits.db"


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


def test_the_doc_has_its_ready_queries() -> None:
    names = set(doc_queries())
    assert len(names) >= 7
    assert set(EXPECTED_EMPTY) <= names


@pytest.mark.parametrize("name", sorted(doc_queries()))
def test_ready_query_finds_rows_in_the_demo_database(name: str, demo_db: Path) -> None:
    found = rows(demo_db, doc_queries()[name])
    if name in EXPECTED_EMPTY:
        # Said next to the query in the doc, so a reader is not surprised.
        assert EXPECTED_EMPTY[name] in DOC.read_text(encoding="utf-8")
        assert found == [], f"{name}: the demo now has rows for it; drop it from EXPECTED_EMPTY"
        return
    assert found, f"docs/database.md query {name} returns nothing on the demo database"


def test_the_window_queries_see_the_demo_day_only(demo_db: Path) -> None:
    inside = rows(demo_db, doc_queries()["commits-per-key"])
    stamps = rows(demo_db, "SELECT MIN(committed_at), MAX(committed_at) FROM commits")
    assert inside and stamps[0][0] >= "2026-11-20 07:00:00"
    assert stamps[0][1] < "2026-11-21 07:00:00"
    branch = rows(demo_db, doc_queries()["commits-on-branch"])
    assert {r[0] for r in branch} < {r[0] for r in rows(demo_db, "SELECT hash FROM commits")}


def test_the_readme_query_counts_keys(demo_db: Path) -> None:
    [line] = [x for x in README.read_text(encoding="utf-8").splitlines() if "sqlite3 " in x]
    sql = re.search(r'"(SELECT [^"]+)"', line)
    assert sql is not None, line
    counted = rows(demo_db, sql.group(1))
    assert counted and all(n > 0 for _, n in counted)
    # The demo prints the same query under "look inside".
    assert "SELECT key, COUNT(*) FROM story_keys GROUP BY key" == sql.group(1)
