"""A bounded shallow clone of one branch with the git CLI, credentials only in the environment.

The ``Authorization`` header reaches git as ``http.extraHeader`` through
``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n``: never in the
URL (git would store it in ``.git/config`` and print it), never in argv (the
process list shows argv to every user; a process's environment is readable
only by its owner and root). git runs with an environment built from scratch:
a fresh ``HOME``, no system or global config, no askpass and no terminal
prompt, so no user config, credential helper or LFS filter takes part and a
refused credential fails instead of waiting for a prompt.

The clone is bounded: its process group is killed when it passes ``timeout``
seconds or when the destination passes ``max_bytes`` (polled every 0.2 s and
checked once more when git exits, so a fast clone over the bound is refused
too). Every error message comes from git's stderr with the credentials
removed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Collection, Mapping
from urllib.parse import urlsplit, urlunsplit

from rcingest.errors import RcingestError

__all__ = [
    "CloneError",
    "CloneFailed",
    "CloneNotFound",
    "CloneRefused",
    "CloneTimeout",
    "CloneTooLarge",
    "check_url",
    "credential_values",
    "git_environment",
    "redact",
    "remote_head",
    "shallow_clone",
]

log = logging.getLogger("rcingest.reposcan")

_POLL_SECONDS = 0.2
_FULL_HASH = re.compile(r"[0-9a-f]{40}")
#: Only this much of git's stderr is kept (``--quiet`` leaves little, a failure a few lines).
_STDERR_LIMIT = 64 * 1024
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
#: What git prints when the repository or the branch does not exist (LC_ALL=C).
_NOT_FOUND = (
    re.compile(r"repository '[^']*' not found", re.IGNORECASE),
    re.compile(r"remote branch \S+ not found in upstream", re.IGNORECASE),
    re.compile(r"couldn't find remote ref", re.IGNORECASE),
    re.compile(r"The requested URL returned error: 404", re.IGNORECASE),
)
_AUTH_REFUSED = (
    "could not read username",
    "could not read password",
    "authentication failed",
    "the requested url returned error: 401",
    "the requested url returned error: 403",
)


class CloneError(RcingestError):
    """A clone did not produce a checkout; the message never holds a credential."""


class CloneTimeout(CloneError):
    """git passed its time bound and was killed."""


class CloneTooLarge(CloneError):
    """The checkout passed its size bound (git killed, the directory removed)."""


class CloneNotFound(CloneError):
    """The repository or the branch does not exist (or is hidden from these credentials)."""


class CloneFailed(CloneError):
    """Anything else git refused, with its redacted stderr."""


class CloneRefused(CloneFailed):
    """The URL was not cloned at all: another host, credentials in it, or an unsafe scheme."""


def redact(text: str, secrets: Collection[str]) -> str:
    """``text`` with every secret (longest first) replaced by ``***``."""
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def credential_values(auth_header: str | None, extra: Collection[str] = ()) -> set[str]:
    """What to redact: the header, its credential part, a Basic pair and password, ``extra``."""
    found = {s for s in extra if s}
    if not auth_header:
        return found
    found.add(auth_header)
    _, _, credential = auth_header.partition(" ")
    if credential:
        found.add(credential)
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            decoded = base64.b64decode(credential, validate=True).decode()
            found.add(decoded)
            found.add(decoded.partition(":")[2])
    return found


def check_url(url: str, allowed_host: str) -> str:
    """The URL git is given, or ``CloneRefused``: another host, a password, plain HTTP off loopback.

    ``allowed_host`` is a host name (any port) or ``host:port``. A user name
    alone is dropped: Bitbucket's ``links.clone`` href carries the account's
    (``https://jdoe@bitbucket.org/ws/repo.git``) and git would pair it with
    the header's credential; a password in the URL is refused outright.
    """
    parts = urlsplit(url)
    if parts.password is not None:
        raise CloneRefused("clone URL carries a password; credentials go in the header only")
    host = (parts.hostname or "").lower()
    if not host:
        raise CloneRefused(f"clone URL has no host: {url[:200]}")
    allowed = allowed_host.lower().strip("[]")
    with_port = f"{host}:{parts.port}" if parts.port else host
    if allowed not in (host, with_port):
        raise CloneRefused(f"clone URL host {with_port} is not the allowed host {allowed_host}")
    # A header sent in clear over the network is a leaked credential; loopback never leaves.
    if parts.scheme != "https" and not (parts.scheme == "http" and host in _LOOPBACK):
        raise CloneRefused(f"clone URL scheme {parts.scheme or '(none)'} is not https")
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _check_branch(branch: str) -> None:
    # git would read "-x" as an option and control characters have no place in a ref.
    if not branch or branch.startswith("-") or any(ord(c) < 0x20 or c == "\x7f" for c in branch):
        raise CloneRefused(f"not a branch name: {branch!r}")


def git_environment(home: str, scheme: str, auth_header: str | None) -> dict[str, str]:
    """The whole environment git runs with (nothing inherited but ``PATH``)."""
    config = {
        # A redirect would carry the header to wherever it points.
        "http.followRedirects": "false",
        # No hook runs, whatever a template directory brings along.
        "core.hooksPath": os.devnull,
    }
    if auth_header is not None:
        config["http.extraHeader"] = f"Authorization: {auth_header}"
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": home,
        "XDG_CONFIG_HOME": home,
        "LC_ALL": "C",  # git's messages in English: not_found is recognised by them
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",  # empty: git neither runs a program nor falls back to SSH_ASKPASS
        "GIT_ALLOW_PROTOCOL": scheme,
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    for index, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def _tree_bytes(root: str) -> int:
    total = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):  # a pack git renamed meanwhile
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the group start_new_session made, led by pid


async def _drain(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(8192):
        room = _STDERR_LIMIT - len(into)
        if room > 0:
            into += chunk[:room]


async def _run_git(
    argv: list[str],
    env: Mapping[str, str],
    *,
    deadline: float,
    timeout: float,  # noqa: ASYNC109 (only for the message; the deadline bounds)
    watch: str | None = None,
    max_bytes: int | None = None,
) -> tuple[int, bytes, bytes]:
    """Run git; kill its process group at the deadline or when ``watch`` passes ``max_bytes``."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # git-remote-https and index-pack die with it
    )
    assert process.stdout is not None and process.stderr is not None
    out, err = bytearray(), bytearray()
    readers = asyncio.gather(_drain(process.stdout, out), _drain(process.stderr, err))
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CloneTimeout(f"git did not finish within {timeout:g}s and was killed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), min(_POLL_SECONDS, left))
            if watch is not None and max_bytes is not None:
                size = await asyncio.to_thread(_tree_bytes, watch)
                if size > max_bytes:
                    raise CloneTooLarge(
                        f"the clone passed {max_bytes} bytes (at least {size}) and was stopped"
                    )
            if process.returncode is not None:
                break
        # git has exited; a child still holding its pipes is bounded by the same deadline.
        try:
            await asyncio.wait_for(asyncio.shield(readers), max(deadline - time.monotonic(), 0.1))
        except TimeoutError:
            raise CloneTimeout(f"git did not finish within {timeout:g}s and was killed") from None
    finally:
        if process.returncode is None or not readers.done():  # a bound passed, or cancelled
            _kill_group(process.pid)
            await process.wait()
        # The group is dead, so its pipes reach EOF at once; reading them to the end
        # lets asyncio close the transport (cancelled readers would leave it open).
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(readers, 1.0)
    return process.returncode, bytes(out), bytes(err)


def _failure(code: int, stderr: bytes, secrets: Collection[str], what: str) -> CloneError:
    text = redact(stderr.decode("utf-8", "replace"), secrets).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = " | ".join(lines[-5:]) or "no message"
    if any(pattern.search(text) for pattern in _NOT_FOUND):
        return CloneNotFound(f"{what} (exit {code}): {said}"[:500])
    if any(marker in text.lower() for marker in _AUTH_REFUSED):
        # git asks for a user name when the server answers 401 to the header it sent.
        return CloneFailed(
            f"{what}: the server refused the credentials (exit {code}): {said}"[:500]
        )
    return CloneFailed(f"{what} failed (exit {code}): {said}"[:500])


async def shallow_clone(
    url: str,
    dest: str,
    *,
    branch: str,
    auth_header: str | None,
    allowed_host: str,
    max_bytes: int,
    timeout: float,  # noqa: ASYNC109 (a bound of the whole clone, kills the process group)
    git: str = "git",
    secrets: Collection[str] = (),
) -> str:
    """Clone ``branch`` of ``url`` at depth 1 into ``dest`` (must not exist); its full head.

    On any error, and on cancellation, ``dest`` is removed; on success the
    caller owns it. ``secrets`` are more values to redact from messages
    (the header, its credential and a Basic password always are).
    """
    url = check_url(url, allowed_host)
    _check_branch(branch)
    hidden = credential_values(auth_header, secrets)
    deadline = time.monotonic() + timeout
    home = tempfile.mkdtemp(prefix="rcingest-git-home-")
    env = git_environment(home, urlsplit(url).scheme, auth_header)
    argv = [git, "clone", "--quiet", "--depth=1", "--single-branch", "--no-tags"]
    # No --filter=blob:limit: a checkout fetches every filtered blob it needs
    # right after, and http-backend only filters where uploadpack.allowFilter is set.
    argv += [f"--branch={branch}", "--", url, dest]
    log.debug("reposcan: cloning %s branch %s", url, branch)
    try:
        code, _, stderr = await _run_git(
            argv, env, deadline=deadline, timeout=timeout, watch=dest, max_bytes=max_bytes
        )
        if code != 0:
            raise _failure(code, stderr, hidden, "git clone")
        code, stdout, stderr = await _run_git(
            [git, "-C", dest, "rev-parse", "HEAD"], env, deadline=deadline, timeout=timeout
        )
        head = stdout.decode("ascii", "replace").strip()
        if code != 0 or not _FULL_HASH.fullmatch(head):
            raise _failure(code, stderr, hidden, "git rev-parse HEAD")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return head


async def remote_head(
    url: str,
    *,
    branch: str,
    auth_header: str | None,
    allowed_host: str,
    timeout: float,  # noqa: ASYNC109 (kills the process group)
    git: str = "git",
    secrets: Collection[str] = (),
) -> str:
    """The full head of ``branch`` on the remote: ``git ls-remote``, one small request, no clone."""
    url = check_url(url, allowed_host)
    _check_branch(branch)
    hidden = credential_values(auth_header, secrets)
    home = tempfile.mkdtemp(prefix="rcingest-git-home-")
    env = git_environment(home, urlsplit(url).scheme, auth_header)
    argv = [git, "ls-remote", "--heads", "--", url, f"refs/heads/{branch}"]
    try:
        code, stdout, stderr = await _run_git(
            argv, env, deadline=time.monotonic() + timeout, timeout=timeout
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if code != 0:
        raise _failure(code, stderr, hidden, "git ls-remote")
    for line in stdout.decode("ascii", "replace").splitlines():
        head, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}" and _FULL_HASH.fullmatch(head):
            return head
    raise CloneNotFound(f"git ls-remote: no branch {branch} in {url[:200]}")
