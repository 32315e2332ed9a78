"""Bitbucket Cloud REST 2.0: the client, its auth, sans-I/O parsers and the window rule.

Shared by the ``bitbucket_rest`` source and the webhook daemon's backfill.
"""
