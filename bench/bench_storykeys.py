"""Story-key extraction speed on one core.

    python bench/bench_storykeys.py [--messages 200000]

Builds a bounded corpus of realistic commit messages (a third without any
hyphen, a third with a key, the rest with look-alikes such as UTF-8 or
SHA-256 and hyphenated words), then times, on this one thread:

* ``KeyExtractor.find`` over every message (strict and lenient);
* the full ``story_keys`` enricher over ``Commit`` records (message, one
  branch, no pull request), which is what a pipeline pays per commit.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from rcingest.default_plugins.story_keys import StoryKeysConfig, StoryKeysEnricher
from rcingest.interfaces import RunContext
from rcingest.records import Commit
from rcingest.storykeys import KeyExtractor

TEMPLATES = [
    "Fix typo in README",
    "Merge branch 'master' into develop",
    "Bump version to 2.3.1",
    "REL-{n} add login throttling",
    "[OPS-{n}] rotate credentials on deploy\n\nAlso tidy the Helm chart.",
    "JENKINS-{n} Make the build pass on Windows (follow-up to JENKINS-{m})",
    "Convert files to UTF-8 and hash with SHA-256",
    "Parse ISO-8601 timestamps in the importer; see CVE-2021-44228",
    "Refactor the non-blocking read-through cache for x86-64 builds",
    "Update dependencies",
    "feature/REL-{n}-login: wire the form",
    'Revert "Add retry"\n\nThis reverts commit 0a1b2c3d.',
]


def corpus(n: int) -> list[str]:
    rng = random.Random(5)
    return [
        rng.choice(TEMPLATES).format(n=rng.randint(1, 9999), m=rng.randint(1, 9999))
        for _ in range(n)
    ]


def rate(label: str, n: int, seconds: float) -> None:
    print(f"{label:44s} {seconds:7.3f} s  {n / seconds:12,.0f} messages/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    n = min(args.messages, 2_000_000)  # bounded
    messages = corpus(n)
    for mode in ("strict", "lenient"):
        extractor = KeyExtractor(mode)  # type: ignore[arg-type]
        find = extractor.find
        started = time.perf_counter()
        found = 0
        for text in messages:
            found += len(find(text))
        rate(f"KeyExtractor.find ({mode}), {found} keys", n, time.perf_counter() - started)
    ctx = RunContext(
        run_id="bench",
        pipeline_name="bench",
        timezone=ZoneInfo("America/Phoenix"),
        started_at=datetime.now(UTC),
        base_dir=Path("."),
    )
    enricher = StoryKeysEnricher(StoryKeysConfig(), ctx)
    date = datetime(2026, 11, 1, tzinfo=UTC)
    commits = [
        Commit(hash=f"{i:040x}", repository="acme/api", date=date, message=m, branches=["main"])
        for i, m in enumerate(messages)
    ]
    started = time.perf_counter()
    for commit in commits:
        enricher.enrich(commit)
    rate("story_keys enricher on Commit records", n, time.perf_counter() - started)


if __name__ == "__main__":
    main()
