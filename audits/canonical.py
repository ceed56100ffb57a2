"""Canonical JSON (RFC 8785, JCS) and SHA-256 helpers.

Everything the audit trail hashes or signs goes through :func:`canonical_bytes`,
so that the same value always gives the same bytes on every machine and
Python version: keys sorted by UTF-16 code units, no insignificant whitespace,
ECMAScript number formatting, UTF-8.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from audits.errors import AuditError


class NotCanonicalizable(AuditError):
    """A value has no RFC 8785 form (NaN, infinity, an integer beyond 2**53, a non-str key...)."""


def canonical_bytes(value: Any) -> bytes:
    """Return the RFC 8785 canonical JSON encoding of ``value``.

    Raises :class:`NotCanonicalizable` naming the problem when ``value`` holds
    something JSON cannot represent exactly.
    """
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise NotCanonicalizable(f"value has no canonical JSON form: {exc}") from exc


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def canonical_sha256(value: Any) -> str:
    """Lower-case hex SHA-256 of the canonical JSON encoding of ``value``."""
    return sha256_hex(canonical_bytes(value))
