"""``rcingest scan-diff``: try the secret rules on a local diff, without Bitbucket.

Uses the scanners of ``--config FILE`` (its ``scanners:`` and ``scanning:``)
or, without one, the built-in ``secrets`` scanner. Prints the findings,
redacted as everywhere else (table or JSON), and exits 1 when there are any,
0 when none, 2 on bad input (not a diff, too large, a bad pipeline file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from rcingest.cli_common import fail, registry_of
from rcingest.cli_tools import FORMATS, table
from rcingest.errors import ConfigError, RcingestError


@click.command("scan-diff")
@click.argument("diff", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Take its scanners.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def scan_diff(ctx: click.Context, diff: str, config_path: str | None, fmt: str) -> None:
    """Scan a unified git diff (a file, or - for stdin) for secrets; exit 1 when any.

    \b
    Examples:
      git diff main... | rcingest scan-diff -
      rcingest scan-diff change.diff --config config/pr-security.example.yaml --format json
    """
    import asyncio

    from rcingest.scanning.diff import DiffError, parse_diff

    scanners, settings, secrets = _scanners(ctx, config_path)
    raw = sys.stdin.buffer.read() if diff == "-" else _read(Path(diff))
    try:
        files = parse_diff(raw, max_bytes=settings.max_diff_bytes)
    except DiffError as exc:
        fail(ConfigError(f"{diff}: {exc}"), secrets)

    async def run_all() -> list[Any]:
        found: list[Any] = []
        for scanner in scanners:
            found += [(scanner, f) for f in await scanner.scan(files)]
        return found

    try:
        pairs = asyncio.run(run_all())
    except RcingestError as exc:
        fail(exc, secrets)
    findings = [f for s, f in pairs if not s.allowed(f)]
    allowed = len(pairs) - len(findings)
    findings.sort(key=lambda f: (f.path, f.line_start, f.rule_id))
    if fmt == "json":
        import msgspec

        out = {"findings": msgspec.to_builtins(findings), "allowed": allowed}
        click.echo(json.dumps(out, indent=2))
    elif findings:
        rows = [
            (f"{f.path}:{f.line_start}", f.rule_id, f.severity, f.excerpt, f.fingerprint[:12])
            for f in findings
        ]
        click.echo(table(("WHERE", "RULE", "SEVERITY", "EXCERPT", "FINGERPRINT"), rows), nl=False)
    if fmt != "json":
        note = f" ({allowed} allowed)" if allowed else ""
        click.echo(f"{len(findings)} possible secret(s) in {len(files)} file(s){note}", err=True)
    sys.exit(1 if findings else 0)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror}") from None


def _scanners(ctx: click.Context, config_path: str | None) -> tuple[list[Any], Any, frozenset[str]]:
    """The scanners built as a run builds them, their ``scanning:`` settings, the secrets."""
    from rcingest.config import load_pipeline
    from rcingest.default_plugins.scanners import SecretsConfig, SecretsScanner
    from rcingest.runtime import make_context
    from rcingest.scanning.settings import ScanningConfig

    if config_path is None:
        from datetime import UTC, datetime
        from zoneinfo import ZoneInfo

        from rcingest.interfaces import RunContext

        context = RunContext(
            run_id="scan-diff",
            pipeline_name="scan-diff",
            timezone=ZoneInfo("UTC"),
            started_at=datetime.now(UTC),
            base_dir=Path.cwd(),
        )
        context.scanning = ScanningConfig()
        _throwaway_key_unless_one_exists(context)
        scanner = SecretsScanner(SecretsConfig(), context)
        scanner.name = "secrets"
        return [scanner], context.scanning, frozenset()
    try:
        loaded = load_pipeline(Path(config_path), registry_of(ctx))
    except RcingestError as exc:
        fail(exc)
    if not loaded.scanners:
        fail(ConfigError(f"{config_path}: $.scanners: no scanner in this pipeline"))
    context = make_context(loaded)
    context.scanning = loaded.config.scanning
    _throwaway_key_unless_one_exists(context)
    built = []
    for component in loaded.scanners:
        try:
            scanner = component.registered.component(component.config, context)
        except RcingestError as exc:
            fail(exc, loaded.secrets)
        scanner.name = component.label
        built.append(scanner)
    return built, loaded.config.scanning, loaded.secrets


def _throwaway_key_unless_one_exists(context: Any) -> None:
    """No key configured and no key file yet: a throwaway key, so trying rules makes no file.

    With a configured key or an existing key file, fingerprints match the
    database's and the allowlist's (the scanner loads it as a run does).
    """
    import secrets as random

    settings = context.scanning
    if not settings.fingerprint_key and not Path(settings.key_file).is_file():
        context.fingerprint_key = random.token_bytes(32)
