"""Issue 14, done when: `rcingest run config/assets.example.yaml` against the fakes.

The shipped example (only its API host, clone URL and workspace changed)
runs as a real subprocess against the fake Bitbucket, real git served over
HTTP on loopback, and the fake Chariot from plugins/rcingest-chariot. It
creates one asset per kept repository with its attributes; a second run sends
nothing new; a planted secret becomes a risk and its removal remediates it; a
repository removed from the fake is `D` after the next full sync.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import rcingest_chariot.fake as fake_chariot

from rcingest.bitbucket.auth import AuthConfig
from rcingest.reposcan.auth import git_auth_header
from rcingest.testing import FakeBitbucket, GenSpec
from rcingest.testing.git_http import GitHttpServer

ROOT = Path(__file__).resolve().parents[1]
API_TOKEN = "ATATT3xFfGF0-assets-token-Hv31=QW12"
AWS = "AKIAZ7VRSQ5TJPHKXW4Q"


def pipeline(tmp: Path, base_url: str, git: GitHttpServer) -> Path:
    text = (ROOT / "config" / "assets.example.yaml").read_text()
    text = text.replace("https://api.bitbucket.org/2.0", base_url)
    text = text.replace(
        "https://bitbucket.org/{full_name}.git", f"http://{git.authority}/{{full_name}}.git"
    )
    path = tmp / "assets.yaml"
    path.write_text(text)
    return path


async def run(path: Path, tmp: Path, chariot: Any) -> tuple[int, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BITBUCKET_", "RCINGEST_", "CHARIOT_", "PRAETORIAN_"))
    }
    env.update(
        BITBUCKET_EMAIL="bot@example.com",
        BITBUCKET_API_TOKEN=API_TOKEN,
        CHARIOT_API=chariot.api,
        CHARIOT_KEY_ID=chariot.key_id,
        CHARIOT_KEY_SECRET=chariot.key_secret,
        CHARIOT_KEYCHAIN=str(tmp / "no-keychain.ini"),
    )
    cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "run", str(path)]
    cmd += ["--log-file", str(tmp / "run.log")]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=tmp, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode() + err.decode()


async def test_the_example_syncs_the_inventory_to_chariot(tmp_path: Path) -> None:
    header = git_auth_header(AuthConfig(email="bot@example.com", api_token=API_TOKEN))
    async with (
        FakeBitbucket(GenSpec(repositories=3)) as fake,
        GitHttpServer(tmp_path / "git", auth=header) as git,
        fake_chariot.FakeChariot() as chariot,
    ):
        names = sorted(fake.data.repos)
        for name in names:
            files = {"README.md": f"# {name}\n"}
            if name == names[0]:
                files["deploy/aws.ini"] = f"[default]\naws_access_key_id = {AWS}\n"
            git.make_repo(name, files)
        path = pipeline(tmp_path, fake.base_url, git)

        code, output = await run(path, tmp_path, chariot)
        assert code == 0, output
        groups = sorted(a["group"] for a in chariot.assets.values())
        assert groups == [f"https://bitbucket.org/{n}" for n in names]
        assert all(a["status"] == "A" for a in chariot.assets.values())
        attribute_names = {a["name"] for a in chariot.attributes.values()}
        assert {"language", "visibility", "project", "mainbranch"} <= attribute_names
        [risk] = chariot.risks.values()
        assert risk["name"].startswith("secret-np.aws.1-") and risk["status"].startswith("T")

        # Nothing changed: the second run sends nothing to Chariot.
        sent = chariot.requests()
        code, output = await run(path, tmp_path, chariot)
        assert code == 0, output
        assert chariot.requests() == sent

        # The secret is removed and pushed: its risk is remediated.
        git.commit(names[0], remove=["deploy/aws.ini"])
        fake.data.repos[names[0]].updated_on += timedelta(minutes=5)
        code, output = await run(path, tmp_path, chariot)
        assert code == 0, output
        [risk] = chariot.risks.values()
        assert risk["status"].startswith("R"), risk

        # A repository removed from Bitbucket is D after the next full sync.
        del fake.data.repos[names[2]]
        code, output = await run(path, tmp_path, chariot)
        assert code == 0, output
        status = {a["group"]: a["status"] for a in chariot.assets.values()}
        assert status[f"https://bitbucket.org/{names[2]}"] == "D"
        assert status[f"https://bitbucket.org/{names[0]}"] == "A"

        texts = [output, (tmp_path / "run.log").read_text(), repr(chariot.dump())]
        texts += [p.read_text() for p in (tmp_path / "artifacts").rglob("*.json")]
        texts.append(
            (tmp_path / "data" / "bitbucket" / "commits.db").read_bytes().decode("latin-1")
        )
        for secret in (AWS, API_TOKEN, chariot.key_secret):
            assert all(secret not in t for t in texts), secret
