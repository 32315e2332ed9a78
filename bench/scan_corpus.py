"""A seeded generator of realistic unified git diffs with labelled planted secrets (issue 12).

The corpus mixes what pull requests really carry: source code edits (hunks
with context, removed and added lines), new lockfiles full of
``integrity: sha512-...`` lines, minified JavaScript bundles (lines of tens
of kilobytes), base64 blobs (wrapped and as one data URI line), config files,
renames, deleted files and binary files. Into it go:

* planted secrets of every shipped rule kind, each a fresh random value of
  the rule's shape, on added lines: ``Corpus.planted`` says which rule, path
  and new-file line (a scanner must find every one);
* the same kinds on removed lines (``Corpus.removed``): already in history,
  not this change's doing, never a finding;
* look-alikes on added lines (``Corpus.lookalikes``): documented example keys,
  ``ghp_xxxx...`` placeholders, hashes, UUIDs, ``${VAR}`` references,
  ``changeme``: never a finding.

Same seed, same bytes. The values are generated, not real credentials;
callers still print them redacted.
"""

from __future__ import annotations

import base64
import hashlib
import random
import string
import uuid
from collections.abc import Callable

import msgspec

__all__ = ["KINDS", "Corpus", "Label", "generate"]

UPPER27 = string.ascii_uppercase + "234567"
ALNUM = string.ascii_letters + string.digits
HEXUP = "0123456789ABCDEF"
B64 = string.ascii_letters + string.digits + "+/"


class Label(msgspec.Struct, frozen=True):
    """One planted value: where it sits in the new (or, for removed lines, old) file."""

    path: str
    line: int
    rule_id: str  # the rule that must (planted) or must not (removed, look-alike) report it
    value: str


class Corpus(msgspec.Struct):
    diff: bytes
    planted: list[Label]
    removed: list[Label]
    lookalikes: list[Label]
    files: int


def _s(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choices(alphabet, k=n))


# Per rule id: a secret generator and the line it is written on.
Gen = Callable[[random.Random], tuple[str, str]]


def _aws_id(rng: random.Random) -> tuple[str, str]:
    v = rng.choice(["AKIA", "ASIA"]) + _s(rng, UPPER27, 16)
    return v, f"aws_access_key_id = {v}"


def _aws_secret(rng: random.Random) -> tuple[str, str]:
    v = _s(rng, ALNUM + "/+", 40)
    return v, f'AWS_SECRET_ACCESS_KEY="{v}"'


def _github(rng: random.Random) -> tuple[str, str]:
    v = rng.choice(["ghp", "gho", "ghu", "ghs", "ghr"]) + "_" + _s(rng, ALNUM, 36)
    return v, f"GITHUB_TOKEN={v}"


def _github_pat(rng: random.Random) -> tuple[str, str]:
    v = "github_pat_" + _s(rng, ALNUM, 22) + "_" + _s(rng, ALNUM, 59)
    return v, f"    token: {v}"


def _gitlab(rng: random.Random) -> tuple[str, str]:
    # GitLab's alphabet includes "-" and "_", at the end too; a quarter of the
    # tokens end in "-" so that the edge is always in the corpus, not by chance.
    last = "-" if rng.random() < 0.25 else rng.choice(ALNUM + "_")
    v = "glpat-" + _s(rng, ALNUM + "_-", 19) + last
    return v, f"GITLAB_TOKEN={v}"


def _slack(rng: random.Random) -> tuple[str, str]:
    v = f"xox{rng.choice('bp')}-{_s(rng, string.digits, 12)}-{_s(rng, string.digits, 13)}-"
    v += _s(rng, ALNUM, 24)
    return v, f"SLACK_BOT_TOKEN={v}"


def _slack_hook(rng: random.Random) -> tuple[str, str]:
    az = string.ascii_uppercase + string.digits
    path = f"T{_s(rng, az, 10)}/B{_s(rng, az, 10)}/{_s(rng, ALNUM, 24)}"
    v = f"https://hooks.slack.com/services/{path}"
    return v, f"  webhook_url: {v}"


