"""Test helpers for rcingest and its plugins.

``FakeBitbucket`` serves deterministically generated workspaces on
127.0.0.1 (port 0) with injectable faults; tests, ``rcingest demo`` and the
benchmark all use it::

    async with FakeBitbucket(GenSpec(repositories=2)) as fake:
        ...  # point a bitbucket_rest source at fake.base_url

The contract checks (``contracts.py``, over the data of ``samples.py``) let a
plugin's own tests prove that a sink, source or enricher honours what the
runner relies on::

    await check_sink_contract(lambda ctx: MySink(MySink.Config(), ctx), tmp_path=tmp_path)

``check_scanner_contract`` does the same for a scanner (``register_scanners``):
it finds a planted secret, never holds it, and fingerprints with the key.

The sink check searches every file the sink wrote under ``tmp_path`` (and any
``outputs=`` or ``dump=`` it declares) for the secrets it planted (``leaks.py``).
"""

from rcingest.testing.contracts import (
    check_enricher_contract,
    check_sink_contract,
    check_source_contract,
)
from rcingest.testing.fake_bitbucket import FakeBitbucket, FakeData, Faults, GenSpec
from rcingest.testing.samples import (
    CONTRACT_PASSWORD,
    CONTRACT_SECRET,
    CONTRACT_SECRETS,
    make_test_context,
    record_key,
    sample_records,
)
from rcingest.testing.scanner_contract import check_scanner_contract

__all__ = [
    "CONTRACT_PASSWORD",
    "CONTRACT_SECRET",
    "CONTRACT_SECRETS",
    "FakeBitbucket",
    "FakeData",
    "Faults",
    "GenSpec",
    "check_enricher_contract",
    "check_scanner_contract",
    "check_sink_contract",
    "check_source_contract",
    "make_test_context",
    "record_key",
    "sample_records",
]
