"""Every command and snippet of README.md and docs/ runs as written, or names what covers it.

Each fenced block is its own test (``file:line``). Shell blocks run their
``rcingest``/``python`` commands (``pip install`` is checked against the
environment instead of run, ``cd`` and ``export`` apply to what follows);
python blocks run in a subprocess; YAML pipeline files and fragments go
through ``rcingest validate``; SQL blocks must be ready queries (run by
tests/test_docs_queries.py). A block that cannot run here says why in the
line before its fence: ``<!-- snippet: covered-by PATH::TEST -->`` (that test
must exist) or ``<!-- snippet: skip REASON -->`` with one of ``SKIP_REASONS``.
Commands run in a fresh folder holding links to the checkout's top-level
entries, so relative paths read the repository and writes land in the folder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rcingest.yaml_file import read_yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RCINGEST = Path(sys.executable).with_name("rcingest")
TIMEOUT = 120  # seconds per command: a demo or a validate takes about one
SHELL = {"bash", "sh", "shell", "console"}
#: Not checked: diagrams, sample output, shapes (info string empty, text, json
#: samples shortened with "...", toml shown from a file a test compares).
UNCHECKED = {"", "text", "json", "toml"}
#: The only reasons a block may be skipped; anything else must run or be covered.
SKIP_REASONS = (
    "needs real Bitbucket credentials",
    "runs the whole test suite",
    "changes the repository",
    "long-running server",
)
#: The checkout's entries linked into each command's folder (never the outputs).
LINKED = ("config", "docs", "plugins", "schemas", "rcingest", "pyproject.toml", "README.md")
PIPELINE_KEYS = {"name", "timezone", "source", "enrichers", "sinks", "logging", "batch"}
PIPELINE_KEYS |= {"state_file", "summary_interval"}
PIPELINE_KEYS |= {"scanners", "scanning", "compliance", "schedules"}
#: A fragment (``sinks:`` alone, say) is validated inside this pipeline.
FRAGMENT_BASE = {
    "name": "docs-fragment",
    "source": {"type": "bitbucket_rest", "config": {"workspace": "acme", "hours": 4}},
    "sinks": [{"type": "database"}],
}


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    info: str
    body: str
    marker: str | None  # the text of a ``<!-- snippet: ... -->`` just before it

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of one markdown file (indented fences in lists included)."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, start = len(m.group(1)), i
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        body = "\n".join(x[indent:] for x in lines[start + 1 : i]) + "\n"
        before = [x.strip() for x in lines[:start] if x.strip()]
        marker = None
        if before and (mm := re.fullmatch(r"<!-- snippet: (.*?) -->", before[-1])):
            marker = mm.group(1)
        out.append(Block(doc, start + 1, m.group(2), body, marker))
        i += 1
    return out


ALL = [b for doc in DOCS for b in blocks(doc)]


def env() -> dict[str, str]:
    """The environment without anyone's Bitbucket credentials."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("BITBUCKET_", "RCINGEST_"))}
    out["NO_COLOR"] = "1"
    return out


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name in LINKED:
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def check(cmd: list[str], cwd: Path, environ: dict[str, str], where: str) -> None:
    try:
        done = subprocess.run(  # the docs' own commands, bounded
            cmd, cwd=cwd, env=environ, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{where}: {shlex.join(cmd)} did not end within {TIMEOUT}s")
    assert done.returncode == 0, (
        f"{where}: {shlex.join(cmd)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    )


def check_pip(args: list[str], cwd: Path, where: str) -> None:
    """``pip install`` as documented is what this environment has: paths, extras, names."""
    assert args[:1] == ["install"], f"{where}: pip {shlex.join(args)}"
    items = iter(args[1:])
    for arg in items:
        target = next(items) if arg == "-e" else arg
        m = re.fullmatch(r"([^\[]+)(?:\[([\w,-]+)\])?", target)
        assert m, f"{where}: cannot read {target!r}"
        if arg != "-e" and not target.startswith("."):
            assert metadata.distribution(m.group(1)), f"{where}: {target} is not installed"
            continue
        project = tomllib.loads((cwd / m.group(1) / "pyproject.toml").read_text())["project"]
        extras = set(project.get("optional-dependencies", {}))
        for extra in (m.group(2) or "").split(",") if m.group(2) else []:
            assert extra in extras, f"{where}: {target}: no extra {extra!r}"
        assert metadata.distribution(project["name"]), f"{where}: {project['name']} not installed"


def commands(body: str) -> list[str]:
    """Shell lines with continuations joined and ``$ `` prompts (console) removed."""
    text = re.sub(r"\\\n\s*", " ", body)
    out = []
    for line in text.splitlines():
        line = line.strip()
        line = line[2:] if line.startswith("$ ") else line
        if line and not line.startswith("#"):
            out.append(line)
    return out


#: What ``export VAR=...`` sets: a value any rule (secret length, entropy) accepts.
PLACEHOLDER = "placeholder-9fK2xQ7mZ4"


def run_shell(block: Block, cwd: Path) -> None:
    environ = env()
    for line in commands(block.body):
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
                key, _, value = words.pop(0).partition("=")
                environ[key] = value
            program, args = words[0], words[1:]
            if program == "rcingest":
                check([str(RCINGEST), *args], cwd, environ, block.where)
            elif program == "python":
                check([sys.executable, *args], cwd, environ, block.where)
            elif program == "pip":
                check_pip(args, cwd, block.where)
            elif program == "cd":
                cwd = (cwd / args[0]).resolve()
                assert cwd.is_dir(), f"{block.where}: cd {args[0]}: no such folder"
            elif program == "export":
                key, _, value = args[0].partition("=")
                # "..." is the reader's own value; a webhook secret must be strong
                # (16 characters, 8 distinct), so stand in with one that is.
                environ[key] = PLACEHOLDER if value == "..." else value
            else:
                pytest.fail(
                    f"{block.where}: `{part.strip()}` cannot run here: give the block a "
                    "`<!-- snippet: covered-by tests/...::test_... -->` or skip marker"
                )


def run_python(block: Block, cwd: Path) -> None:
    script = cwd / "snippet.py"
    script.write_text(block.body, encoding="utf-8")
    check([sys.executable, str(script)], cwd, env(), block.where)


def run_yaml(block: Block, cwd: Path) -> None:
    path = cwd / "snippet.yaml"
    path.write_text(block.body, encoding="utf-8")
    # rcingest's own reader: `${VAR}` works anywhere, flow mappings included.
    data = read_yaml(path)
    assert isinstance(data, dict), f"{block.where}: not a mapping"
    if not ({"source", "sinks"} <= set(data) or "bitbucket" in data):
        unknown = set(data) - PIPELINE_KEYS
        assert not unknown, f"{block.where}: not a pipeline fragment: {sorted(unknown)}"
        path.write_text(yaml.safe_dump({**FRAGMENT_BASE, **data}), encoding="utf-8")
    # A `${VAR}` without a default stands for a value the reader sets: give it one.
    environ = env()
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", block.body):
        environ.setdefault(name, f"doc-placeholder-{name.lower()}-0123456789")
    check([str(RCINGEST), "validate", str(path)], cwd, environ, block.where)


def covering_test(marker: str) -> tuple[Path, str] | None:
    m = re.fullmatch(r"covered-by (\S+)::(\w+)", marker)
    return (ROOT / m.group(1), m.group(2)) if m else None


@pytest.mark.parametrize("block", ALL, ids=lambda b: b.where)
def test_block_runs_or_is_covered(block: Block, workdir: Path) -> None:
    if block.marker is not None:
        covered = covering_test(block.marker)
        if covered is not None:
            path, name = covered
            assert path.resolve().is_relative_to(ROOT) and path.is_file(), block.marker
            source = path.read_text(encoding="utf-8")
            assert re.search(rf"^(async )?def {name}\(", source, re.M), f"no {name} in {path}"
            return
        reason = block.marker.removeprefix("skip ")
        assert block.marker.startswith("skip ") and reason in SKIP_REASONS, (
            f"{block.where}: marker {block.marker!r}: use covered-by PATH::TEST or one of "
            f"the skip reasons {SKIP_REASONS}"
        )
        pytest.skip(f"{block.where}: {reason}")
    if block.info in SHELL:
        run_shell(block, workdir)
    elif block.info == "python":
        run_python(block, workdir)
    elif block.info == "yaml":
        run_yaml(block, workdir)
    elif block.info == "sql":
        assert re.match(r"-- query: \S+\n", block.body), (
            f"{block.where}: a SQL block is a ready query (`-- query: NAME` first) or is marked"
        )
    else:
        assert block.info in UNCHECKED, f"{block.where}: no rule for ```{block.info} blocks"
        if block.info == "json" and "..." not in block.body and "…" not in block.body:
            json.loads(block.body)  # a complete sample is valid JSON


def test_an_unmarked_block_that_cannot_run_fails_naming_its_line(
    tmp_path: Path, workdir: Path
) -> None:
    doc = ROOT / "docs" / "new.md"  # never written: only its name is used
    text = "# New\n\n<!-- snippet: skip needs real Bitbucket credentials -->\n```bash\nx\n```\n"
    text += "\n```bash\nsqlite3 data/x.db 'SELECT 1'\n```\n\n```bash\nrcingest nosuch\n```\n"
    (tmp_path / "new.md").write_text(text)
    marked, unmarked, failing = [
        Block(doc, b.line, b.info, b.body, b.marker) for b in blocks(tmp_path / "new.md")
    ]
    assert marked.marker == "skip needs real Bitbucket credentials" and unmarked.marker is None
    with pytest.raises(pytest.fail.Exception, match=r"docs/new\.md:8: `sqlite3"):
        run_shell(unmarked, workdir)
    with pytest.raises(AssertionError, match=r"docs/new\.md:12: .*rcingest nosuch exited 2"):
        run_shell(failing, workdir)


def test_blocks_are_found() -> None:
    infos = {b.info for b in ALL}
    assert {"bash", "python", "yaml", "sql"} <= infos
    assert len(ALL) > 40


# -- links stay inside the repository --------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(doc: Path) -> None:
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"https?://", target) or target.startswith(("#", "mailto:")):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name}: {target} points outside the repository"
        assert path.exists(), f"{doc.name}: {target} does not exist"


