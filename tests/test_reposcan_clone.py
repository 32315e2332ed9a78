"""``shallow_clone``: real git over HTTP, bounded, credentials only in git's environment."""

from __future__ import annotations

import asyncio
import base64
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rcingest.bitbucket.auth import AuthConfig
from rcingest.reposcan import (
    CloneFailed,
    CloneNotFound,
    CloneRefused,
    CloneTimeout,
    CloneTooLarge,
    git_auth_header,
    git_auth_secrets,
    remote_head,
    shallow_clone,
)
from rcingest.testing.git_http import GitHttpServer, RecordingGit, process_group_alive

TOKEN = "ATATT3xFfGF0-clone-test-token-9f8e7d6c5b4a"
AUTH = AuthConfig(email="dev@example.com", api_token=TOKEN)
HEADER = git_auth_header(AUTH)
assert HEADER is not None


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GitHttpServer]:
    async with GitHttpServer(tmp_path / "served", auth=HEADER) as running:
        yield running


@pytest.fixture
def system_tmp(tmp_path: Path) -> Iterator[Path]:
    """The temporary folder git's HOME is made in, to show it is removed."""
    folder = tmp_path / "systmp"
    folder.mkdir()
    saved, tempfile.tempdir = tempfile.tempdir, str(folder)
    yield folder
    tempfile.tempdir = saved


async def clone(server: GitHttpServer, dest: Path, **kw: object) -> str:
    options: dict[str, object] = {
        "branch": "main",
        "auth_header": HEADER,
        "allowed_host": server.authority,
        "max_bytes": 10_000_000,
        "timeout": 20.0,
    }
    options.update(kw)
    url = str(options.pop("url", server.url("acme/api")))
    return await shallow_clone(url, str(dest), **options)  # type: ignore[arg-type]


def test_git_credentials_follow_the_bitbucket_api_doc() -> None:
    # bitbucket-api.md §3: an API token's git user is x-bitbucket-api-token-auth,
    # an access token's x-token-auth; both as Basic.
    assert base64.b64decode(HEADER.split()[1]).decode() == f"x-bitbucket-api-token-auth:{TOKEN}"
    access = git_auth_header(AuthConfig(access_token="acc-token-123456"))
    assert access is not None
    assert base64.b64decode(access.split()[1]).decode() == "x-token-auth:acc-token-123456"
    assert git_auth_header(AuthConfig()) is None
    assert {TOKEN, HEADER.split()[1]} <= git_auth_secrets(AUTH)


async def test_a_shallow_clone_of_one_branch_returns_its_full_head(
    server: GitHttpServer, tmp_path: Path, system_tmp: Path
) -> None:
    server.make_repo("acme/api", {"a.txt": "one\n"})
    head = server.commit("acme/api", add={"b.txt": "two\n"})
    dest = tmp_path / "checkout"
    git = RecordingGit.create(tmp_path / "bin")
    assert await clone(server, dest, git=git.path) == head
    assert (dest / "b.txt").read_text() == "two\n"
    shallow = (dest / ".git" / "shallow").read_text().split()
    assert shallow == [head]  # depth 1: the parent commit was not fetched
    assert TOKEN not in (dest / ".git" / "config").read_text()
    assert (
        await remote_head(
            server.url("acme/api"),
            branch="main",
            auth_header=HEADER,
            allowed_host=server.authority,
            timeout=10,
        )
        == head
    )
    assert list(system_tmp.iterdir()) == []  # git's HOME removed
    # Neither the argv git ran with nor the URLs it requested hold a credential.
    for _pid, argv in git.calls():
        assert TOKEN not in argv and HEADER not in argv and HEADER.split()[1] not in argv
    for request in server.requests:
        assert TOKEN not in request.path + request.query
        assert request.headers["Authorization"] == HEADER


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://evil.example.com/acme/api.git", "not the allowed host"),
        (f"http://x-token-auth:{TOKEN}@127.0.0.1/acme/api.git", "carries a password"),
        ("http://bitbucket.org/acme/api.git", "not https"),
        ("file:///etc", "no host"),
    ],
)
async def test_a_url_git_must_not_get_is_refused_before_git_runs(
    tmp_path: Path, url: str, problem: str
) -> None:
    git = RecordingGit.create(tmp_path / "bin")
    allowed = "127.0.0.1" if "127.0.0.1" in url else "bitbucket.org"
    with pytest.raises(CloneRefused, match=problem) as caught:
        await shallow_clone(
            url,
            str(tmp_path / "d"),
            branch="main",
            auth_header=HEADER,
            allowed_host=allowed,
            max_bytes=1000,
            timeout=5,
            git=git.path,
        )
    assert TOKEN not in str(caught.value) and git.calls() == []


