"""Durable stores for evidence: the bottom layer that the privacy ledger and the audit log share.

Every store file is opened without following symbolic links and must be a
regular file owned by the user running Custodian (:mod:`stores.files`).
Append-only, hash-chained record files (the privacy ledger, the audit log, the
checkpoint history) go through one backend with one torn-tail rule
(:mod:`stores.local`).

:mod:`stores.stream` is the interface an owner programs against: an exclusive
session that reads a stream's records and appends to it. Two backends implement
it: local files (the default) and PostgreSQL (:mod:`stores.postgres`, schema and
roles in ``stores/migrations``). :mod:`stores.select` picks one per checkout from
``.custodian/store.toml`` (:mod:`stores.config`); :mod:`stores.transfer` copies a
local stream into a server. The privacy ledger goes through the interface; the
audit log, its checkpoints and the trust store still use :mod:`stores.local`
directly.
"""
