"""parse_diff: git diffs (fixtures made with git 2.x) to DiffFiles with new-file line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from rcingest.errors import RcingestError
from rcingest.scanning.diff import DiffError, DiffTooLarge, parse_diff
from rcingest.scanning.model import AddedLine, DiffFile

FIXTURES = Path(__file__).parent / "fixtures" / "diffs"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def by_path(files: list[DiffFile]) -> dict[str, DiffFile]:
    return {f.path: f for f in files}


@pytest.fixture(scope="module")
def mixed() -> dict[str, DiffFile]:
    return by_path(parse_diff(load("pr_mixed.diff")))


def test_mixed_diff_has_every_file_once() -> None:
    files = parse_diff(load("pr_mixed.diff"))
    assert [f.path for f in files] == [
        "app.py",
        "dir with space/added file.md",
        "gone.cfg",
        "logo.png",
        "new name.txt",
        "nonl.txt",
        "run.sh",
        "win.bat",
    ]


def test_multiple_hunks_number_lines_in_the_new_file(mixed: dict[str, DiffFile]) -> None:
    app = mixed["app.py"]
    assert app.status == "modified" and app.old_path is None
    # Hunk 2 starts at new line 18; the inserted line shifts "line 27" to 28.
    assert app.added == [
        AddedLine(3, "line 3 changed"),
        AddedLine(21, 'AWS_KEY = "AKIAQWERTYUIOPASDFGH"'),
        AddedLine(28, "line 27 changed"),
    ]
    assert app.removed == 2


def test_added_file_in_a_directory_with_spaces(mixed: dict[str, DiffFile]) -> None:
    added = mixed["dir with space/added file.md"]
    assert added.status == "added"
    assert added.added == [AddedLine(1, "brand new"), AddedLine(2, "file here")]


def test_deleted_file_adds_nothing(mixed: dict[str, DiffFile]) -> None:
    gone = mixed["gone.cfg"]
    assert (gone.status, gone.added, gone.removed) == ("deleted", [], 2)


def test_binary_files_differ(mixed: dict[str, DiffFile]) -> None:
    logo = mixed["logo.png"]
    assert logo.binary and logo.status == "binary" and logo.added == []


def test_rename_with_spaces_keeps_old_path(mixed: dict[str, DiffFile]) -> None:
    renamed = mixed["new name.txt"]
    assert renamed.status == "renamed"
    assert renamed.old_path == "old name.txt"
    assert renamed.added == [AddedLine(5, "added after rename")]


def test_no_newline_markers_are_not_lines(mixed: dict[str, DiffFile]) -> None:
    nonl = mixed["nonl.txt"]
    assert nonl.added == [AddedLine(1, "tail"), AddedLine(2, "token=abc")]
    assert nonl.removed == 1


def test_mode_only_change(mixed: dict[str, DiffFile]) -> None:
    mode = mixed["run.sh"]
    assert (mode.status, mode.added, mode.removed, mode.binary) == ("modified", [], 0, False)


def test_crlf_content_is_kept(mixed: dict[str, DiffFile]) -> None:
    assert mixed["win.bat"].added == [AddedLine(2, "b changed\r"), AddedLine(3, "c\r")]


def test_git_binary_patch_payload_is_not_content() -> None:
    [logo] = parse_diff(load("git_binary_patch.diff"))
    assert (logo.path, logo.binary, logo.added) == ("logo.png", True, [])


def test_diffs_inside_added_files_are_content_not_headers() -> None:
    # quoted_latin1.diff adds the two other fixtures as files: their
    # "diff --git", "---" and "+++" lines are added lines, framed by hunk counts.
    files = by_path(parse_diff(load("quoted_latin1.diff")))
    assert set(files) == {"all.diff", "binpatch.diff", "café notes.txt"}
    assert len(files["all.diff"].added) == 81
    assert files["all.diff"].added[3] == AddedLine(4, "+++ b/app.py")
    assert files["binpatch.diff"].added[2] == AddedLine(3, "GIT binary patch")
    assert not files["binpatch.diff"].binary


def test_quoted_utf8_path_and_latin1_content_decode_with_replacement() -> None:
    files = by_path(parse_diff(load("quoted_latin1.diff")))
    notes = files["café notes.txt"]
    assert notes.status == "added"
    assert notes.added == [AddedLine(1, "mot de passe: \ufffdt\ufffd"), AddedLine(2, "second")]


def test_non_utf8_bytes_in_an_added_line_keep_the_rest_of_the_line() -> None:
    diff = (
        b"diff --git a/k.txt b/k.txt\n--- a/k.txt\n+++ b/k.txt\n@@ -1 +1,2 @@\n x\n"
        b"+\xff\xfe key=AKIAQWERTYUIOPASDFGH\n"
    )
    [only] = parse_diff(diff)
    assert only.added == [AddedLine(2, "\ufffd\ufffd key=AKIAQWERTYUIOPASDFGH")]


def test_removed_sql_comment_is_not_a_file_header() -> None:
    # "--- x" / "+++ y" inside a hunk are a removed "-- x" and an added "++ y".
    diff = (
        b"diff --git a/q.sql b/q.sql\nindex 1..2 100644\n--- a/q.sql\n+++ b/q.sql\n"
        b"@@ -1,2 +1,2 @@\n--- old comment\n+++ new comment\n select 1;\n"
    )
    [only] = parse_diff(diff)
    assert only.path == "q.sql"
    assert only.added == [AddedLine(1, "++ new comment")]
    assert only.removed == 1


def test_plain_unified_diff_without_git_header() -> None:
    diff = b"--- a/x.txt\t2024-01-01\n+++ b/x.txt\t2024-01-02\n@@ -1 +1 @@\n-a\n+b\n"
    assert parse_diff(diff) == [
        DiffFile(path="x.txt", status="modified", added=[AddedLine(1, "b")], removed=1)
    ]


def test_last_line_without_newline_and_preamble_are_fine() -> None:
    diff = (
        b"From 123 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] x\n\n---\n"
        b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -0,0 +1 @@\n+end"
    )
    [only] = parse_diff(diff)
    assert only.added == [AddedLine(1, "end")]


def test_copy_is_an_added_file_with_its_source() -> None:
    diff = (
        b"diff --git a/src.py b/dst.py\nsimilarity index 90%\ncopy from src.py\ncopy to dst.py\n"
        b"--- a/src.py\n+++ b/dst.py\n@@ -1 +1,2 @@\n same\n+new\n"
    )
    [copy] = parse_diff(diff)
    assert (copy.path, copy.old_path, copy.status) == ("dst.py", "src.py", "added")
    assert copy.added == [AddedLine(2, "new")]


def test_pure_rename_without_hunks() -> None:
    diff = (
        b"diff --git a/a b.txt b/c d.txt\nsimilarity index 100%\n"
        b"rename from a b.txt\nrename to c d.txt\n"
    )
    [moved] = parse_diff(diff)
    assert (moved.path, moved.old_path, moved.status, moved.added) == (
        "c d.txt",
        "a b.txt",
        "renamed",
        [],
    )


@pytest.mark.parametrize("empty", [b"", b"\n", b"  \n\n"])
def test_empty_diff_is_no_files(empty: bytes) -> None:
    assert parse_diff(empty) == []


def test_not_a_diff_names_the_line_and_never_echoes_content() -> None:
    text = b"\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzzzzzzzz\n"
    with pytest.raises(DiffError) as caught:
        parse_diff(text)
    message = str(caught.value)
    assert message.startswith("not a unified diff: line 2 of 2")
    assert "wJalr" not in message and "AWS" not in message
    assert isinstance(caught.value, RcingestError)


def test_an_html_error_page_is_named_as_such() -> None:
    with pytest.raises(DiffError, match="looks like HTML"):
        parse_diff(b"<html><body>Bad gateway</body></html>\n")


def test_short_hunk_is_a_diff_error_without_content() -> None:
    diff = b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n-sekrit-value\n+other\n"
    with pytest.raises(DiffError) as caught:
        parse_diff(diff)
    assert "malformed hunk in 'x' (file at diff line 1)" in str(caught.value)
    assert "sekrit" not in str(caught.value)


def test_long_hunk_is_a_diff_error() -> None:
    diff = b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n+c\n"
    # The framer stops at the header's counts; the stray "+c" after the hunk
    # is ignored as git apply would, so the file parses with one line.
    assert parse_diff(diff)[0].added == [AddedLine(1, "b")]
    bad = b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,0 +1 @@\n-a\n+b\n"
    with pytest.raises(DiffError, match="longer than expected"):
        parse_diff(bad)


def test_malformed_hunk_header() -> None:
    with pytest.raises(DiffError, match="malformed hunk header at diff line 4"):
        parse_diff(b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -x +y @@\n+b\n")


def test_too_large_is_refused_before_parsing() -> None:
    data = b"not a diff at all, but too large anyway " * 10
    with pytest.raises(DiffTooLarge) as caught:
        parse_diff(data, max_bytes=100)
    assert (caught.value.size, caught.value.limit) == (len(data), 100)
    assert "too large to scan" in str(caught.value)
    assert isinstance(caught.value, DiffError)


def test_at_the_limit_is_parsed() -> None:
    data = load("git_binary_patch.diff")
    assert len(parse_diff(data, max_bytes=len(data))) == 1
