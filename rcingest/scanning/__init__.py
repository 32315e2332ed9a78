"""Secret scanning of pull-request diffs and repository content (issue 12).

``model`` holds the shapes every scanner shares (added lines in, findings
out) and the two rules that keep secrets out of findings: a keyed
fingerprint and an excerpt showing at most four characters.
"""
