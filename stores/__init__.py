"""Durable stores for evidence: the bottom layer that the privacy ledger and the audit log share.

Every store file is opened without following symbolic links and must be a
regular file owned by the user running Custodian (:mod:`stores.files`).
Append-only, hash-chained record files (the privacy ledger, the audit log, the
checkpoint history) go through one backend with one torn-tail rule
(:mod:`stores.lines`). Only the local-file backend exists; a server-backed
store (SPEC: PostgreSQL) would implement the same operations, with its own
notion of a position in place of byte offsets.
"""