def _stripe(rng: random.Random) -> tuple[str, str]:
    v = rng.choice(["sk", "rk"]) + "_live_" + _s(rng, ALNUM, rng.randint(24, 99))
    return v, f"STRIPE_KEY={v}"


def _atlassian(rng: random.Random) -> tuple[str, str]:
    v = "ATATT3xFfGF0" + _s(rng, ALNUM + "_-", 180) + "=" + _s(rng, HEXUP, 8)
    return v, f"JIRA_API_TOKEN={v}"


def _bitbucket(rng: random.Random) -> tuple[str, str]:
    v = "ATBB" + _s(rng, ALNUM, 32)
    return v, f"BITBUCKET_APP_PASSWORD={v}"


def _atlassian_access(rng: random.Random) -> tuple[str, str]:
    v = "ATCTT3xFfGN0" + _s(rng, ALNUM + "_-", 180) + "=" + _s(rng, HEXUP, 8)
    return v, f"BITBUCKET_ACCESS_TOKEN={v}"


def _generic(rng: random.Random) -> tuple[str, str]:
    v = _s(rng, ALNUM + "!#%&*+-./@^_~", 20)
    name = rng.choice(["DB_PASSWORD", "client_secret", "api_key", "auth_token"])
    return v, f'{name} = "{v}"'


KINDS: dict[str, Gen] = {
    "np.aws.1": _aws_id,
    "np.aws.2": _aws_secret,
    "np.github.1": _github,
    "np.github.6": _github_pat,
    "np.gitlab.1": _gitlab,
    "np.slack.2": _slack,
    "np.slack.3": _slack_hook,
    "np.stripe.1": _stripe,
    "np.atlassian.1": _atlassian,
    "np.bitbucket.1": _bitbucket,
    "rc.atlassian.2": _atlassian_access,
    "rc.generic.1": _generic,
}
PEM = "np.pem.1"  # multi-line: planted by _pem_lines
#: Share of the corpus's bytes per kind of file.
SHARES = {
    "source": 0.30, "lockfile": 0.20, "minified": 0.20, "blob": 0.15, "config": 0.08,
    "deleted": 0.05, "rename": 0.015, "binary": 0.005,
}  # fmt: skip


def _pem_lines(rng: random.Random) -> tuple[str, list[str]]:
    kind = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
    body = [_s(rng, B64, 64) for _ in range(rng.randint(4, 25))]
    lines = [f"-----BEGIN {kind}PRIVATE KEY-----", *body, f"-----END {kind}PRIVATE KEY-----"]
    return "\n".join(body) + "\n", lines


