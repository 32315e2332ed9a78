"""Secrets scanner benchmark: the built-in engine vs detect-secrets' scan_diff, same corpus.

The corpus is ``scan_corpus.generate`` (seeded: code, lockfiles, minified JS,
base64 blobs, config files, renames, deletions, binaries; planted secrets of
every shipped rule kind on added lines, the same kinds on removed lines, and
look-alikes). The process is pinned to one core. Three timings, each the
median of ``--repeats`` runs over the whole corpus:

* rcingest parse + scan: ``parse_diff(bytes)`` then ``SecretsEngine.scan``;
* rcingest scan only, on the already parsed files;
* detect-secrets 1.5 ``scan_diff(str)`` under ``default_settings()``, every
  result consumed. One filter is turned off: ``is_invalid_file`` drops every
  file that is not on this machine's disk, which for a pull request's diff is
  all of them (detect-secrets would then scan nothing and report nothing).

Then precision and recall against the labels: every planted secret must be
reported by its rule at its line; nothing on a look-alike's line, nothing
for a value that is only on a removed line. Values are printed redacted.

    python bench/bench_scanner.py
    python bench/bench_scanner.py --mb 8 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scan_corpus import Corpus, Label, generate

from rcingest.scanning.diff import parse_diff
from rcingest.scanning.engine import SecretsEngine
from rcingest.scanning.model import Finding, fingerprint
from rcingest.scanning.rules import load_rules

KEY = b"bench-fingerprint-key-0123456789"


def pin_one_core() -> str:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    return f"cpu {cpus[-1]}"


def median_seconds(fn: Callable[[], Any], repeats: int, budget: float) -> tuple[float, int]:
    """Median wall time of ``fn`` over ``repeats`` runs (fewer if ``budget`` seconds run out)."""
    times: list[float] = []
    spent = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if spent > budget:
            break
    return statistics.median(times), len(times)


def detect_secrets_scan(text: str) -> list[Any]:
    from detect_secrets.core.scan import scan_diff
    from detect_secrets.settings import default_settings, get_settings

    with default_settings():
        get_settings().disable_filters("detect_secrets.filters.common.is_invalid_file")
        return list(scan_diff(text))


def shown(value: str) -> str:
    return f"{value[:4]}*** ({len(value)} chars)"


def quality(corpus: Corpus, findings: list[Finding]) -> dict[str, list[str]]:
    """Misses and unexpected findings, each described without the secret."""
    matched: set[int] = set()
    by_place: dict[tuple[str, int], list[Label]] = {}
    for lb in corpus.planted:
        by_place.setdefault((lb.path, lb.line), []).append(lb)
    look = {(lb.path, lb.line): lb for lb in corpus.lookalikes}
    # A removed value reported by its own rule or by the generic one.
    removed_fps = {
        fingerprint(KEY, rule, lb.value)
        for lb in corpus.removed
        for rule in (lb.rule_id, "rc.generic.1")
    }
    out: dict[str, list[str]] = {
        "missed": [],
        "lookalike_hits": [],
        "removed_hits": [],
        "second_rule_on_planted": [],
        "other_hits": [],
    }
    for f in findings:
        hit = None
        for line in range(f.line_start, f.line_end + 1):
            for lb in by_place.get((f.path, line), []):
                if lb.rule_id == f.rule_id:
                    hit = lb
        if hit is not None:
            matched.add(id(hit))
            continue
        where = f"{f.path}:{f.line_start} {f.rule_id} excerpt {f.excerpt!r}"
        if (f.path, f.line_start) in look:
            imitated = look[(f.path, f.line_start)].rule_id
            out["lookalike_hits"].append(f"{where} (look-alike for {imitated})")
        elif f.fingerprint in removed_fps:
            out["removed_hits"].append(where)
        elif any((f.path, ln) in by_place for ln in range(f.line_start, f.line_end + 1)):
            out["second_rule_on_planted"].append(where)
        else:
            out["other_hits"].append(where)
    for lb in corpus.planted:
        if id(lb) not in matched:
            out["missed"].append(f"{lb.path}:{lb.line} {lb.rule_id} {shown(lb.value)}")
    return out


def detect_secrets_quality(corpus: Corpus, results: list[Any]) -> tuple[int, int, int]:
    """detect-secrets, for context: planted lines and look-alike lines it reports (any plugin)."""
    places = {(r.filename, r.line_number) for r in results}
    found = sum(1 for lb in corpus.planted if (lb.path, lb.line) in places)
    look = sum(1 for lb in corpus.lookalikes if (lb.path, lb.line) in places)
    return found, len(corpus.planted), look


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=float, default=4.0, help="corpus size in MB of diff text")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--per-kind", type=int, default=6, help="planted secrets per rule kind")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per measurement")
    args = parser.parse_args()
    core = pin_one_core()
    corpus = generate(args.seed, int(args.mb * 1_000_000), args.per_kind)
    data = corpus.diff
    text = data.decode("utf-8")
    mb = len(data) / 1e6
    lines = data.count(b"\n")
    print(
        f"corpus: {len(data):,} bytes, {lines:,} lines, {corpus.files} files, "
        f"{len(corpus.planted)} planted ({len({lb.rule_id for lb in corpus.planted})} rule kinds), "
        f"{len(corpus.removed)} on removed lines, {len(corpus.lookalikes)} look-alikes; "
        f"one core ({core})"
    )
    engine = SecretsEngine(load_rules(), KEY)
    files = parse_diff(data)
    findings, _allowed = engine.scan(files)

    full, n_full = median_seconds(lambda: engine.scan(parse_diff(data)), args.repeats, args.budget)
    scan, n_scan = median_seconds(lambda: engine.scan(files), args.repeats, args.budget)
    ds_results = detect_secrets_scan(text)  # warm-up: plugin imports
    ds, n_ds = median_seconds(lambda: detect_secrets_scan(text), args.repeats, args.budget)
    rows = [
        ("rcingest parse + scan", full, n_full),
        ("rcingest scan only", scan, n_scan),
        ("detect-secrets scan_diff", ds, n_ds),
    ]
    for name, seconds, n in rows:
        print(f"{name:26} {seconds:8.3f} s  {mb / seconds:7.2f} MB/s  (median of {n})")
    ratio = ds / full
    print(
        f"ratio parse + scan vs detect-secrets: {ratio:.1f}x (target >= 10x: "
        f"{'met' if ratio >= 10 else 'NOT met'}); scan only {ds / scan:.1f}x"
    )
    print(
        f"throughput parse + scan {mb / full:.2f} MB/s (target >= 10 MB/s: "
        f"{'met' if mb / full >= 10 else 'NOT met'})"
    )

    q = quality(corpus, findings)
    found = len(corpus.planted) - len(q["missed"])
    print(
        f"recall on planted added-line secrets: {found}/{len(corpus.planted)} "
        f"= {100 * found / len(corpus.planted):.1f}% (target 100%)"
    )
    print(
        f"findings on look-alikes: {len(q['lookalike_hits'])} (target 0); "
        f"on removed-line values: {len(q['removed_hits'])} (target 0); "
        f"other unexpected: {len(q['other_hits'])}; "
        f"a second rule on a planted secret's line: {len(q['second_rule_on_planted'])}"
    )
    for key, items in q.items():
        for item in items:
            print(f"  {key}: {item}")
    ds_found, ds_total, ds_look = detect_secrets_quality(corpus, ds_results)
    print(
        f"detect-secrets, for context: {ds_found}/{ds_total} planted lines reported, "
        f"{ds_look} look-alike lines reported, {len(ds_results)} results in all"
    )
    ok = not q["missed"] and not q["lookalike_hits"] and not q["removed_hits"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
