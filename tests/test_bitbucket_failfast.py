"""Fail fast on what retrying cannot fix: refused, DNS, no route, TLS certificate.

Classification with raised exceptions (aioresponses), then real sockets on
127.0.0.1 (a bound port nobody listens on, a ``.invalid`` name, a
self-signed TLS server) and ``rcingest run`` end to end.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey
from aioresponses import aioresponses

from rcingest.bitbucket.auth import AuthConfig
from rcingest.bitbucket.client import BitbucketClient, ClientConfig, Unreachable
from rcingest.bitbucket.retry import (
    CONNECTION_REFUSED,
    DNS_FAILED,
    HOST_UNREACHABLE,
    NETWORK_UNREACHABLE,
    TLS_CERTIFICATE,
    BitbucketError,
    unreachable_kind,
)
from rcingest.interfaces import Stats

API = "https://api.example.test/2.0"
ORIGIN = "https://api.example.test:443"
TOKEN = "tok-SECRET-failfast-9876"


def config(**kwargs: Any) -> ClientConfig:
    base: dict[str, Any] = {
        "base_url": API,
        "auth": AuthConfig(email="me@example.com", api_token=TOKEN),
        "backoff_base": 0.001,
        "backoff_max": 0.01,
        "max_time": 10.0,
    }
    base.update(kwargs)
    return ClientConfig(**base)


def key(host: str = "api.example.test", port: int = 443) -> ConnectionKey:
    """A ``ConnectionKey`` whatever fields this aiohttp version gives it."""
    known: dict[str, Any] = {"host": host, "port": port, "is_ssl": True, "ssl": True}
    values: list[Any] = [known.get(name) for name in ConnectionKey._fields]
    return ConnectionKey(*values)


def refused() -> aiohttp.ClientConnectorError:
    return aiohttp.ClientConnectorError(key(), ConnectionRefusedError(errno.ECONNREFUSED, "x"))


def os_error(code: int | None) -> aiohttp.ClientConnectorError:
    return aiohttp.ClientConnectorError(key(), OSError(code, "x"))


def dns_error() -> aiohttp.ClientConnectorError:
    return aiohttp.ClientConnectorDNSError(key(), socket.gaierror(socket.EAI_NONAME, "unknown"))


def certificate_error() -> aiohttp.ClientConnectorError:
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "self-signed certificate"
    return aiohttp.ClientConnectorCertificateError(key(), cause)


def ssl_error() -> aiohttp.ClientConnectorError:
    # An EOF in the middle of a handshake: the server went away, not a bad certificate.
    return aiohttp.ClientConnectorSSLError(key(), ssl.SSLEOFError(8, "EOF"))


# --- the classification (sans-I/O) ------------------------------------------------


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (refused, CONNECTION_REFUSED),
        (dns_error, DNS_FAILED),
        (lambda: os_error(errno.EHOSTUNREACH), HOST_UNREACHABLE),
        (lambda: os_error(errno.ENETUNREACH), NETWORK_UNREACHABLE),
        (certificate_error, TLS_CERTIFICATE),
        # A gaierror without aiohttp's DNS subclass (another resolver path).
        (lambda: aiohttp.ClientConnectorError(key(), socket.gaierror(-2, "x")), DNS_FAILED),
    ],
)
def test_what_retrying_cannot_fix(make: Any, kind: str) -> None:
    assert unreachable_kind(make(), answered_before=False) == kind


@pytest.mark.parametrize(
    "make",
    [
        lambda: os_error(errno.ECONNRESET),
        lambda: os_error(errno.ETIMEDOUT),
        # Several addresses failing differently: no errno, not a verdict on the host.
        lambda: os_error(None),
        ssl_error,
        lambda: aiohttp.ServerDisconnectedError(),
        lambda: aiohttp.ClientConnectionResetError("reset"),
        lambda: aiohttp.ClientPayloadError("cut"),
        lambda: aiohttp.ClientOSError(errno.ECONNREFUSED, "not a connect"),
        lambda: TimeoutError(),
        lambda: aiohttp.ServerTimeoutError("read"),
    ],
)
def test_what_stays_retried(make: Any) -> None:
    assert unreachable_kind(make(), answered_before=False) is None


def test_once_the_host_answered_only_a_certificate_stays_fatal() -> None:
    for make in (refused, dns_error, lambda: os_error(errno.EHOSTUNREACH)):
        assert unreachable_kind(make(), answered_before=True) is None
    assert unreachable_kind(certificate_error(), answered_before=True) == TLS_CERTIFICATE


# --- the client, with aioresponses ----------------------------------------------------


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (refused, CONNECTION_REFUSED),
        (dns_error, DNS_FAILED),
        (certificate_error, TLS_CERTIFICATE),
        (lambda: os_error(errno.ENETUNREACH), NETWORK_UNREACHABLE),
    ],
)
async def test_the_client_fails_at_once_naming_the_origin(
    mocked: aioresponses, make: Any, kind: str
) -> None:
    target = f"{API}/repositories/ws/r?access_token={TOKEN}"
    for _ in range(8):
        mocked.get(target, exception=make())
    stats = Stats()
    async with BitbucketClient(config(), stats) as client:
        with pytest.raises(Unreachable) as info:
            await client.get_json("/repositories/ws/r", {"access_token": TOKEN})
    assert stats.get("http.requests") == 1 and stats.get("http.retries") == 0
    assert info.value.kind == kind and info.value.origin == ORIGIN
    assert isinstance(info.value, BitbucketError)  # callers catching BitbucketError see it
    message = str(info.value)
    assert ORIGIN in message and kind in message and "/repositories/ws/r" in message
    assert TOKEN not in message and TOKEN not in info.value.url


async def test_a_transient_connection_error_is_still_retried(mocked: aioresponses) -> None:
    target = f"{API}/repositories/ws/r"
    mocked.get(target, exception=ssl_error())
    mocked.get(target, exception=aiohttp.ServerDisconnectedError())
    mocked.get(target, payload={"full_name": "ws/r"})
    stats = Stats()
    async with BitbucketClient(config(), stats) as client:
        assert (await client.get_json("/repositories/ws/r"))["full_name"] == "ws/r"
    assert stats.get("http.retries") == 2


async def test_a_refusal_after_the_host_answered_is_retried(mocked: aioresponses) -> None:
    """A host that answered is restarting or had a blip, not misconfigured."""
    target = f"{API}/repositories/ws/r"
    mocked.get(target, payload={"full_name": "ws/r"})
    mocked.get(target, exception=refused())
    mocked.get(target, exception=dns_error())
    mocked.get(target, payload={"full_name": "ws/r"})
    mocked.get(target, exception=certificate_error())
    stats = Stats()
    async with BitbucketClient(config(), stats) as client:
        await client.get_json("/repositories/ws/r")
        await client.get_json("/repositories/ws/r")
        assert stats.get("http.retries") == 2
        with pytest.raises(Unreachable) as info:
            await client.get_json("/repositories/ws/r")
    assert info.value.kind == TLS_CERTIFICATE


async def test_an_http_error_status_counts_as_an_answer(mocked: aioresponses) -> None:
    target = f"{API}/repositories/ws/r"
    mocked.get(target, status=503, body="busy")
    mocked.get(target, exception=refused())
    mocked.get(target, payload={"full_name": "ws/r"})
    stats = Stats()
    async with BitbucketClient(config(), stats) as client:
        await client.get_json("/repositories/ws/r")
    assert stats.get("http.retries") == 2


# --- real sockets on 127.0.0.1 --------------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 that nobody listens on: connecting is refused, no race."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


async def _fails_with(base_url: str) -> tuple[Unreachable, Stats, float]:
    # Real back-off delays: were the failure retried, it would take the 40 s of max_time.
    cfg = config(base_url=base_url, backoff_base=1.0, backoff_max=60.0, max_time=40.0)
    stats = Stats()
    started = time.monotonic()
    async with BitbucketClient(cfg, stats) as client:
        with pytest.raises(Unreachable) as info:
            await client.get_json("/repositories/ws/r")
    return info.value, stats, time.monotonic() - started


async def test_a_refused_port_fails_at_once(closed_port: int) -> None:
    exc, stats, elapsed = await _fails_with(f"http://127.0.0.1:{closed_port}/2.0")
    assert exc.kind == CONNECTION_REFUSED
    assert exc.origin == f"http://127.0.0.1:{closed_port}"
    assert stats.get("http.retries") == 0
    assert elapsed < 30  # a hang guard only: a retried failure takes minutes


# .invalid is reserved (RFC 6761) and never resolves, but glibc still asks the
# configured nameserver. Tests send no traffic off this machine, so the lookup
# is answered here with what a resolver says for an unknown name.
NO_DNS = """
import socket
_real = socket.getaddrinfo
def _getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name.endswith(".invalid"):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return _real(host, *args, **kwargs)
socket.getaddrinfo = _getaddrinfo
"""


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process, what ``NO_DNS`` does in the subprocess."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


async def test_an_unknown_host_name_fails_at_once(no_dns: None) -> None:
    exc, stats, elapsed = await _fails_with("http://rcingest-test.invalid/2.0")
    assert exc.kind == DNS_FAILED
    assert exc.origin == "http://rcingest-test.invalid:80"
    assert stats.get("http.retries") == 0
    assert elapsed < 30


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cryptography if installed, else openssl)."""
    cert, private = directory / "cert.pem", directory / "key.pem"
    try:
        import datetime as dt

        from cryptography import x509  # type: ignore[import-not-found, unused-ignore]
        from cryptography.hazmat.primitives import hashes, serialization  # type: ignore[import-not-found, unused-ignore]
        from cryptography.hazmat.primitives.asymmetric import ec  # type: ignore[import-not-found, unused-ignore]
        from cryptography.x509.oid import NameOID  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("neither the cryptography package nor the openssl command is available")
        subprocess.run(
            [
                *(openssl, "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
                *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
                *("-addext", "subjectAltName=IP:127.0.0.1"),
                *("-keyout", str(private), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
        )
        return cert, private
    import ipaddress

    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    built = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(pkey, hashes.SHA256())
    )
    cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        pkey.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, private


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate; its base URL and cert."""
    cert, private = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, private)

    async def repository(request: web.Request) -> web.Response:
        return web.json_response({"full_name": "ws/r"})

    app = web.Application()
    app.router.add_get("/2.0/repositories/ws/r", repository)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}/2.0", cert
    finally:
        await runner.cleanup()


async def test_an_untrusted_certificate_fails_at_once(tls_server: tuple[str, Path]) -> None:
    base_url, cert = tls_server
    exc, stats, elapsed = await _fails_with(base_url)
    assert exc.kind == TLS_CERTIFICATE
    assert exc.origin == base_url.removesuffix("/2.0")
    assert stats.get("http.retries") == 0
    assert elapsed < 30
    # The same server, its certificate trusted, answers: what failed was the certificate.
    trusting = ssl.create_default_context(cafile=str(cert))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/repositories/ws/r", ssl=trusting) as resp:
            assert resp.status == 200


# --- end to end: rcingest run ----------------------------------------------------------

PIPELINE = """\
name: unreachable
source:
  type: bitbucket_rest
  config:
    workspace: acme
    repositories: [api]
    hours: 4
    base_url: {base_url}
    auth:
      email: me@example.com
      api_token: ${{BITBUCKET_API_TOKEN}}
sinks:
  - type: json_artifact
    config:
      artifacts_dir: {artifacts}
"""


@pytest.mark.parametrize("target", ["refused", "dns"])
def test_rcingest_run_against_an_unreachable_host_is_a_clean_run_failure(
    tmp_path: Path, closed_port: int, target: str
) -> None:
    """Exit 1 ("the run failed"), the origin and the kind in one message, no traceback."""
    origin, kind = {
        "refused": (f"http://127.0.0.1:{closed_port}", CONNECTION_REFUSED),
        "dns": ("http://rcingest-test.invalid:80", DNS_FAILED),
    }[target]
    base_url = f"http://127.0.0.1:{closed_port}/2.0" if target == "refused" else None
    base_url = base_url or "http://rcingest-test.invalid/2.0"
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        PIPELINE.format(base_url=base_url, artifacts=tmp_path / "artifacts"), encoding="utf-8"
    )
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_DNS + "from rcingest.cli import main; main()",
            "run",
            str(pipeline),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BITBUCKET_API_TOKEN": TOKEN},
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert origin in errors[0] and kind in errors[0]
    assert "Traceback" not in done.stderr
    assert "retrying" not in done.stderr
    assert TOKEN not in done.stderr + done.stdout
    assert elapsed < 30  # a hang guard: with retries this took 79-103 s