async def test_a_user_name_in_the_url_is_dropped(server: GitHttpServer, tmp_path: Path) -> None:
    # Bitbucket's links.clone href: https://jdoe@bitbucket.org/ws/repo.git
    head = server.make_repo("acme/api", {"a.txt": "a\n"})
    git = RecordingGit.create(tmp_path / "bin")
    url = server.url("acme/api").replace("://", "://jdoe@")
    assert await clone(server, tmp_path / "d", url=url, git=git.path) == head
    assert "jdoe" not in git.calls()[0][1] and server.requests


async def test_a_branch_that_looks_like_an_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CloneRefused, match="not a branch name"):
        await shallow_clone(
            "https://bitbucket.org/acme/api.git",
            str(tmp_path / "d"),
            branch="--upload-pack=touch /tmp/x",
            auth_header=None,
            allowed_host="bitbucket.org",
            max_bytes=1000,
            timeout=5,
        )


async def test_missing_repository_and_branch_are_not_found(
    server: GitHttpServer, tmp_path: Path
) -> None:
    server.make_repo("acme/api", {"a.txt": "a\n"})
    with pytest.raises(CloneNotFound, match="not found"):
        await clone(server, tmp_path / "d1", url=server.url("acme/gone"))
    with pytest.raises(CloneNotFound, match="dev not found"):
        await clone(server, tmp_path / "d2", branch="dev")
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists()


async def test_a_refused_header_fails_without_prompting(
    server: GitHttpServer, tmp_path: Path
) -> None:
    server.make_repo("acme/api", {"a.txt": "a\n"})
    wrong = git_auth_header(AuthConfig(access_token="wrong-token-abcdef"))
    started = time.monotonic()
    with pytest.raises(CloneFailed, match="refused the credentials") as caught:
        await clone(server, tmp_path / "d", auth_header=wrong)
    assert time.monotonic() - started < 10
    assert "wrong-token-abcdef" not in str(caught.value)
    assert not (tmp_path / "d").exists()


async def test_git_s_stderr_is_redacted(tmp_path: Path) -> None:
    # A git that prints what it was given (as GIT_TRACE_CURL would): nothing of it survives.
    noisy = tmp_path / "noisy-git"
    noisy.write_text(
        "#!/bin/sh\n"
        "env | grep Authorization >&2\n"
        f'echo "password {TOKEN} pair x-bitbucket-api-token-auth:{TOKEN}" >&2\n'
        "exit 128\n"
    )
    noisy.chmod(0o755)
    with pytest.raises(CloneFailed) as caught:
        await shallow_clone(
            "https://bitbucket.org/acme/api.git",
            str(tmp_path / "d"),
            branch="main",
            auth_header=HEADER,
            allowed_host="bitbucket.org",
            max_bytes=1000,
            timeout=5,
            git=str(noisy),
        )
    message = str(caught.value)
    assert "=Authorization: ***" in message
    assert TOKEN not in message and HEADER.split()[1] not in message


async def test_a_hanging_server_is_a_timeout_and_git_is_killed(
    server: GitHttpServer, tmp_path: Path, system_tmp: Path
) -> None:
    server.make_repo("acme/api", {"a.txt": "a\n"})
    server.faults.hang = True
    git = RecordingGit.create(tmp_path / "bin")
    started = time.monotonic()
    with pytest.raises(CloneTimeout, match=r"1\.5s"):
        await clone(server, tmp_path / "d", timeout=1.5, git=git.path)
    assert 1.4 < time.monotonic() - started < 4
    [(pid, argv)] = git.calls()
    assert argv.startswith("clone") and not process_group_alive(pid)
    assert not (tmp_path / "d").exists() and list(system_tmp.iterdir()) == []


async def test_a_cancelled_clone_leaves_no_process_and_no_folder(
    server: GitHttpServer, tmp_path: Path, system_tmp: Path
) -> None:
    server.make_repo("acme/api", {"a.txt": "a\n"})
    server.faults.hang = True
    git = RecordingGit.create(tmp_path / "bin")
    task = asyncio.ensure_future(clone(server, tmp_path / "d", timeout=30, git=git.path))
    await asyncio.sleep(0.8)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [(pid, _)] = git.calls()
    assert not process_group_alive(pid)
    assert not (tmp_path / "d").exists() and list(system_tmp.iterdir()) == []


async def test_a_clone_over_its_size_bound_is_stopped_and_removed(
    server: GitHttpServer, tmp_path: Path
) -> None:
    server.make_repo("acme/big", {"blob.bin": os.urandom(3_000_000), "a.txt": "a\n"})
    git = RecordingGit.create(tmp_path / "bin")
    with pytest.raises(CloneTooLarge, match="1000000 bytes"):
        await clone(
            server, tmp_path / "d", url=server.url("acme/big"), max_bytes=1_000_000, git=git.path
        )
    assert not (tmp_path / "d").exists()
    assert not any(process_group_alive(pid) for pid, _ in git.calls())
