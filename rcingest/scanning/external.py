"""Run an external SARIF-writing secret scanner on what a pull request adds.

The tool sees a private temporary tree (mode 0700, removed afterwards even
on error, timeout or cancellation) holding, for each file, only its added
lines, each at its new-file line number with empty lines in the gaps: the
line numbers the tool reports are then the pull request's, and context lines
(already in the target branch) are not this change's doing.

The command is a list run without a shell; ``{dir}`` becomes the tree and
``{out}`` a report path beside it (not inside, so the report is not scanned).
Without ``{out}`` the SARIF is read from stdout. The tool gets a minimal
environment, not rcingest's (which holds API tokens), plus ``env``.

Errors never carry a secret: stderr is cut to 500 characters after every
snippet the report gave, and every run of 8+ secret-like characters of the
added lines that it repeats, are replaced with ``[redacted]``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath

import msgspec

from rcingest.errors import RcingestError
from rcingest.scanning.model import DiffFile, Finding
from rcingest.scanning.sarif import SarifError, findings_from_sarif

__all__ = ["ScannerFailed", "ScannerTimeout", "run_sarif_scanner"]

_STDERR_LIMIT = 500
#: How much of stderr is searched for secrets (failing tools say little).
_STDERR_SCANNED = 8000
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
# Runs of characters secrets are made of; a run of 8+ that an added line and
# stderr share is treated as possibly secret. Two cuts: the wide one keeps
# "a.b.c" tokens (JWTs) whole, the narrow one splits "KEY=value" so that a
# tool printing "match:value" still matches the line's "value".
_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-.:@~]{8,}")
_NARROW_TOKEN = re.compile(r"[A-Za-z0-9+/_\-]{8,}")
_FALLBACK_DIR = "_rcingest_unplaceable"


class ScannerTimeout(RcingestError):
    """The scanner ran past its timeout and was killed."""


class ScannerFailed(RcingestError):
    """The scanner exited with an unexpected code or wrote no readable SARIF."""


class _Tree(msgspec.Struct):
    """Where each file went: tree-relative path → the pull request's path."""

    root: str
    paths: dict[str, str]


async def run_sarif_scanner(
    command: list[str],
    files: list[DiffFile],
    *,
    key: bytes,
    # A parameter rather than the caller's asyncio.timeout: on expiry the
    # child process group must be killed, not just this await abandoned.
    timeout: float,  # noqa: ASYNC109
    workdir_parent: str | None = None,
    ok_codes: Iterable[int] = frozenset({0, 1}),
    env: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Findings of ``command`` on the added lines of ``files``.

    ``ok_codes`` are the exit codes that mean "ran" (gitleaks exits 1 when
    it finds something). Raises ``ScannerTimeout`` or ``ScannerFailed``.
    """
    if not command:
        raise ScannerFailed("external scanner: empty command")
    name = os.path.basename(command[0]) or "scanner"
    workdir = tempfile.mkdtemp(prefix="rcingest-scan-", dir=workdir_parent)  # mode 0700
    try:
        tree = _write_tree(os.path.join(workdir, "tree"), files)
        out = os.path.join(workdir, "report.sarif")
        argv = [arg.replace("{dir}", tree.root).replace("{out}", out) for arg in command]
        stdout, stderr, code = await _run(argv, tree.root, timeout, name, env)
        uses_out = any("{out}" in arg for arg in command)
        report = _read_report(out) if uses_out else stdout
        if code not in set(ok_codes):
            detail = _redacted_stderr(stderr, report, files)
            raise ScannerFailed(f"{name} exited with code {code}: {detail}")
        if not report.strip():
            raise ScannerFailed(f"{name} wrote no SARIF report")
        try:
            found = findings_from_sarif(report, key=key, tool_hint=name, root=tree.root)
        except SarifError as exc:
            raise ScannerFailed(f"{name} wrote unreadable SARIF: {exc}") from None
        return [msgspec.structs.replace(f, path=tree.paths.get(f.path, f.path)) for f in found]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(
    argv: list[str],
    cwd: str,
    timeout: float,  # noqa: ASYNC109 (see run_sarif_scanner)
    name: str,
    env: Mapping[str, str] | None,
) -> tuple[bytes, bytes, int]:
    environment = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    environment.update(env or {})
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own process group, so a timeout kills the tool's children too.
            start_new_session=True,
        )
    except OSError as exc:
        raise ScannerFailed(f"{name} could not be started: {exc.strerror or exc}") from None
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        raise ScannerTimeout(f"{name} did not finish within {timeout:g}s and was killed") from None
    finally:
        if process.returncode is None:  # timed out or cancelled
            _kill_group(process.pid)
            await process.wait()
    return stdout, stderr, process.returncode if process.returncode is not None else -1


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the group this call created, led by pid
    except ProcessLookupError:
        pass


def _read_report(path: str) -> bytes:
    try:
        with open(path, "rb") as report:
            return report.read()
    except FileNotFoundError:
        return b""


def _write_tree(root: str, files: list[DiffFile]) -> _Tree:
    os.mkdir(root, 0o700)
    tree = _Tree(root=root, paths={})
    for number, diff_file in enumerate(files):
        if diff_file.binary or not diff_file.added:
            continue
        last = max(line.line for line in diff_file.added)
        lines = [""] * last
        for added in diff_file.added:
            lines[added.line - 1] = added.text
        content = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        relative = _safe_relative(diff_file.path)
        if relative is None or not _write(root, relative, content):
            # A path that cannot be a file here ("../x", a file where a
            # directory was): scanned under a neutral name, reported under its own.
            relative = f"{_FALLBACK_DIR}/{number}"
            if not _write(root, relative, content):
                raise ScannerFailed(f"could not write {diff_file.path!r} for the scanner")
        tree.paths[relative] = diff_file.path
    return tree


def _safe_relative(path: str) -> str | None:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or any(part in ("..", ".") for part in pure.parts):
        return None
    if pure.parts[0] == _FALLBACK_DIR:
        return None
    return str(pure)


def _write(root: str, relative: str, content: bytes) -> bool:
    target = os.path.join(root, relative)
    try:
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return False
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
    return True


def _redacted_stderr(stderr: bytes, report: bytes, files: list[DiffFile]) -> str:
    text = " ".join(stderr.decode("utf-8", errors="replace").split())
    if len(text) > _STDERR_SCANNED:
        # Cut at a space, so no secret is half kept, half out of reach of redaction.
        text = text[:_STDERR_SCANNED].rsplit(" ", 1)[0]
    for secret in sorted(_snippets(report), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    added = {token for f in files for line in f.added for token in _TOKEN.findall(line.text)}
    # Substring tests, not token equality: "match:AKIA..." must lose its key too.
    for token in sorted((t for t in added if t in text), key=len, reverse=True):
        text = text.replace(token, "[redacted]")
    narrow = {
        token for f in files for line in f.added for token in _NARROW_TOKEN.findall(line.text)
    }
    text = _NARROW_TOKEN.sub(lambda m: "[redacted]" if m[0] in narrow else m[0], text)
    if len(text) > _STDERR_LIMIT:
        text = text[: _STDERR_LIMIT - 3] + "..."
    return text or "(no stderr)"


def _snippets(report: bytes) -> set[str]:
    """Every ``snippet.text`` in whatever the tool wrote, however malformed the rest."""
    found: set[str] = set()
    try:
        document = msgspec.json.decode(report)
    except msgspec.DecodeError:
        return found
    stack: list[object] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            snippet = node.get("snippet")
            if isinstance(snippet, dict) and isinstance(snippet.get("text"), str):
                found.add(snippet["text"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    found.discard("")
    return found
