"""The built-in scanners: ``secrets`` (rules in process) and ``sarif`` (any SARIF producer).

``secrets`` runs rcingest's rule engine (``rcingest.scanning.engine``) with
the shipped rules and any rule files named in ``rules``; the rule files are
read when the scanner is built, so ``rcingest validate`` reports a bad rule
with its file and YAML path. Scanning runs in a worker thread: a large diff
never stalls the daemon's event loop (and its acknowledgements).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import msgspec

from rcingest.hookspecs import RegisterScanner, hookimpl
from rcingest.interfaces import ComponentConfig, RunContext, Scanner
from rcingest.scanning.allowlist import Allowlist
from rcingest.scanning.model import DiffFile, Finding

if TYPE_CHECKING:
    from rcingest.scanning.engine import SecretsEngine

__all__ = ["SarifConfig", "SarifScanner", "SecretsConfig", "SecretsScanner"]

#: Allowed fingerprints remembered at most (a daemon runs for months).
_MAX_ALLOWED = 100_000


class SecretsConfig(ComponentConfig):
    """Settings of the ``secrets`` scanner."""

    #: Use the shipped rules (docs/scanning.md lists them).
    builtin: bool = True
    #: More rule files in the Nosey Parker / Titus YAML format (relative to the working directory).
    rules: list[str] = []
    allowlist: Allowlist = msgspec.field(default_factory=Allowlist)


class SecretsScanner(Scanner[SecretsConfig]):
    """Secrets in added lines, by rule, behind keyword prefilters and entropy gates."""

    Config = SecretsConfig

    def __init__(self, config: SecretsConfig, context: RunContext) -> None:
        from rcingest.scanning.rules import load_rules

        super().__init__(config, context)
        self.rules = load_rules(config.rules, builtin=config.builtin)
        self._allowed: set[str] = set()
        self._engine: SecretsEngine | None = None

    def _get_engine(self) -> SecretsEngine:
        from rcingest.scanning.engine import SecretsEngine

        if self._engine is None:
            self._engine = SecretsEngine(self.rules, self.fingerprint_key, self.config.allowlist)
        return self._engine

    async def scan(self, files: Sequence[DiffFile]) -> list[Finding]:
        engine = self._get_engine()
        found, allowed = await asyncio.to_thread(engine.scan, list(files))
        if len(self._allowed) > _MAX_ALLOWED:
            self._allowed.clear()
        self._allowed |= allowed
        name = self.name or "secrets"
        return [msgspec.structs.replace(f, scanner=name) for f in found]

    def allowed(self, finding: Finding) -> bool:
        return finding.fingerprint in self._allowed


class SarifConfig(ComponentConfig):
    """Settings of the ``sarif`` scanner: any tool that writes SARIF 2.1.0."""

    #: The command, without a shell; ``{dir}`` is the folder of added lines to
    #: scan, ``{out}`` the report path (without ``{out}`` the report is read from stdout).
    command: Annotated[list[str], msgspec.Meta(min_length=1)]
    #: Seconds before the tool (and its process group) is killed.
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    #: Exit codes meaning "it ran" (gitleaks exits 1 when it found something).
    ok_codes: list[int] = msgspec.field(default_factory=lambda: [0, 1])
    allowlist: Allowlist = msgspec.field(default_factory=Allowlist)


class SarifScanner(Scanner[SarifConfig]):
    """Runs an external SARIF producer on the added lines; snippets (secrets) are redacted."""

    Config = SarifConfig

    def __init__(self, config: SarifConfig, context: RunContext) -> None:
        super().__init__(config, context)
        self._allowed: set[str] = set()

    async def scan(self, files: Sequence[DiffFile]) -> list[Finding]:
        from rcingest.scanning.allowlist import marker_allows
        from rcingest.scanning.external import run_sarif_scanner

        found = await run_sarif_scanner(
            list(self.config.command),
            list(files),
            key=self.fingerprint_key,
            timeout=self.config.timeout,
            ok_codes=frozenset(self.config.ok_codes),
        )
        lines = {(f.path, a.line): a.text for f in files for a in f.added}
        for finding in found:
            text = lines.get((finding.path, finding.line_start), "")
            if marker_allows(text, finding.rule_id) or self.config.allowlist.allows(
                finding.path, finding.rule_id, finding.fingerprint
            ):
                self._allowed.add(finding.fingerprint)
        return found

    def allowed(self, finding: Finding) -> bool:
        return finding.fingerprint in self._allowed


@hookimpl
def register_scanners(register: RegisterScanner) -> None:
    """Register the built-in scanners."""
    register("secrets", SecretsScanner)
    register("sarif", SarifScanner)
