"""A checkout as added files: binary, oversize, links and ``.git`` skipped (issue 14)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rcingest.reposcan.tree import TreeStats, TreeTooLarge, file_of, iter_batches, read_tree
from rcingest.scanning.model import AddedLine


def write(root: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)


def test_every_line_is_added_with_its_number_split_only_at_newlines() -> None:
    made = file_of("a.env", b"one\r\ntwo\x0cthree\n\nlast")
    assert made.status == "added" and made.path == "a.env"
    assert made.added == [
        AddedLine(1, "one"),
        AddedLine(2, "two\x0cthree"),
        AddedLine(3, ""),
        AddedLine(4, "last"),
    ]
    assert file_of("e", b"").added == []
    assert file_of("bad", b"k=\xff\xfe\n").added == [AddedLine(1, "k=\ufffd\ufffd")]


def test_binary_oversize_links_and_git_are_skipped_and_counted(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "src/app.py": b"x = 1\n",
            "docs/readme.md": b"# hi\n",
            "img/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00 IHDR",
            "data/big.csv": b"a,b\n" * 300,
            ".git/config": b"[core]\n",
            "nested/.git/keep": b"a file named like a folder, inside a subfolder\n",
        },
    )
    os.symlink("/etc/passwd", tmp_path / "passwd")
    os.symlink(tmp_path / "src", tmp_path / "linked-dir")
    files, stats = read_tree(str(tmp_path), max_file_bytes=1000)
    kept = len(b"x = 1\n") + len(b"# hi\n") + len(files[1].added[0].text) + 1
    assert [f.path for f in files] == ["docs/readme.md", "nested/.git/keep", "src/app.py"]
    assert stats == TreeStats(
        files=3, bytes=kept, binary_skipped=1, large_skipped=1, other_skipped=2
    )


def test_a_nul_after_the_first_8000_bytes_is_text(tmp_path: Path) -> None:
    write(tmp_path, {"late.txt": b"a" * 8000 + b"\x00", "early.txt": b"a" * 7999 + b"\x00"})
    files, stats = read_tree(str(tmp_path))
    assert [f.path for f in files] == ["late.txt"] and stats.binary_skipped == 1


def test_batches_bound_what_is_held_and_the_total_is_bounded(tmp_path: Path) -> None:
    write(tmp_path, {f"f{i:02}.txt": b"line\n" * 100 for i in range(10)})  # 500 bytes each
    stats = TreeStats()
    batches = list(iter_batches(str(tmp_path), stats, batch_bytes=1200))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert stats.files == 10 and stats.bytes == 5000
    with pytest.raises(TreeTooLarge, match="4000 bytes"):
        read_tree(str(tmp_path), max_total_bytes=4000)
