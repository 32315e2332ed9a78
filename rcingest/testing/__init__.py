"""Test helpers for rcingest and its plugins: a fake Bitbucket Cloud API.

``FakeBitbucket`` serves deterministically generated workspaces on
127.0.0.1 (port 0) with injectable faults; tests, ``rcingest demo`` and the
benchmark all use it::

    async with FakeBitbucket(GenSpec(repositories=2)) as fake:
        ...  # point a bitbucket_rest source at fake.base_url
"""

from rcingest.testing.fake_bitbucket import FakeBitbucket, FakeData, Faults, GenSpec

__all__ = ["FakeBitbucket", "FakeData", "Faults", "GenSpec"]
