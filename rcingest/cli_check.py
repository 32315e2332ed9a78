"""``rcingest check``: evaluate pull requests against the pipeline's policy, now, read-only.

For CI and for people: one pull request (``--repo WS/REPO --pr N``) or every
open one of ``compliance.repositories`` (``--all-open``), each rule's
outcome printed (table or ``--json``). Exit 0 when every evaluated pull
request is compliant, 1 when a required rule fails (or a pull request is
gone), 2 on bad usage or a bad pipeline file. Nothing is written: reporting
back on the pull request is the daemon's (``rcingest serve``) or
``rcingest run``'s job.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from rcingest.cli_common import fail, registry_of
from rcingest.errors import ConfigError, RcingestError

__all__ = ["check"]


@click.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Pipeline file with a compliance: section.",
)
@click.option("--repo", "repository", help="workspace/slug of the pull request.")
@click.option("--pr", "pr_id", type=click.IntRange(min=1), help="The pull request's id.")
@click.option(
    "--all-open", is_flag=True, help="Every open pull request of compliance.repositories."
)
@click.option("--json", "as_json", is_flag=True, help="Print the evaluations as JSON.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=16,
    show_default=True,
    help="Pull requests evaluated at once (--all-open).",
)
@click.pass_context
def check(
    ctx: click.Context,
    config_path: str,
    repository: str | None,
    pr_id: int | None,
    all_open: bool,
    as_json: bool,
    concurrency: int,
) -> None:
    """Evaluate pull requests against the policy; exit 1 when one is not compliant.

    \b
    Examples:
      rcingest check --config config/compliance.example.yaml --repo acme/api --pr 42
      rcingest check --config config/compliance.example.yaml --all-open --json
    """
    import asyncio

    if all_open == bool(repository or pr_id):
        raise click.UsageError("give either --repo and --pr, or --all-open")
    if not all_open and not (repository and pr_id):
        raise click.UsageError("--repo and --pr go together")
    loaded, client_config = _load(ctx, Path(config_path))
    repositories = list(getattr(loaded.config.compliance, "repositories", []))
    if all_open and not repositories:
        fail(ConfigError(f"{config_path}: $.compliance.repositories: empty; --all-open needs it"))
    try:
        evaluations = asyncio.run(
            _evaluate(loaded, client_config, repository, pr_id, repositories, concurrency)
        )
    except RcingestError as exc:
        fail(exc, loaded.secrets)
    _print(evaluations, as_json, loaded.secrets)
    bad = [e for e in evaluations if e.verdict != "compliant"]
    sys.exit(1 if bad else 0)


def _load(ctx: click.Context, path: Path) -> tuple[Any, Any]:
    """The pipeline (which must have a policy) and the REST client settings of its source."""
    from rcingest.bitbucket.config import client_settings
    from rcingest.config import load_pipeline

    try:
        loaded = load_pipeline(path, registry_of(ctx), mode="serve")
    except RcingestError as exc:
        fail(exc)
    if loaded.policy is None:
        fail(ConfigError(f"{path}: $.compliance: missing; this pipeline has no policy"))
    source = loaded.source.config
    if not hasattr(source, "base_url") or not hasattr(source, "auth"):
        fail(ConfigError(f"{path}: $.source: {loaded.source.label} has no Bitbucket credentials"))
    return loaded, client_settings(source)


async def _evaluate(
    loaded: Any,
    client_config: Any,
    repository: str | None,
    pr_id: int | None,
    repositories: list[str],
    concurrency: int,
) -> list[Any]:
    import asyncio
    import logging

    from rcingest.bitbucket.client import BitbucketClient
    from rcingest.compliance.gather import Gatherer
    from rcingest.config import story_key_defaults
    from rcingest.interfaces import Stats
    from rcingest.runtime import make_context

    context = make_context(loaded)
    key = str(getattr(loaded.config.compliance, "status_key", "rcingest-compliance"))
    story = story_key_defaults(loaded)
    logger = logging.getLogger("rcingest.check")
    async with BitbucketClient(client_config, Stats(), logger, secrets=context.secrets) as client:
        gatherer = Gatherer(client, loaded.policy, frozenset({key}), story, resolve_head=False)
        if repository is not None and pr_id is not None:
            return [await gatherer.evaluation(repository, pr_id, trigger="check")]
        targets = [(r, n) for r in repositories for n in await gatherer.open_pull_requests(r)]
        limit = asyncio.Semaphore(concurrency)

        async def one(target: tuple[str, int]) -> Any:
            async with limit:
                return await gatherer.evaluation(*target, trigger="check")

        results = list(await asyncio.gather(*(one(t) for t in targets)))
        click.echo(
            f"{len(results)} pull request(s), {gatherer.requests} request(s)"
            f" ({gatherer.requests / max(len(results), 1):.2f} per pull request)",
            err=True,
        )
        return results


def _print(evaluations: list[Any], as_json: bool, secrets: frozenset[str]) -> None:
    import msgspec

    from rcingest.runtime import redact

    if as_json:
        text = json.dumps(msgspec.to_builtins(evaluations), indent=2, ensure_ascii=False)
        click.echo(redact(text, secrets))
        return
    from rcingest.cli_tools import table

    for ev in evaluations:
        verdict = ev.verdict.replace("_", " ").upper()
        head = ev.head[:12] or "-"
        click.echo(f"{ev.repository} PR #{ev.pull_request_id} at {head}: {verdict}")
        if ev.verdict == "not_found":
            click.echo(f"  {ev.reason}")
            continue
        rows = [
            (o.rule_id, o.level, o.outcome.upper(), o.message, o.fix or "")
            for o in ev.outcomes
            if o.outcome != "not_applicable"
        ]
        shown = table(("RULE", "LEVEL", "RESULT", "WHAT", "HOW TO FIX"), rows)
        click.echo(redact(shown, secrets), nl=False)
        click.echo(f"policy {ev.policy_name} {ev.policy_hash[:19]}\n")
