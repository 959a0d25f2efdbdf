"""Item 2: random bytes, a garbled body, an empty file, a foreign SQLite file: one line each,
and nothing is written to (or created over) the file."""

from __future__ import annotations

import os
import sqlite3

import pytest

from tests.faults.conftest import make_store, one_line_error, snapshot
from widthlab.errors import CorruptStoreError
from widthlab.store import Store


def _random(db):
    db.write_bytes(os.urandom(40_000))


def _empty(db):
    db.write_bytes(b"")


def _foreign(db):
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (x TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.close()


def _garbled(db):
    with open(db, "r+b") as fh:  # keep the header page, overwrite the pages after it
        fh.seek(4096)
        fh.write(b"\xff" * 16_000)


@pytest.mark.parametrize("damage, words", [
    (_random, "is not a database (not an SQLite file); move"),
    (_empty, "is empty (0 bytes), not a widthlab store; move"),
    (_foreign, "of another program (tables notes), not a widthlab store; point --store"),
    (_garbled, "is damaged (database disk image is malformed); move"),
])
def test_damaged_database_is_one_line_and_left_alone(tmp_path, capsys, damage, words):
    root = tmp_path / "s"
    if damage is _garbled:
        make_store(root, epochs=3)
    else:
        root.mkdir()
    damage(root / "widthlab.sqlite")
    before = snapshot(root)
    for cmd in (["runs", "list"], ["runs", "show", "run-a"], ["runs", "check"],
                ["runs", "export", "run-a", "--out", str(tmp_path / "x")]):
        line = one_line_error(capsys, [*cmd, "--store", str(root)], (1,), words)
        assert str(root / "widthlab.sqlite") in line
    st = Store(root)
    with pytest.raises(CorruptStoreError, match=words.split(";")[0].replace("(", r"\(")
                       .replace(")", r"\)")):
        st.create_run("run-b", study="s", dataset="mnist", config={}, models=[], seed=0,
                      device="cpu", precision="fp32", code_version="t")
    assert snapshot(root) == before  # no table added, nothing started over the file
    if damage is _foreign:
        with sqlite3.connect(root / "widthlab.sqlite") as conn:
            names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master")]
        assert names == ["notes"]


def test_check_reports_a_failed_integrity_check(tmp_path, capsys):
    st = make_store(tmp_path / "s", epochs=3)
    with sqlite3.connect(st.db_path) as conn:  # damage an index page: rows stay readable
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = "
                            "'sqlite_autoindex_metrics_1'").fetchone()[0]
    conn.close()
    with open(st.db_path, "r+b") as fh:
        fh.seek((page - 1) * size + 8)
        fh.write(b"\x00" * 64)
    problems = st.check()
    assert problems and problems[0].run_id is None and problems[0].kind == "integrity"
    one_line_error(capsys, ["runs", "check", "--store", str(st.root)], (1,), "problem(s)")
