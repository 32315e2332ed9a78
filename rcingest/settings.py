"""The runbook's settings file: ``bitbucket.workspace``, ``repositories``, ``credentials``...

The runbook rcingest replaces configures a scan with a settings file of its
own shape instead of a pipeline (``source``/``enrichers``/``sinks``). Such a
file is recognised by a top-level ``bitbucket:`` and no ``source:``, checked
against the Structs below (every problem with its ``$.bitbucket...`` path),
then translated into the standard pipeline: the REST source (or, under
``rcingest serve``, the webhook source), the story-key enricher, the database
sink and the JSON artifact sink. Problems the pipeline's own validation finds
later are moved back to the settings path they came from (``relocate``), so a
user never sees a path of a file they did not write.

Pure apart from ``has_webhook``: no I/O, no environment (``${VAR}`` is
interpolated before this runs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from rcingest.errors import ConfigError
from rcingest.logconfig import LoggingConfig
from rcingest.validation import errors_for
from rcingest.yaml_file import read_yaml

__all__ = [
    "DEFAULT_LOG_FILE",
    "SettingsFile",
    "has_webhook",
    "is_settings",
    "translate",
]

Mode = Literal["run", "serve"]
#: The runbook's log folder: ``temp_data/bitbucket/``.
DEFAULT_LOG_FILE = "temp_data/bitbucket/rcingest.log"
DEFAULT_DATABASE = "data/bitbucket/commits.db"
DEFAULT_ARTIFACTS = "artifacts/issues/wave3/bitbucket"
#: The scan window when neither the file nor ``--hours``/``--since`` gives one.
DEFAULT_HOURS = 4.0


class Credentials(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``bitbucket.credentials``: one way to authenticate, from the environment.

    An empty value (``${BITBUCKET_API_TOKEN:-}`` with the variable unset)
    counts as not set; nothing set means anonymous access (60 requests/hour).
    """

    #: Atlassian account e-mail, with ``api_token`` (Basic auth).
    email: str | None = None
    #: Atlassian API token with Bitbucket read scopes.
    api_token: str | None = None
    #: Repository, project or workspace access token (Bearer).
    access_token: str | None = None
    #: OAuth 2.0 access token (Bearer, like an access token).
    oauth_token: str | None = None
    #: Legacy: Bitbucket username, with ``app_password``.
    username: str | None = None
    #: Legacy: app password. Atlassian retired app passwords; read with a warning.
    app_password: str | None = None


class BitbucketSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``bitbucket:``: what to scan and how to reach it."""

    workspace: str
    #: Repository slugs; omitted = every repository of the workspace.
    repositories: list[str] | None = None
    #: Branches scanned in each repository; omitted = its main branch.
    default_branches: list[str] | None = None
    credentials: Credentials = msgspec.field(default_factory=Credentials)
    #: The API root: another host, such as the fake Bitbucket or a proxy.
    base_url: str = "https://api.bitbucket.org/2.0"
    #: Any other option of the ``bitbucket_rest`` source (``hours``, ``concurrency``,
    #: ``pull_requests``...); see docs/bitbucket-rest.md. Default window: 4 hours.
    scan: dict[str, Any] = {}


class ArtifactSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``artifacts:``: the run's JSON artifact."""

    enabled: bool = True
    dir: str = DEFAULT_ARTIFACTS
    #: False writes counts only (``payload: []``).
    include_payload: bool = True


class SettingsFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A settings file: the runbook's ``config/settings.yaml``."""

    bitbucket: BitbucketSettings
    name: str = "bitbucket"
    #: IANA zone of windows, artifacts and log stamps.
    timezone: str = "America/Phoenix"
    #: A SQLite path or ``postgresql://`` URL, or a mapping with ``url`` and the
    #: ``database`` sink's other options (``synchronous``, ``busy_timeout_ms``).
    database: str | dict[str, Any] = DEFAULT_DATABASE
    artifacts: ArtifactSettings = msgspec.field(default_factory=ArtifactSettings)
    #: Log file and format; default a rotated file under ``temp_data/bitbucket/``.
    logging: LoggingConfig = msgspec.field(
        default_factory=lambda: LoggingConfig(file=DEFAULT_LOG_FILE)
    )
    #: ``rcingest serve`` only: the webhook daemon's options (``secret``, ``port``...).
    webhook: dict[str, Any] | None = None
    #: Options of the ``story_keys`` enricher (``mode``, ``projects``, ``ignore``).
    story_keys: dict[str, Any] = {}
    summary_interval: Annotated[float, msgspec.Meta(gt=0)] = 60.0


def has_webhook(path: Path) -> bool:
    """True when ``path`` is a settings file with a ``webhook:`` section (``rcingest serve``)."""
    try:
        data = read_yaml(path)
    except ConfigError:
        return False
    return is_settings(data) and data.get("webhook") is not None