def test_the_link_check_catches_a_link_outside() -> None:
    assert LINK.findall("see [api](../shared/docs/bitbucket-api.md).") == [
        "../shared/docs/bitbucket-api.md"
    ]
    assert not (ROOT / "docs" / "../../shared/x.md").resolve().is_relative_to(ROOT)


# -- --help names only files the repository has -----------------------------------------------


def help_texts() -> dict[str, str]:
    from rcingest.cli import build_cli

    group = build_cli()
    texts = {"rcingest": CliRunner().invoke(group, ["--help"]).output}
    stack = [([name], cmd) for name, cmd in group.commands.items()]
    while stack:  # bounded by the command tree
        path, cmd = stack.pop()
        texts[" ".join(path)] = CliRunner().invoke(group, [*path, "--help"]).output
        for name, sub in getattr(cmd, "commands", {}).items():
            stack.append(([*path, name], sub))
    return texts


def test_help_names_only_docs_that_exist() -> None:
    texts = help_texts()
    assert {"rcingest", "run", "validate", "demo"} <= set(texts)
    named = {
        (cmd, p) for cmd, text in texts.items() for p in re.findall(r"docs/[\w./-]+\.md", text)
    }
    assert ("rcingest", "docs/cli.md") in named
    missing = [(cmd, p) for cmd, p in named if not (ROOT / p).is_file()]
    assert not missing, missing


def test_the_sdist_ships_the_docs_configs_and_schemas() -> None:
    rules = (ROOT / "MANIFEST.in").read_text(encoding="utf-8").splitlines()
    for folder in ("docs", "config", "schemas"):
        assert any(r.split()[:2] == ["graft", folder] for r in rules), folder


# -- shell completion (docs/cli.md) ----------------------------------------------------------


def completion(**variables: str) -> str:
    environ = {**env(), **variables}
    done = subprocess.run(
        [str(RCINGEST)], env=environ, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    script = completion(_RCINGEST_COMPLETE=f"{shell}_source")
    assert "rcingest" in script and "complete" in script
    assert "_RCINGEST_COMPLETE" in script  # it asks rcingest back, as docs/cli.md says


def test_completing_va_offers_validate() -> None:
    out = completion(_RCINGEST_COMPLETE="bash_complete", COMP_WORDS="rcingest va", COMP_CWORD="1")
    # One ``type,value`` line per candidate.
    values = [line.partition(",")[2] for line in out.splitlines()]
    assert "validate" in values
    assert "run" not in values
