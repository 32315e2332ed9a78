"""From records to outbox rows: what has to change in Chariot, decided against the state file.

Runs inside ``write()``'s transaction and sends nothing. For each record it
computes the requests Chariot should have seen (``mapping``) and queues only
those that differ from what Chariot last accepted (``sent``) or from what is
already queued (``outbox``): a replayed batch or an unchanged second sync
queues nothing. Keeping things alive within Chariot's TTL is the sweep's job
(``sender.py``), not this one's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from rcingest.interfaces import Stats
from rcingest.records import Repository, RepositoryScan
from rcingest_chariot import mapping
from rcingest_chariot.mapping import FilteredStatus, Mask
from rcingest_chariot.state import Change, RepoRow, StateDB

__all__ = ["Planner"]

#: Scan states that say what the main branch holds; the others say nothing about risks.
CONCLUSIVE = ("findings", "clean")
ROLLUP_ATTRIBUTES = ("risk_max_severity", "risk_open_count")


class Planner:
    """Queues the changes one record calls for (call it inside a state transaction)."""

    def __init__(
        self,
        state: StateDB,
        *,
        web_base: str,
        filtered_status: FilteredStatus,
        risk_source: str,
        mask: Mask,
        clock: Callable[[], float],
        stats: Stats,
        logger: logging.Logger,
    ) -> None:
        self.state = state
        self.web_base = web_base
        self.filtered_status: FilteredStatus = filtered_status
        self.risk_source = risk_source
        self.mask = mask
        self.clock = clock
        self.stats = stats
        self.logger = logger

    # -- repositories ---------------------------------------------------------

    def repository(self, repo: Repository) -> None:
        group = mapping.repository_group(repo, self.web_base)
        key = mapping.asset_key(group)
        status = mapping.asset_status(repo, self.filtered_status)
        known = self.state.repo(repo.full_name)
        scanned = known is not None and known.scanned
        if status is None:
            # Filtered with filtered_status: keep: Chariot is left as it is, and no
            # longer kept alive by this sink either.
            self.state.retire_repository(repo.full_name, include_asset=True)
            self.stats.incr("chariot.left_alone")
        else:
            body = mapping.asset_body(group, status)
            self._offer(self._change(key, key, "asset", "/asset", body, repo.full_name, "", status))
            if status == "A":
                summary = None
                if scanned:
                    summary = mapping.rollup(self.state.open_risks(repo.full_name).values())
                for name, value in mapping.attribute_values(repo, summary).items():
                    self._attribute(repo.full_name, key, name, value)
            else:
                self.state.retire_repository(repo.full_name, include_asset=False)
        self.state.put_repo(
            RepoRow(
                repository=repo.full_name,
                asset_key=key,
                group=group,
                status=status or "keep",
                scanned=scanned,
            )
        )

    # -- scans ----------------------------------------------------------------

    def scan(self, scan: RepositoryScan) -> None:
        if scan.state not in CONCLUSIVE:
            self.stats.incr("chariot.scans_inconclusive")
            return
        known = self.state.repo(scan.repository)
        if known is None:
            # A scan that concluded proves the repository exists; its listing has not
            # been seen by this sink (another pipeline, a lost state file).
            group = mapping.fallback_group(scan.repository, self.web_base)
            key = mapping.asset_key(group)
            body = mapping.asset_body(group, "A")
            self._offer(self._change(key, key, "asset", "/asset", body, scan.repository, "", "A"))
            known = RepoRow(
                repository=scan.repository, asset_key=key, group=group, status="A", scanned=False
            )
        elif known.status != "A":
            # Deleted, frozen or left alone: its risks are not this sink's to change.
            self.stats.incr("chariot.scans_ignored")
            return
        before = self.state.open_risks(scan.repository)
        now_open: dict[str, str] = {}
        ordered = sorted(scan.findings, key=lambda f: (f.path, f.line_start, f.rule_id))
        for finding in ordered:
            name = mapping.risk_name(finding.rule_id, finding.fingerprint)
            rkey = mapping.risk_key(known.group, name)
            if rkey in now_open:
                continue  # the same secret twice: one risk, the first place it is at
            lines = str(finding.line_start)
            if finding.line_end != finding.line_start:
                lines += f"-{finding.line_end}"
            body = mapping.risk_open_body(
                known.asset_key,
                name,
                severity=finding.severity,
                rule_name=finding.rule_name,
                rule_id=finding.rule_id,
                scanner=finding.scanner,
                repository=scan.repository,
                branch=scan.branch,
                location=f"{finding.path}:{lines}",
                excerpt=finding.excerpt,
                source=self.risk_source,
                mask=self.mask,
            )
            self._offer(
                self._change(rkey, rkey, "risk", "/risk", body, scan.repository, known.asset_key)
            )
            now_open[rkey] = finding.severity
        for rkey, severity in sorted(before.items()):
            if rkey not in now_open:
                body = mapping.risk_remediated_body(rkey, severity, scan.branch, scan.head)
                self._offer(
                    self._change(
                        rkey, rkey, "risk", "/risk", body, scan.repository, known.asset_key, "R"
                    )
                )
        self.state.set_open_risks(scan.repository, now_open)
        summary = mapping.rollup(now_open.values())
        values = {
            "risk_max_severity": summary.max_severity,
            "risk_open_count": str(summary.open_count),
        }
        for name in ROLLUP_ATTRIBUTES:
            self._attribute(scan.repository, known.asset_key, name, values[name])
        self.state.put_repo(msgspec.structs.replace(known, scanned=True))

    # -- helpers --------------------------------------------------------------

    def _change(
        self,
        slot: str,
        key: str,
        kind: str,
        path: str,
        body: dict[str, object],
        repository: str,
        parent: str,
        status: str = "",
    ) -> Change:
        method = "DELETE" if kind == "delete" else "PUT"
        # Deleted assets, remediated risks and deletes are not re-sent by the TTL sweep.
        live = kind in ("asset", "attribute", "risk") and status not in ("D", "R")
        return Change(
            slot=slot,
            key=key,
            kind=kind,
            method=method,
            path=path,
            body=body,
            hash=mapping.body_hash(method, path, body),
            repository=repository,
            parent=parent,
            live=live,
        )

    def _attribute(self, repository: str, source: str, name: str, value: str | None) -> None:
        """Queue attribute ``name`` of ``source`` at ``value``; a changed value deletes the old."""
        slot = f"attribute:{name}:{source}"
        sent = self.state.sent(slot)
        if value is None:
            self.state.drop_pending(slot)
        else:
            key, value = mapping.attribute_key(source, name, self.mask(value))
            body: dict[str, object] = {"key": source, "name": name, "value": value}
            self._offer(
                self._change(slot, key, "attribute", "/attribute", body, repository, source)
            )
            # A delete queued for this very key (the value came back) must not run.
            self.state.drop_pending(f"delete:{key}")
        if sent is not None and (value is None or sent.change.key != key):
            old = sent.change.key
            delete = self._change(
                f"delete:{old}", old, "delete", "/attribute", {"key": old}, repository, source
            )
            self._offer(delete)

    def _offer(self, change: Change) -> None:
        """Queue ``change`` unless Chariot has it already or it is queued as it is."""
        pending = self.state.pending(change.slot)
        if pending is not None and pending.change.hash == change.hash:
            self.stats.incr("chariot.skipped")
            return
        sent = self.state.sent(change.slot)
        if (
            sent is not None
            and sent.change.hash == change.hash
            and (sent.change.live or not change.live)
        ):
            if pending is not None:
                self.state.drop_pending(change.slot)  # changed, then changed back
            self.stats.incr("chariot.skipped")
            return
        self.state.enqueue(change, self.clock())
        self.stats.incr("chariot.queued")