def is_settings(data: Any) -> bool:
    """A settings file has ``bitbucket:`` at the top and no ``source:`` (a pipeline's)."""
    return isinstance(data, dict) and "bitbucket" in data and "source" not in data


def _auth(credentials: Credentials) -> dict[str, Any]:
    given = {k: v for k, v in msgspec.structs.asdict(credentials).items() if v not in (None, "")}
    if "oauth_token" in given:
        given["access_token"] = given.pop("oauth_token")
    return given


def translate(
    data: dict[str, Any], mode: Mode
) -> tuple[dict[str, Any], Callable[[str], str], list[str]]:
    """The pipeline mapping of a settings mapping, the path relocation, and its problems.

    When the settings themselves have problems they are returned with an
    empty mapping: validating a translation of a broken file would only
    report the same mistakes again under stranger names.
    """
    found = errors_for(data, SettingsFile, "$")
    if found:
        return {}, _identity, found
    settings = msgspec.convert(data, SettingsFile)
    found = []
    bb = settings.bitbucket
    moves: list[tuple[str, str]] = []
    auth = _auth(bb.credentials)
    if bb.credentials.oauth_token:
        moves.append(("$.source.config.auth.access_token", "$.bitbucket.credentials.oauth_token"))
    moves.append(("$.source.config.auth", "$.bitbucket.credentials"))
    for key in ("workspace", "repositories", "default_branches", "base_url"):
        moves.append((f"$.source.config.{key}", f"$.bitbucket.{key}"))

    if mode == "serve":
        if settings.webhook is None:
            found.append(
                "$.webhook: rcingest serve needs a webhook section (secret, host, port) "
                "in a settings file"
            )
        # The runbook's receivers check the X-Webhook-Secret header.
        hook = {"accept_secret_header": True, **(settings.webhook or {})}
        source: dict[str, Any] = {
            "type": "bitbucket_webhook",
            "config": {**hook, "base_url": bb.base_url},
        }
        moves.append(("$.source.config", "$.webhook"))
    else:
        scan = dict(bb.scan)
        if not {"hours", "since"} & scan.keys():
            scan["hours"] = DEFAULT_HOURS
        config = {
            **scan,
            "workspace": bb.workspace,
            "repositories": bb.repositories,
            "default_branches": bb.default_branches,
            "base_url": bb.base_url,
        }
        source = {"type": "bitbucket_rest", "config": config}
        moves.append(("$.source.config", "$.bitbucket.scan"))
    if auth:
        source["config"]["auth"] = auth
    for where in ("$.source.type", "$.source"):
        moves.append((where, "$.bitbucket" if mode == "run" else "$.webhook"))

    if isinstance(settings.database, str):
        database: dict[str, Any] = {"database": settings.database}
        moves.append(("$.sinks[0].config.database", "$.database"))
    else:
        database = dict(settings.database)
        if "url" in database:
            database["database"] = database.pop("url")
        moves.append(("$.sinks[0].config.database", "$.database.url"))
    moves.append(("$.sinks[0].config", "$.database"))
    sinks: list[dict[str, Any]] = [{"type": "database", "config": database}]
    if settings.artifacts.enabled:
        artifacts = {
            "artifacts_dir": settings.artifacts.dir,
            "include_payload": settings.artifacts.include_payload,
        }
        sinks.append({"type": "json_artifact", "config": artifacts})
        moves.append(("$.sinks[1].config.artifacts_dir", "$.artifacts.dir"))
        moves.append(("$.sinks[1].config", "$.artifacts"))
    moves.append(("$.enrichers[0].config", "$.story_keys"))

    pipeline = {
        "name": f"{settings.name}-{'webhook' if mode == 'serve' else 'scan'}",
        "timezone": settings.timezone,
        "summary_interval": settings.summary_interval,
        "logging": msgspec.to_builtins(settings.logging),
        "source": source,
        "enrichers": [{"type": "story_keys", "config": dict(settings.story_keys)}],
        "sinks": sinks,
    }
    return pipeline, _relocator(moves), found


def _identity(problem: str) -> str:
    return problem


_PATH = re.compile(r"^(\$[^\s:]*)(:?.*)$", re.DOTALL)


def _relocator(moves: list[tuple[str, str]]) -> Callable[[str], str]:
    """Rewrite the leading ``$.pipeline.path`` of a problem to the settings path it came from.

    The longest matching prefix wins, so ``auth.access_token`` (from an
    ``oauth_token``) is named before ``auth`` in general.
    """
    ordered = sorted(moves, key=lambda m: len(m[0]), reverse=True)

    def relocate(problem: str) -> str:
        match = _PATH.match(problem)
        if match is None:
            return problem
        path, rest = match.groups()
        for old, new in ordered:
            if path == old or path.startswith((f"{old}.", f"{old}[")):
                return new + path[len(old) :] + rest
        return problem

    return relocate
