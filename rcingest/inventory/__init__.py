"""The repository inventory (issue 14): filters, full and incremental sync, tombstones."""