def _lookalike_lines(rng: random.Random) -> list[tuple[str, str]]:
    """(rule the look-alike imitates, line): each must give no finding."""
    sha1 = hashlib.sha1(rng.randbytes(16)).hexdigest()  # a look-alike value
    sha256 = hashlib.sha256(rng.randbytes(16)).hexdigest()
    uid = str(uuid.UUID(bytes=rng.randbytes(16), version=4))
    return [
        ("np.aws.1", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE"),
        ("np.aws.2", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ("np.aws.1", "AWS_ACCESS_KEY_ID=AKIAXXXXXXXXXXXXXXXX"),
        ("np.github.1", "GITHUB_TOKEN=ghp_" + "x" * 36),
        ("np.gitlab.1", "GITLAB_TOKEN=glpat-" + "x" * 20),
        ("np.stripe.1", "STRIPE_KEY=sk_live_" + "x" * 24),
        ("np.stripe.1", "STRIPE_KEY=sk_test_" + _s(rng, ALNUM, 24)),
        ("np.bitbucket.1", "BITBUCKET_APP_PASSWORD=ATBB" + "x" * 32),
        ("np.slack.2", "SLACK_BOT_TOKEN=xoxb-your-token-here"),
        (
            "np.slack.3",
            "webhook: https://hooks.slack.com/services/T00000000/B00000000/" + "X" * 24,
        ),
        ("rc.generic.1", f'api_key = "{sha1}"'),
        ("rc.generic.1", f'checksum_token: "{sha256}"'),
        ("rc.generic.1", f'token = "{uid}"'),
        ("rc.generic.1", 'password: "${DB_PASSWORD}"'),
        ("rc.generic.1", "token = '${TOKEN}'"),
        ("rc.generic.1", 'password = "changeme"'),
        ("rc.generic.1", 'secret = "<your-secret-here>"'),
        ("rc.generic.1", 'api_key = os.environ["API_KEY"]'),
        ("rc.generic.1", 'auth_token: "{{ vault_auth_token }}"'),
        ("rc.generic.1", 'password = "aaaaaaaaaaaa"'),
        ("np.pem.1", "-----BEGIN PUBLIC KEY-----"),
    ]


WORDS = (
    "user account order item cache client config handler request response value index "
    "buffer record batch stream event queue session token_count retry limit offset page"
).split()


def _code_line(rng: random.Random) -> str:
    a, b, c = rng.sample(WORDS, 3)
    return rng.choice(
        [
            f"    {a} = self.{b}.get({c!r}, None)",
            f"    if {a} is not None and len({b}) > {rng.randint(1, 999)}:",
            f"        return {a}_{b}({c}, timeout={rng.randint(1, 60)})",
            f"def {a}_{b}({c}: str, *, limit: int = {rng.randint(1, 500)}) -> list[str]:",
            f"    # {a} must be flushed before the {b} is closed, see #{rng.randint(1, 9999)}",
            f"    logger.debug('{a} %s for {b}', {c})",
            f"    {a}.append({{'{b}': {c}, 'n': {rng.randint(0, 10**6)}}})",
            "",
        ]
    )


def _lock_entry(rng: random.Random) -> list[str]:
    name = rng.choice(WORDS).replace("_", "-") + "-" + _s(rng, string.ascii_lowercase, 5)
    ver = f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}"
    digest = base64.b64encode(rng.randbytes(64)).decode()
    return [
        f'    "node_modules/{name}": {{',
        f'      "version": "{ver}",',
        f'      "resolved": "https://registry.npmjs.org/{name}/-/{name}-{ver}.tgz",',
        f'      "integrity": "sha512-{digest}",',
        '      "dev": true',
        "    },",
    ]


def _minified(rng: random.Random, size: int) -> str:
    parts: list[str] = []
    total = 0
    while total < size:
        a, b = rng.choice(WORDS), rng.choice(WORDS)
        v = _s(rng, string.ascii_letters, 2)
        piece = rng.choice(
            [
                f"function {v}(e,t){{return e.{a}?t(e.{b}):null}}",
                f'var {v}={{{a}:"{b}",placeholder:"Password",n:{rng.randint(0, 9999)}}};',
                f"{v}.prototype.{a}=function(){{this.{b}=[]}};",
                f'if(!e.{a})throw new Error("{a} {b} missing");',
                f'{v}.headers.Authorization="Bearer "+e.apiKey;',
            ]
        )
        parts.append(piece)
        total += len(piece)
    return "".join(parts)


class _Builder:
    """Writes one file's diff section, numbering the lines it adds and removes."""

    def __init__(self, out: list[str], path: str, header: list[str]) -> None:
        self.out, self.path = out, path
        self.out.extend(header)

    def hunk(self, old_start: int, new_start: int, lines: list[tuple[str, str]]) -> list[int]:
        """Emit ``lines`` (kind, text); return each line's old (``-``) or new number."""
        old_n = sum(1 for k, _ in lines if k != "+")
        new_n = sum(1 for k, _ in lines if k != "-")
        self.out.append(f"@@ -{old_start},{old_n} +{new_start},{new_n} @@")
        numbers: list[int] = []
        old, new = old_start, new_start
        for kind, text in lines:
            self.out.append(kind + text)
            if kind == "-":
                numbers.append(old)
                old += 1
            elif kind == "+":
                numbers.append(new)
                new += 1
            else:
                numbers.append(new)
                old, new = old + 1, new + 1
        return numbers


def generate(seed: int = 12, target_bytes: int = 4_000_000, per_kind: int = 6) -> Corpus:
    """A diff of about ``target_bytes``, each rule kind planted ``per_kind`` times at least."""
    rng = random.Random(seed)
    out: list[str] = []
    planted: list[Label] = []
    removed: list[Label] = []
    lookalikes: list[Label] = []
    files = 0
    # Deal the planted secrets over the config files (1-3 per file) until
    # every kind is planted per_kind times.
    secret_queue = [k for k in [*KINDS, PEM] for _ in range(per_kind)]
    rng.shuffle(secret_queue)
    # The mix by bytes is fixed (the next file is of the kind furthest below
    # its share), so that throughput compares like with like across seeds and
    # sizes; which file, and everything in it, is random.
    written = dict.fromkeys(SHARES, 0)
    while sum(written.values()) < target_bytes or secret_queue:
        start = len(out)
        files += 1
        kind = min(SHARES, key=lambda k: written[k] / SHARES[k])
        if secret_queue and (kind == "config" or sum(written.values()) >= target_bytes):
            kind = "config"
            _config_file(rng, out, files, secret_queue, planted, removed, lookalikes)
        elif kind == "config":  # every secret dealt: config files without them
            _config_file(rng, out, files, [], planted, removed, lookalikes)
        elif kind == "source":
            _source_file(rng, out, files)
        elif kind == "lockfile":
            _lockfile(rng, out, files)
        elif kind == "minified":
            _minified_file(rng, out, files)
        elif kind == "blob":
            _blob_file(rng, out, files)
        elif kind == "deleted":
            _deleted_file(rng, out, files, removed)
        elif kind == "rename":
            _rename(rng, out, files)
        else:
            out.extend(_binary(files))
        written[kind] += sum(len(line) + 1 for line in out[start:])
    return Corpus(
        diff=("\n".join(out) + "\n").encode(),
        planted=planted,
        removed=removed,
        lookalikes=lookalikes,
        files=files,
    )


def _git_header(path: str, new: bool = False, old: str | None = None) -> list[str]:
    a = old or path
    head = [f"diff --git a/{a} b/{path}"]
    if new:
        head += ["new file mode 100644", "index 0000000..3b18e51", "--- /dev/null"]
    else:
        head += ["index 83db48f..bf269f4 100644", f"--- a/{a}"]
    return [*head, f"+++ b/{path}"]


def _config_file(
    rng: random.Random,
    out: list[str],
    n: int,
    queue: list[str],
    planted: list[Label],
    removed: list[Label],
    lookalikes: list[Label],
) -> None:
    path = f"deploy/env{n}/{rng.choice(['app.env', 'settings.yaml', 'config.ini', 'values.yml'])}"
    b = _Builder(out, path, _git_header(path))
    start = rng.randint(1, 300)
    lines: list[tuple[str, str]] = [(" ", f"# service {n} settings"), (" ", "LOG_LEVEL=info")]
    marks: list[tuple[int, str, str, str]] = []  # index in lines, role, rule, value
    for _ in range(rng.randint(1, 3)):
        if not queue:
            break
        rule = queue.pop()
        if rule == PEM:
            value, pem = _pem_lines(rng)
            marks.append((len(lines) + 1, "planted", rule, value))  # first body line
            lines += [("+", text) for text in pem]
        else:
            value, text = KINDS[rule](rng)
            marks.append((len(lines), "planted", rule, value))
            lines.append(("+", text))
        # A secret is usually one of several settings added together: the
        # line after it is added too (the engine scans such runs as one block).
        lines.append(("+", f"RETRY_COUNT={rng.randint(1, 9)}"))
        old_rule = rng.choice(list(KINDS))
        old_value, old_text = KINDS[old_rule](rng)
        marks.append((len(lines), "removed", old_rule, old_value))
        lines.append(("-", old_text))
        lines.append((" ", f"TIMEOUT_SECONDS={rng.randint(1, 120)}"))
    for rule, text in rng.sample(_lookalike_lines(rng), 4):
        marks.append((len(lines), "lookalike", rule, text))
        lines.append(("+", text))
    lines += [(" ", "FEATURE_FLAGS=search,export"), (" ", "")]
    numbers = b.hunk(start, start, lines)
    target = {"planted": planted, "removed": removed, "lookalike": lookalikes}
    for index, role, rule, value in marks:
        target[role].append(Label(path, numbers[index], rule, value))


def _source_file(rng: random.Random, out: list[str], n: int) -> None:
    path = f"src/pkg{n % 40}/module_{n}.py"
    b = _Builder(out, path, _git_header(path))
    old = new = rng.randint(1, 50)
    for _ in range(rng.randint(1, 6)):
        lines: list[tuple[str, str]] = [(" ", _code_line(rng)) for _ in range(3)]
        lines += [("-", _code_line(rng)) for _ in range(rng.randint(0, 8))]
        lines += [("+", _code_line(rng)) for _ in range(rng.randint(1, 30))]
        lines += [(" ", _code_line(rng)) for _ in range(3)]
        b.hunk(old, new, lines)
        gap = rng.randint(5, 80)  # unchanged lines between hunks: the same on both sides
        old += sum(1 for k, _ in lines if k != "+") + gap
        new += sum(1 for k, _ in lines if k != "-") + gap
    # a file ending without a newline now
    out.append("\\ No newline at end of file")


def _lockfile(rng: random.Random, out: list[str], n: int) -> None:
    path = f"web{n}/package-lock.json"
    b = _Builder(out, path, _git_header(path, new=True))
    lines = [("+", "{"), ("+", '  "lockfileVersion": 3,'), ("+", '  "packages": {')]
    for _ in range(rng.randint(50, 400)):
        lines += [("+", text) for text in _lock_entry(rng)]
    lines += [("+", "  }"), ("+", "}")]
    b.hunk(0, 1, lines)


def _minified_file(rng: random.Random, out: list[str], n: int) -> None:
    path = f"static/js/bundle.{n}.min.js"
    b = _Builder(out, path, _git_header(path, new=True))
    b.hunk(0, 1, [("+", _minified(rng, rng.randint(20_000, 120_000))) for _ in range(3)])


def _blob_file(rng: random.Random, out: list[str], n: int) -> None:
    raw = base64.b64encode(rng.randbytes(rng.randint(4_000, 60_000))).decode()
    if rng.random() < 0.5:
        path = f"assets/fixtures/blob{n}.b64"
        lines = [("+", raw[i : i + 76]) for i in range(0, len(raw), 76)]
    else:
        path = f"assets/img/icon{n}.svg"
        lines = [("+", f'<svg><image href="data:image/png;base64,{raw}"/></svg>')]
    b = _Builder(out, path, _git_header(path, new=True))
    b.hunk(0, 1, lines)


def _deleted_file(rng: random.Random, out: list[str], n: int, removed: list[Label]) -> None:
    path = f"legacy/old_{n}.cfg"
    out += [f"diff --git a/{path} b/{path}", "deleted file mode 100644", "index 9c2a1b3..0000000"]
    b = _Builder(out, path, [f"--- a/{path}", "+++ /dev/null"])
    lines = [("-", _code_line(rng)) for _ in range(rng.randint(3, 40))]
    rule = rng.choice(list(KINDS))
    value, text = KINDS[rule](rng)
    at = rng.randrange(len(lines))
    lines[at] = ("-", text)
    numbers = b.hunk(1, 0, lines)
    removed.append(Label(path, numbers[at], rule, value))


def _rename(rng: random.Random, out: list[str], n: int) -> None:
    old, new = f"lib/util_{n}.py", f"lib/helpers/util_{n}.py"
    out += [f"diff --git a/{old} b/{new}", "similarity index 91%", f"rename from {old}"]
    b = _Builder(out, new, [f"rename to {new}", "index 5d1e2a0..77c09b1 100644"])
    out += [f"--- a/{old}", f"+++ b/{new}"]
    b.hunk(10, 10, [(" ", _code_line(rng)), ("-", _code_line(rng)), ("+", _code_line(rng))])


def _binary(n: int) -> list[str]:
    return [
        f"diff --git a/assets/logo{n}.png b/assets/logo{n}.png",
        "index 1a2b3c4..5d6e7f8 100644",
        f"Binary files a/assets/logo{n}.png and b/assets/logo{n}.png differ",
    ]
