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
from typing import TYPE_CHECKING

import msgspec

from rcingest.hookspecs import RegisterScanner, hookimpl
from rcingest.interfaces import ComponentConfig, RunContext, Scanner
from rcingest.scanning.allowlist import Allowlist
from rcingest.scanning.model import DiffFile, Finding

if TYPE_CHECKING:
    from rcingest.scanning.engine import SecretsEngine

__all__ = ["SecretsConfig", "SecretsScanner"]

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


@hookimpl
def register_scanners(register: RegisterScanner) -> None:
    """Register the built-in scanners."""
    register("secrets", SecretsScanner)
