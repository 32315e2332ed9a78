"""Real git over HTTP on loopback: bare repositories served by ``git http-backend``.

``GitHttpServer`` runs an aiohttp app on 127.0.0.1 (a free port) that hands
every request to git's own CGI program, so a clone in a test speaks the smart
HTTP protocol (v2 included) with a real git server, not a mock::

    async with GitHttpServer(tmp_path, auth="Basic eC10b2tlbi1hdXRoOnRva2Vu") as server:
        head = server.make_repo("acme/api", {"app.py": "print('hi')\\n"})
        url = server.url("acme/api")  # http://127.0.0.1:<port>/acme/api.git

It refuses (401) a request whose ``Authorization`` is not the configured
value, records each request's method, path, query and headers (so a test can
show the credential travelled only in the header), and has two faults:
``hang`` (never answers until the server stops) and ``slow`` (seconds before
each answer). The repositories are made and changed with real ``git``
commands (``make_repo``, ``commit``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiohttp import web

__all__ = [
    "GitFaults",
    "GitHttpServer",
    "RecordedRequest",
    "RecordingGit",
    "git_command_lines",
    "process_group_alive",
]

#: Fixed identity and dates: the same files make the same commits (and heads) every run.
_COMMIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
    "GIT_AUTHOR_DATE": "2026-01-05T10:00:00+0000",
    "GIT_COMMITTER_DATE": "2026-01-05T10:00:00+0000",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]


@dataclass
class GitFaults:
    """What the server does wrong; change the fields while it runs."""

    #: Never answer (the request is held until the server stops).
    hang: bool = False
    #: Seconds to wait before answering each request.
    slow: float = 0.0


@dataclass
class _Repo:
    bare: Path
    work: Path
    branch: str
    commits: int = field(default=0)


class GitHttpServer:
    """Serves the bare repositories under ``root`` over smart HTTP (see the module doc)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        auth: str | None = None,
        faults: GitFaults | None = None,
        git: str = "git",
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        #: The ``Authorization`` value required of every request (``None``: none needed).
        self.auth = auth
        self.faults = faults or GitFaults()
        self.git = git
        self.requests: list[RecordedRequest] = []
        #: What ``git http-backend`` wrote to stderr (for a test's failure message).
        self.backend_errors: list[str] = []
        self.host = "127.0.0.1"
        self.port = 0
        self._repos: dict[str, _Repo] = {}
        # Work trees live outside root: only the bare repositories are served.
        self._work = Path(tempfile.mkdtemp(prefix="rcingest-git-work-"))
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- serving ---------------------------------------------------------------

    @property
    def authority(self) -> str:
        """``127.0.0.1:<port>``: what ``allowed_host`` of a clone should be."""
        return f"{self.host}:{self.port}"

    def url(self, name: str) -> str:
        """The clone URL of repository ``name`` (``workspace/slug``)."""
        return f"http://{self.authority}/{name}.git"

    async def start(self) -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._stopping.clear()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop serving (idempotent); held ``hang`` requests are released first."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> GitHttpServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        shutil.rmtree(self._work, ignore_errors=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            RecordedRequest(
                request.method, request.path, request.query_string, dict(request.headers)
            )
        )
        if self.faults.hang:
            await self._stopping.wait()
            return web.Response(status=503, text="stopping")
        if self.faults.slow:
            await asyncio.sleep(self.faults.slow)
        if self.auth is not None and request.headers.get("Authorization") != self.auth:
            return web.Response(
                status=401, text="unauthorized", headers={"WWW-Authenticate": 'Basic realm="git"'}
            )
        return await self._cgi(request)

    def _cgi_env(self, request: web.Request) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self._work),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query_string,
            "REQUEST_METHOD": request.method,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "REMOTE_ADDR": request.remote or "127.0.0.1",
            "REMOTE_USER": _basic_user(request.headers.get("Authorization")),
        }
        # aiohttp hands over the body already decompressed (and de-chunked), so the
        # length is given only for a plain body; otherwise http-backend reads to EOF.
        if "Content-Encoding" not in request.headers and request.content_length is not None:
            env["CONTENT_LENGTH"] = str(request.content_length)
        if "Git-Protocol" in request.headers:  # protocol v2
            env["GIT_PROTOCOL"] = request.headers["Git-Protocol"]
        return env

    async def _cgi(self, request: web.Request) -> web.StreamResponse:
        process = await asyncio.create_subprocess_exec(
            self.git,
            "http-backend",
            env=self._cgi_env(request),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # upload-pack and pack-objects are killed with it
        )
        assert process.stdin and process.stdout and process.stderr
        stdin, stdout, stderr = process.stdin, process.stdout, process.stderr

        async def feed() -> None:
            with contextlib.suppress(ConnectionError):
                async for chunk in request.content.iter_chunked(65536):
                    stdin.write(chunk)
                    await stdin.drain()
            stdin.close()

        feeder = asyncio.create_task(feed())
        errors = asyncio.create_task(stderr.read())
        try:
            head = b""
            while b"\r\n\r\n" not in head and b"\n\n" not in head:
                chunk = await stdout.read(65536)
                if not chunk:
                    break
                head += chunk
            status, headers, rest = _parse_cgi(head)
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            try:
                if rest:
                    await response.write(rest)
                while chunk := await stdout.read(65536):
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:
                pass  # the client went away (a clone killed at its bound): nobody to answer
            return response
        finally:
            feeder.cancel()
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            # Close and drain every pipe, so that asyncio closes the transport now.
            stdin.close()
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(_discard(stdout), 2.0)
            with contextlib.suppress(TimeoutError, OSError):
                if text := (await asyncio.wait_for(errors, 2.0)).decode("utf-8", "replace"):
                    self.backend_errors.append(text.strip())

    # --- repositories ------------------------------------------------------------

    def _git(self, cwd: Path, *args: str) -> str:
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(self._work)}
        env.update(_COMMIT_ENV, GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")
        done = subprocess.run(  # noqa: S603 (git with fixed arguments)
            [self.git, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def make_repo(self, name: str, files: Mapping[str, str | bytes], branch: str = "main") -> str:
        """Create bare repository ``name`` (``ws/slug``) with one commit of ``files``; its head."""
        if name in self._repos:
            raise ValueError(f"repository {name} exists")
        bare = self.root / f"{name}.git"
        work = self._work / name
        bare.parent.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True)
        self._git(self.root, "init", "--quiet", "--bare", f"--initial-branch={branch}", str(bare))
        self._git(work, "init", "--quiet", f"--initial-branch={branch}")
        self._repos[name] = _Repo(bare=bare, work=work, branch=branch)
        return self.commit(name, add=files, message="initial commit")

    def commit(
        self,
        name: str,
        *,
        add: Mapping[str, str | bytes] | None = None,
        remove: Sequence[str] = (),
        message: str | None = None,
    ) -> str:
        """Write ``add``, delete ``remove``, commit, push to the bare repository; the new head."""
        repo = self._repos[name]
        for path, content in (add or {}).items():
            target = repo.work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            data = content.encode() if isinstance(content, str) else content
            target.write_bytes(data)
        for path in remove:
            self._git(repo.work, "rm", "--quiet", "--", path)
        repo.commits += 1
        self._git(repo.work, "add", "--all")
        self._git(
            repo.work,
            "commit",
            "--quiet",
            "--allow-empty",
            "-m",
            message or f"change {repo.commits}",
        )
        self._git(repo.work, "push", "--quiet", str(repo.bare), f"HEAD:refs/heads/{repo.branch}")
        return self._git(repo.work, "rev-parse", "HEAD")

    def head(self, name: str) -> str:
        """The branch head of ``name`` as the bare repository has it."""
        repo = self._repos[name]
        return self._git(repo.bare, "rev-parse", f"refs/heads/{repo.branch}")


@dataclass(frozen=True)
class RecordingGit:
    """A ``git`` that logs each call's pid and argv, then execs the real git.

    Give ``path`` as a clone's ``git=``: a test then reads what git was run
    with (the process list shows exactly this argv) and which process groups
    to check are gone. The pid is git's own (``exec`` keeps it), which leads
    its process group when the caller starts it with ``start_new_session``.
    """

    path: str
    log: str

    @classmethod
    def create(cls, folder: str | os.PathLike[str], real_git: str | None = None) -> RecordingGit:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        real = real_git or shutil.which("git") or "git"
        script, log = folder / "git", folder / "git-argv.log"
        script.write_text(
            f'#!/bin/sh\nprintf "%s %s\\n" "$$" "$*" >> "{log}"\nexec "{real}" "$@"\n'
        )
        script.chmod(0o755)
        return cls(str(script), str(log))

    def calls(self) -> list[tuple[int, str]]:
        """(pid, argv joined by spaces) of every call so far."""
        if not os.path.exists(self.log):
            return []
        with open(self.log, encoding="utf-8", errors="replace") as lines:
            return [
                (int(pid), argv)
                for pid, _, argv in (line.rstrip("\n").partition(" ") for line in lines)
            ]


def process_group_alive(pgid: int) -> bool:
    """True while any process of group ``pgid`` exists (Linux ``/proc``)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After "pid (comm)": state, ppid, pgrp; a zombie is gone for this purpose.
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def git_command_lines() -> list[str]:
    """The command lines (argv joined by spaces) of every running process that mentions git."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().replace(b"\x00", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if "git" in argv:
            found.append(argv.strip())
    return found


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


def _basic_user(header: str | None) -> str:
    if not header or not header.startswith("Basic "):
        return ""
    try:
        return base64.b64decode(header[6:], validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _parse_cgi(head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and the start of the body from a CGI program's output."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        if separator in head:
            block, rest = head.split(separator, 1)
            break
    else:
        return 502, {"Content-Type": "text/plain"}, b"http-backend wrote no headers\n"
    status = 200
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "status":
            status = int(value.strip().split(" ", 1)[0])
        elif key.strip():
            headers[key.strip()] = value.strip()
    return status, headers, rest
