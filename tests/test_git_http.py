"""``GitHttpServer``: real git clones from ``git http-backend`` on loopback (issue 14)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from rcingest.testing.git_http import GitHttpServer, _parse_cgi

HEADER = "Basic eC10b2tlbi1hdXRoOnNlcnZlci10ZXN0LXRva2Vu"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GitHttpServer]:
    async with GitHttpServer(tmp_path / "served", auth=HEADER) as running:
        yield running


def clone(url: str, dest: Path, *, header: str | None = HEADER, timeout: float = 30) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(dest.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }
    args = ["git"]
    if header is not None:
        args += ["-c", f"http.extraHeader=Authorization: {header}"]
    done = subprocess.run(
        [*args, "clone", "--quiet", url, str(dest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(done.stderr)
    return subprocess.run(
        ["git", "-C", str(dest), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


async def test_a_made_repository_clones_with_its_files_and_head(
    server: GitHttpServer, tmp_path: Path
) -> None:
    head = server.make_repo("acme/api", {"README.md": "hello\n", "src/app.py": b"x = 1\n"})
    assert len(head) == 40 and server.head("acme/api") == head
    dest = tmp_path / "checkout"
    got = await asyncio.to_thread(clone, server.url("acme/api"), dest)
    assert got == head
    assert (dest / "src" / "app.py").read_bytes() == b"x = 1\n"
    assert server.url("acme/api") == f"http://127.0.0.1:{server.port}/acme/api.git"
    # Smart HTTP: the ref advertisement, then upload-pack, each with the header.
    paths = [(r.method, r.path) for r in server.requests]
    assert ("GET", "/acme/api.git/info/refs") in paths
    assert ("POST", "/acme/api.git/git-upload-pack") in paths
    assert all(r.headers.get("Authorization") == HEADER for r in server.requests)
    assert server.backend_errors == []


async def test_commit_adds_and_removes_files_and_moves_the_head(
    server: GitHttpServer, tmp_path: Path
) -> None:
    first = server.make_repo("acme/web", {"a.txt": "a\n", "b.txt": "b\n"}, branch="trunk")
    second = server.commit("acme/web", add={"c/d.txt": "d\n"}, remove=["a.txt"])
    assert second != first and server.head("acme/web") == second
    dest = tmp_path / "checkout"
    assert await asyncio.to_thread(clone, server.url("acme/web"), dest) == second
    assert sorted(p.name for p in dest.iterdir() if p.name != ".git") == ["b.txt", "c"]
    with pytest.raises(ValueError, match="exists"):
        server.make_repo("acme/web", {})


async def test_a_request_without_the_header_is_refused_and_recorded(
    server: GitHttpServer,
) -> None:
    server.make_repo("acme/api", {"a": "a\n"})
    async with aiohttp.ClientSession() as session:
        url = server.url("acme/api") + "/info/refs?service=git-upload-pack"
        async with session.get(url) as refused:
            assert refused.status == 401
            assert refused.headers["WWW-Authenticate"].startswith("Basic")
        async with session.get(url, headers={"Authorization": HEADER}) as served:
            assert served.status == 200
            assert served.headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
        async with session.get(
            server.url("acme/none") + "/info/refs?service=git-upload-pack",
            headers={"Authorization": HEADER},
        ) as missing:
            assert missing.status == 404
    assert [r.query for r in server.requests] == ["service=git-upload-pack"] * 3
    assert "Authorization" not in server.requests[0].headers


async def test_git_fails_cleanly_against_a_wrong_header(
    server: GitHttpServer, tmp_path: Path
) -> None:
    server.make_repo("acme/api", {"a": "a\n"})
    with pytest.raises(AssertionError, match="could not read Username"):
        await asyncio.to_thread(clone, server.url("acme/api"), tmp_path / "x", header="Basic bad")


async def test_hang_holds_requests_until_the_server_stops(tmp_path: Path) -> None:
    running = GitHttpServer(tmp_path / "served")
    await running.start()
    running.faults.hang = True
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.get(f"http://{running.authority}/x.git/info/refs"))
        await asyncio.sleep(0.5)
        assert not request.done() and len(running.requests) == 1
        started = time.monotonic()
        await running.stop()
        response = await asyncio.wait_for(request, 5)
        assert response.status == 503 and time.monotonic() - started < 3
        response.release()


async def test_slow_delays_every_answer(server: GitHttpServer) -> None:
    server.make_repo("acme/api", {"a": "a\n"})
    server.faults.slow = 0.4
    async with aiohttp.ClientSession(headers={"Authorization": HEADER}) as session:
        started = time.monotonic()
        async with session.get(server.url("acme/api") + "/info/refs") as answer:
            assert answer.status == 200
        assert time.monotonic() - started >= 0.4


def test_cgi_output_is_parsed_into_status_headers_and_body() -> None:
    status, headers, rest = _parse_cgi(
        b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nRepository not found"
    )
    assert (status, headers, rest) == (404, {"Content-Type": "text/plain"}, b"Repository not found")
    assert _parse_cgi(b"Content-Type: a/b\n\nbody")[::2] == (200, b"body")
    assert _parse_cgi(b"no headers at all")[0] == 502
