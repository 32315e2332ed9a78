"""Terminal progress of ``rcingest run`` (issue 11: "progress shows on a TTY and not in CI").

The end-to-end tests run ``rcingest run`` on a pseudo-terminal against the
fake Bitbucket (in its own process) and replay what the terminal received
through a small screen model, so "ends cleared" and "a log line on its own
line" are checked on the screen a user would see, not on escape codes.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import logging
import os
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rcingest.bitbucket.budget import HourlyBudget, notify_wait, observe_waits
from rcingest.bitbucket.retry import Retryable, wait_gen
from rcingest.progress import (
    PLANNED_BRANCHES,
    LiveProgress,
    Snapshot,
    describe,
    live_progress,
    progress_wanted,
    snapshot_of,
)
from rcingest.runtime import RedactingFilter

DEADLINE = 90.0  # seconds for any one CLI run (a loaded 2-core machine)
SEPARATOR = " · "  # between the display's counts; nothing else prints it


# --- progress_wanted ---------------------------------------------------------------


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("quiet", "tty", "environ", "wanted"),
    [
        (False, True, {"TERM": "xterm-256color"}, True),
        (False, True, {}, True),
        (False, False, {"TERM": "xterm"}, False),
        (True, True, {"TERM": "xterm"}, False),
        (False, True, {"TERM": "xterm", "CI": "1"}, False),
        (False, True, {"TERM": "xterm", "CI": "true"}, False),
        (False, True, {"TERM": "xterm", "CI": ""}, True),
        (False, True, {"TERM": "dumb"}, False),
    ],
)
def test_progress_wanted_truth_table(
    quiet: bool, tty: bool, environ: dict[str, str], wanted: bool
) -> None:
    assert progress_wanted(quiet, _Stream(tty), environ) is wanted


def test_progress_wanted_on_a_closed_stream_is_false() -> None:
    stream = io.StringIO()
    stream.close()
    assert progress_wanted(False, stream, {}) is False


# --- what is shown -----------------------------------------------------------------


def test_snapshot_counts_repositories_branches_commits_records_and_requests() -> None:
    snap = snapshot_of(
        {"repository": 2, "commit": 40, "pull_request": 3},
        5,
        {"http.requests": 87, PLANNED_BRANCHES: 9},
        {"repositories": ["acme/a", "acme/b", "acme/c"], "branches": ["main"]},
        elapsed=65,
        waiting=11.6,
        wait_reason="429",
    )
    assert snap == Snapshot(
        repositories_done=2,
        repositories_total=3,
        branches_done=5,
        branches_total=9,
        commits=40,
        records=45,
        requests=87,
        elapsed=65,
        waiting=11.6,
        wait_reason="429",
    )
    assert describe(snap) == [
        "repositories 2/3 · branches 5/9 · commits 40 · records 45 · requests 87 · 0:01:05",
        "waiting 12 s for Bitbucket's rate limit (429 Too Many Requests)",
    ]


def test_a_source_without_branches_shows_no_branches_and_an_over_wait_is_not_shown() -> None:
    snap = snapshot_of(
        {"commit": 4}, 2, {}, {"type": "records_file"}, waiting=-0.5, wait_reason="x"
    )
    assert snap.branches_done is None and snap.repositories_total is None
    assert describe(snap) == ["commits 4 · records 4 · requests 0 · 0:00:00"]


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        ("pacing", "waiting 3 s for Bitbucket's rate limit (pacing: the requests_per_hour budget)"),
        ("retry", "waiting 3 s before retrying a failed request"),
    ],
)
def test_wait_reasons_are_named(reason: str, text: str) -> None:
    assert describe(Snapshot(waiting=2.7, wait_reason=reason))[1] == text


def test_of_concurrent_waits_the_one_ending_last_is_shown() -> None:
    now = [100.0]
    display = LiveProgress(clock=lambda: now[0])
    display.waiting(10, "429")
    display.waiting(2, "retry")  # ends earlier: the 429 is still what the run waits for
    assert display.snapshot().wait_reason == "429"
    now[0] = 111.0  # both over
    assert display.snapshot().wait_reason is None
    display.waiting(2, "pacing")
    assert (display.snapshot().wait_reason, display.snapshot().waiting) == ("pacing", 2)


# --- the wait hooks of the client --------------------------------------------------


def test_budget_pacing_tells_observers_and_nothing_without_them() -> None:
    seen: list[tuple[float, str]] = []

    async def go() -> None:
        budget = HourlyBudget(1, window=0.05)
        await budget.acquire()  # within budget: no wait
        await budget.acquire()  # no observer: waits silently, as before
        with observe_waits(lambda s, r: seen.append((s, r))):
            await budget.acquire()
        await budget.acquire()

    asyncio.run(asyncio.wait_for(go(), 10))
    assert len(seen) == 1
    seconds, reason = seen[0]
    assert reason == "pacing" and 0 < seconds <= 0.05


def test_retry_waits_are_told_with_their_reason() -> None:
    seen: list[tuple[float, str]] = []
    gen = wait_gen(0.5, 8)
    next(gen)
    with observe_waits(lambda s, r: seen.append((s, r))):
        assert gen.send(Retryable("u", 429, "429 Too Many Requests", 7.0)) == 7.0
        gen.send(Retryable("u", 503, "503 Service Unavailable", None))
        gen.send(Retryable("u", 429, "429 Too Many Requests", None))
    gen.send(Retryable("u", 429, "429 Too Many Requests", 3.0))  # observer gone
    assert [r for _, r in seen] == ["429", "retry", "429"]
    assert seen[0][0] == 7.0


def test_a_failing_observer_does_not_break_the_wait() -> None:
    def broken(seconds: float, reason: str) -> None:
        raise RuntimeError("display broke")

    seen: list[str] = []
    with observe_waits(broken), observe_waits(lambda s, r: seen.append(r)):
        notify_wait(1.0, "pacing")
    assert seen == ["pacing"]


# --- in-process: log lines through the live console keep their filter --------------


def _drain(fd: int, into: bytearray, stop: threading.Event) -> None:
    while not stop.is_set():
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            into.extend(chunk)


def test_log_lines_while_live_are_redacted_and_the_handler_is_restored() -> None:
    master, slave = os.openpty()
    _set_size(slave)
    terminal = os.fdopen(slave, "w", encoding="utf-8", buffering=1)
    received = bytearray()
    stop = threading.Event()
    reader = threading.Thread(target=_drain, args=(master, received, stop), daemon=True)
    reader.start()
    logger = logging.getLogger("rcingest.test_progress")
    handler = logging.StreamHandler(terminal)
    handler.addFilter(RedactingFilter(["s3cret-value"]))
    logging.getLogger("rcingest").addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with live_progress(True, stream=terminal) as display:
            assert display is not None
            assert handler.stream is not terminal  # swapped for the display's console
            logger.info("token=s3cret-value in a line")
        assert handler.stream is terminal
    finally:
        logging.getLogger("rcingest").removeHandler(handler)
        logger.setLevel(old_level)
        terminal.flush()
        time.sleep(0.2)  # let the reader take the last bytes (it stops on its own at EOF)
        stop.set()
        reader.join(5)
        terminal.close()
        os.close(master)
    text = received.decode("utf-8", "replace")
    assert "s3cret-value" not in text
    assert "token=*** in a line" in _screen(text)
    assert "requests 0" in _plain(text)  # the display was drawn ...
    assert not any(SEPARATOR in line for line in _screen(text))  # ... and erased


def test_not_enabled_yields_nothing() -> None:
    with live_progress(False) as display:
        assert display is None


# --- end to end: rcingest run on a pseudo-terminal ---------------------------------


def _set_size(fd: int, rows: int = 50, cols: int = 200) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


_CSI = re.compile(r"\x1b\[([0-9;?]*)([@-~])")


def _plain(text: str) -> str:
    """The text without escape sequences (what was written, wherever it went)."""
    return re.sub(r"\x1b\][^\x07]*\x07", "", _CSI.sub("", text))


def _screen(text: str) -> list[str]:
    """What stays on a terminal after ``text``: lines, cursor moves and erases replayed.

    Enough of a VT100 for line-based output: CR, LF, BS, cursor up/down/
    column, erase in line and in display; colours and modes are ignored.
    """
    lines: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            m = _CSI.match(text, i)
            if m is None:  # OSC (until BEL) or a two-character escape
                end = text.find("\x07", i) if text.startswith("\x1b]", i) else i + 1
                i = (end if end >= 0 else len(text)) + 1
                continue
            params, final = m.group(1), m.group(2)
            n = int(params) if params.isdigit() else None
            if final == "A":
                row = max(0, row - (n or 1))
            elif final == "B":
                row += n or 1
            elif final == "G":
                col = (n or 1) - 1
            elif final == "K":
                line = lines[row] if row < len(lines) else []
                if n in (None, 0):
                    del line[col:]
                elif n == 1:
                    line[: col + 1] = [" "] * min(len(line), col + 1)
                else:
                    line.clear()
            elif final == "J" and n == 2:
                lines = [[] for _ in lines]
            i = m.end()
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
        elif ch == "\b":
            col = max(0, col - 1)
        elif ch >= " ":
            while len(lines) <= row:
                lines.append([])
            line = lines[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
        while len(lines) <= row:
            lines.append([])
        i += 1
    return ["".join(line).rstrip() for line in lines]


@pytest.fixture
def fake_bitbucket(request: pytest.FixtureRequest) -> Iterator[str]:
    """The fake Bitbucket in its own process; ``@pytest.mark.parametrize`` may pass flags."""
    flags: list[str] = getattr(request, "param", [])
    proc = subprocess.Popen(
        [sys.executable, "-m", "rcingest.testing.fake_bitbucket", *flags],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line and line[0] == "READY", line
        yield line[1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _pipeline(tmp_path: Path, base_url: str) -> Path:
    path = tmp_path / "scan.yaml"
    # A branch the repositories lack: its "not found, skipped" warning is
    # logged in the middle of the run, while the display is live.
    path.write_text(
        textwrap.dedent(
            f"""
            name: scan
            source:
              type: bitbucket_rest
              config:
                workspace: acme
                base_url: '{base_url}'
                default_branches: [main, nope]
                backoff_base: 0.05
            sinks: [{{type: database, config: {{database: '{tmp_path}/commits.db'}}}}]
            """
        )
    )
    return path


def _environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "COLUMNS", "LINES", "TERM")}
    env.update(TERM="xterm-256color", **extra)
    return env


def _run_on_pty(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """``rcingest <args>`` with stdout and stderr on a pseudo-terminal: exit code, bytes seen."""
    master, slave = os.openpty()
    _set_size(slave)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from rcingest.cli import main; main()", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=cwd,
    )
    os.close(slave)
    received = bytearray()
    deadline = time.monotonic() + DEADLINE
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                received.extend(chunk)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)
    return code, received.decode("utf-8", "replace")


_WARNING = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d WARNING rcingest[\w.]*: "
    r"acme/service-0\d: branch 'nope' not found, skipped$"
)


def test_progress_shows_on_a_terminal_and_is_cleared(tmp_path: Path, fake_bitbucket: str) -> None:
    code, text = _run_on_pty(
        ["run", str(_pipeline(tmp_path, fake_bitbucket)), "--hours", "4"], _environ(), tmp_path
    )
    assert code == 0, text
    plain = _plain(text)
    # Drawn: the final refresh shows every repository done, the branches and commits.
    # 6 branches planned (main and nope in each), 3 found: "done" ends below the total.
    assert "repositories 3/3 · branches 3/6 · commits " in plain, plain
    assert "requests " in plain
    screen = _screen(text)
    # Cleared: no line of the display is left, the summary follows the log lines.
    assert not any(SEPARATOR in line for line in screen), screen
    assert any(line.startswith("run ") and ": succeeded in " in line for line in screen), screen
    # Each warning logged while live is intact on a line of its own.
    warnings = [line for line in screen if "not found, skipped" in line]
    assert len(warnings) == 3, screen
    assert all(_WARNING.match(line) for line in warnings), warnings


def test_no_progress_under_ci_even_on_a_terminal(tmp_path: Path, fake_bitbucket: str) -> None:
    code, text = _run_on_pty(
        ["run", str(_pipeline(tmp_path, fake_bitbucket)), "--hours", "4"],
        _environ(CI="1"),
        tmp_path,
    )
    assert code == 0, text
    assert SEPARATOR not in text and "repositories " not in text, text
    assert "\x1b[" not in text  # nothing but plain lines: no cursor moves either
    assert sum(bool(_WARNING.match(line)) for line in _screen(text)) == 3


@pytest.mark.parametrize(
    "fake_bitbucket", [["--rate-limit-every", "7", "--retry-after", "1"]], indirect=True
)
def test_a_rate_limit_wait_is_shown_as_such(tmp_path: Path, fake_bitbucket: str) -> None:
    code, text = _run_on_pty(
        ["run", str(_pipeline(tmp_path, fake_bitbucket)), "--hours", "4", "--repos", "service-00"],
        _environ(),
        tmp_path,
    )
    assert code == 0, text
    assert "waiting 1 s for Bitbucket's rate limit (429 Too Many Requests)" in _plain(text)
    screen = _screen(text)
    assert not any("waiting 1 s" in line for line in screen), screen  # erased with the rest
    retries = [line for line in screen if " retrying " in line]
    assert retries and all("429" in line for line in retries), screen


def test_piped_run_draws_nothing_and_never_imports_rich(
    tmp_path: Path, fake_bitbucket: str
) -> None:
    script = textwrap.dedent(
        """
        import sys
        from rcingest.cli import main
        try:
            main()
        except SystemExit as exc:
            code = exc.code
        loaded = sorted(m for m in sys.modules if m == "rich" or m.startswith("rich."))
        print(f"EXIT {code} RICH {loaded}", file=sys.stderr)
        """
    )
    args = ["run", str(_pipeline(tmp_path, fake_bitbucket)), "--hours", "4"]
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=_environ(),
        cwd=tmp_path,
        timeout=DEADLINE,
        check=False,
    )
    assert "EXIT 0 RICH []" in done.stderr, done.stderr
    assert SEPARATOR not in done.stderr + done.stdout
    assert "\x1b[" not in done.stderr
