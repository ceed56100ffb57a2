"""Merkle tree hashing and proofs as in RFC 9162 (Certificate Transparency v2), section 2.1.

Pure functions over leaf hashes (32-byte SHA-256 digests):

- leaf hash ``SHA-256(0x00 || data)``, interior node ``SHA-256(0x01 || left || right)``;
  the prefixes keep a leaf from ever being passed off as a node (second preimages);
- the tree of ``n`` leaves splits at the largest power of two below ``n`` (not the
  midpoint), so roots and proofs agree with every other RFC 6962/9162 implementation;
- the empty tree's hash is ``SHA-256()`` of nothing.

Verifiers return ``False`` for anything malformed rather than raising: a proof
is either accepted or it is not. Generators raise ``ValueError`` for arguments
outside the tree, which is a caller's bug, not a verification outcome.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash of one entry's bytes."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash of two child hashes."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class CompactRange:
    """The roots of the perfect subtrees that make up a tree, left to right.

    A tree of ``size`` leaves is the concatenation of perfect subtrees whose
    sizes are the set bits of ``size`` (largest first), so ``popcount(size)``
    hashes summarise every leaf seen. Appending costs O(log n) and the root is
    a right-to-left fold: this is how the audit log extends a signed tree head
    without re-reading the entries that head already covers.
    """

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        stored = list(hashes)
        if size < 0 or len(stored) != size.bit_count():
            raise ValueError(f"a tree of {size} leaves has {size.bit_count()} subtree roots")
        if any(len(value) != HASH_SIZE for value in stored):
            raise ValueError("every subtree root must be a 32-byte hash")
        self._size = size
        self._hashes = stored

    @property
    def size(self) -> int:
        """Number of leaves summarised."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Subtree roots, largest subtree first."""
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash at the right edge of the tree."""
        self._hashes.append(leaf)
        # Each trailing set bit of the old size is a perfect subtree that the
        # new leaf completes into one twice its size.
        carries = self._size
        while carries & 1:
            right = self._hashes.pop()
            self._hashes[-1] = node_hash(self._hashes[-1], right)
            carries >>= 1
        self._size += 1

    def root(self) -> bytes:
        """Merkle tree hash of the leaves appended so far."""
        if not self._hashes:
            return EMPTY_ROOT
        result = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            result = node_hash(left, result)
        return result


def root_hash(leaf_hashes: Iterable[bytes]) -> bytes:
    """Merkle tree hash (MTH) of a list of leaf hashes."""
    tree = CompactRange()
    for leaf in leaf_hashes:
        tree.append(leaf)
    return tree.root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path (RFC 9162 section 2.1.3.1) of leaf ``index`` in the tree of ``leaf_hashes``."""
    if not 0 <= index < len(leaf_hashes):
        raise ValueError(f"leaf {index} is outside a tree of {len(leaf_hashes)} leaves")
    return _path(leaf_hashes, index, 0, len(leaf_hashes))


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Consistency proof (RFC 9162 section 2.1.4.1) from the first ``old_size`` leaves to all."""
    if not 0 <= old_size <= len(leaf_hashes):
        raise ValueError(f"old size {old_size} is outside 0..{len(leaf_hashes)}")
    if old_size in (0, len(leaf_hashes)):
        return []
    return _subproof(leaf_hashes, old_size, 0, len(leaf_hashes), complete=True)


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Check an audit path with the algorithm of RFC 9162 section 2.1.3.2."""
    if not 0 <= index < tree_size or not _all_hashes([leaf, root, *proof]):
        return False
    fn, sn, result = index, tree_size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and result == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Check that the tree of ``new_size`` leaves extends the tree of ``old_size`` leaves.

    RFC 9162 section 2.1.4.2 for ``0 < old_size < new_size``. The degenerate
    cases take an empty proof: equal sizes need equal roots, and every tree
    extends the empty tree.
    """
    if not 0 <= old_size <= new_size or not _all_hashes([old_root, new_root, *proof]):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        # The old tree is a perfect subtree of the new one, so its root is a node of the path.
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    old_acc = new_acc = path[0]
    for sibling in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            old_acc = node_hash(sibling, old_acc)
            new_acc = node_hash(sibling, new_acc)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            new_acc = node_hash(new_acc, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and old_acc == old_root and new_acc == new_root


def _all_hashes(values: Iterable[bytes]) -> bool:
    return all(isinstance(value, bytes) and len(value) == HASH_SIZE for value in values)


def _split(size: int) -> int:
    """Largest power of two strictly below ``size`` (``size`` >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def _subtree_root(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    return root_hash(leaf_hashes[i] for i in range(start, end))


def _path(leaf_hashes: Sequence[bytes], index: int, start: int, end: int) -> list[bytes]:
    size = end - start
    if size == 1:
        return []
    k = _split(size)
    if index < k:
        return [
            *_path(leaf_hashes, index, start, start + k),
            _subtree_root(leaf_hashes, start + k, end),
        ]
    return [
        *_path(leaf_hashes, index - k, start + k, end),
        _subtree_root(leaf_hashes, start, start + k),
    ]


def _subproof(
    leaf_hashes: Sequence[bytes], old_size: int, start: int, end: int, *, complete: bool
) -> list[bytes]:
    size = end - start
    if old_size == size:
        # A complete old tree is known to the verifier; a partial one must be supplied.
        return [] if complete else [_subtree_root(leaf_hashes, start, end)]
    k = _split(size)
    if old_size <= k:
        left = _subproof(leaf_hashes, old_size, start, start + k, complete=complete)
        return [*left, _subtree_root(leaf_hashes, start + k, end)]
    right = _subproof(leaf_hashes, old_size - k, start + k, end, complete=False)
    return [*right, _subtree_root(leaf_hashes, start, start + k)]
