"""Full sync of 2,000 repositories to Chariot, then a second, unchanged one (issue 14 benchmark).

``rcingest run`` runs as a real subprocess on the inventory pipeline of
``config/assets.example.yaml``. Only its API host changes, and ``scan`` is
off: cloning is measured by the tests, not here. It runs against the fake
Bitbucket (``--latency`` on every request, 2,000 repositories by default)
and the fake Chariot of plugins/rcingest-chariot, both in this script's
event loop. For each sync it reports:

* the Bitbucket requests (target: the listing pages, nothing per repository);
* the Chariot requests (target for the second sync: none, except TTL re-touches);
* the wall time and the peak memory (max RSS) of the ``rcingest run`` process.

Bounded: two runs, each under ``--timeout`` seconds.

    python bench/bench_assets.py
    python bench/bench_assets.py --repositories 2000 --latency 0.03
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import rcingest_chariot.fake as fake_chariot

from rcingest.testing import FakeBitbucket, Faults, GenSpec

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-assets-token-Rk20"


def pipeline(folder: Path, base_url: str) -> Path:
    text = (ROOT / "config" / "assets.example.yaml").read_text()
    text = text.replace("https://api.bitbucket.org/2.0", base_url)
    text = text.replace("    scan: true ", "    scan: false")
    path = folder / "assets.yaml"
    path.write_text(text)
    return path


def peak_rss_mb() -> float:
    # ru_maxrss of the children that ended: KiB on Linux; the largest of them.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


async def sync(
    args: argparse.Namespace, folder: Path, path: Path, fake: FakeBitbucket, chariot: object
) -> dict[str, float]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BITBUCKET_", "CHARIOT_", "PRAETORIAN_"))
    }
    env.update(
        BITBUCKET_EMAIL="bench@example.com",
        BITBUCKET_API_TOKEN=TOKEN,
        CHARIOT_API=chariot.api,  # type: ignore[attr-defined]
        CHARIOT_KEY_ID=chariot.key_id,  # type: ignore[attr-defined]
        CHARIOT_KEY_SECRET=chariot.key_secret,  # type: ignore[attr-defined]
        CHARIOT_KEYCHAIN=str(folder / "none.ini"),
    )
    bitbucket_before = fake.counters.total
    chariot_before = chariot.requests()  # type: ignore[attr-defined]
    cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "run", str(path)]
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=folder, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), args.timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SystemExit(f"rcingest run did not finish in {args.timeout} s") from None
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"rcingest run failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {
        "bitbucket": fake.counters.total - bitbucket_before,
        "chariot": chariot.requests() - chariot_before,  # type: ignore[attr-defined]
        "wall": wall,
        "rss": peak_rss_mb(),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repositories", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.03, help="fake Bitbucket s/request")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    spec = GenSpec(repositories=args.repositories, branches=1, commits=2)
    async with (
        FakeBitbucket(spec, Faults(latency=args.latency)) as fake,
        fake_chariot.FakeChariot() as chariot,
    ):
        pages = math.ceil(args.repositories / 100)
        print(
            f"{args.repositories} repositories, fake Bitbucket latency "
            f"{1000 * args.latency:.0f} ms/request, listing pages of 100: {pages}"
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            path = pipeline(folder, fake.base_url)
            for label in ("first (everything new)", "second (nothing changed)"):
                r = await sync(args, folder, path, fake, chariot)
                print(
                    f"{label}: Bitbucket {r['bitbucket']:.0f} requests"
                    f" ({r['bitbucket'] - pages:.0f} beyond the listing),"
                    f" Chariot {r['chariot']:.0f} requests, wall {r['wall']:.2f} s,"
                    f" peak RSS {r['rss']:.0f} MB"
                )
        print(
            f"Chariot now holds {len(chariot.assets)} assets, {len(chariot.attributes)} attributes"
        )


if __name__ == "__main__":
    asyncio.run(main())
