"""RFC 9162 Merkle trees: published Certificate Transparency vectors and exhaustive small trees."""

from __future__ import annotations

import hashlib

import pytest

from audits.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# The test tree of the Certificate Transparency reference implementations
# (certificate-transparency-go / transparency-dev merkle testonly), RFC 6962
# hashing, which RFC 9162 keeps unchanged.
CT_DATA = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
    (2, 8): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_LEAVES = [leaf_hash(data) for data in CT_DATA]
MAX_SIZE = 20
LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(MAX_SIZE)]


def _reference_root(leaves: list[bytes]) -> bytes:
    """MTH exactly as RFC 9162 section 2.1.1 writes it, recursion and all."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(
        b"\x01" + _reference_root(leaves[:k]) + _reference_root(leaves[k:])
    ).digest()


def _flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


def test_hash_prefixes_follow_the_rfc() -> None:
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert leaf_hash(b"").hex() == CT_ROOTS[1]
    assert node_hash(CT_LEAVES[0], CT_LEAVES[1]).hex() == CT_ROOTS[2]


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_roots_match_the_published_tree_heads(size: int) -> None:
    assert root_hash(CT_LEAVES[:size]).hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size"), sorted(CT_INCLUSION))
def test_inclusion_proofs_match_the_published_paths(index: int, size: int) -> None:
    proof = inclusion_proof(CT_LEAVES[:size], index)
    assert [p.hex() for p in proof] == CT_INCLUSION[(index, size)]
    root = bytes.fromhex(CT_ROOTS[size])
    assert verify_inclusion(CT_LEAVES[index], index, size, proof, root)


@pytest.mark.parametrize(("old", "new"), sorted(CT_CONSISTENCY))
def test_consistency_proofs_match_the_published_proofs(old: int, new: int) -> None:
    proof = consistency_proof(CT_LEAVES[:new], old)
    assert [p.hex() for p in proof] == CT_CONSISTENCY[(old, new)]
    old_root, new_root = bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new])
    assert verify_consistency(old, new, old_root, new_root, proof)


def test_root_agrees_with_the_recursive_definition_beyond_the_vectors() -> None:
    for size in range(45):
        leaves = [leaf_hash(bytes([i, i * 7 % 256])) for i in range(size)]
        assert root_hash(leaves) == _reference_root(leaves), size


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_every_inclusion_proof_verifies_and_nothing_else_does(size: int) -> None:
    tree = LEAVES[:size]
    root = root_hash(tree)
    for index in range(size):
        proof = inclusion_proof(tree, index)
        assert verify_inclusion(tree[index], index, size, proof, root)
        assert not verify_inclusion(_flip(tree[index]), index, size, proof, root)
        assert not verify_inclusion(tree[index], index, size, proof, _flip(root))
        if size > 1:
            other = (index + 1) % size
            assert not verify_inclusion(tree[index], other, size, proof, root)
            assert not verify_inclusion(tree[index], index, size, proof[:-1], root)
            assert not verify_inclusion(
                tree[index], index, size, [_flip(proof[0]), *proof[1:]], root
            )
        assert not verify_inclusion(tree[index], index, size, [*proof, root], root)


@pytest.mark.parametrize("new", range(MAX_SIZE + 1))
def test_every_consistency_proof_verifies_and_fails_when_a_leaf_changes(new: int) -> None:
    new_root = root_hash(LEAVES[:new])
    for old in range(new + 1):
        old_root = root_hash(LEAVES[:old])
        proof = consistency_proof(LEAVES[:new], old)
        assert verify_consistency(old, new, old_root, new_root, proof), (old, new)
        for changed in range(old):
            # The old tree head was signed over the original leaf; a log that
            # changed that leaf cannot prove it extends the head.
            edited = [*LEAVES[:new]]
            edited[changed] = _flip(edited[changed])
            forged = consistency_proof(edited, old)
            assert not verify_consistency(old, new, old_root, root_hash(edited), forged)
        if proof:
            assert not verify_consistency(old, new, old_root, new_root, proof[:-1])
            assert not verify_consistency(old, new, old_root, new_root, [*proof, new_root])
            mangled = [_flip(proof[0]), *proof[1:]]
            assert not verify_consistency(old, new, old_root, new_root, mangled)
        if 0 < old < new:
            assert not verify_consistency(old, new, _flip(old_root), new_root, proof)
            assert not verify_consistency(old, new, old_root, _flip(new_root), proof)


def test_degenerate_consistency_cases() -> None:
    root4, root5 = root_hash(LEAVES[:4]), root_hash(LEAVES[:5])
    assert verify_consistency(4, 4, root4, root4, [])
    assert not verify_consistency(4, 4, root4, root5, [])
    assert not verify_consistency(4, 4, root4, root4, [root4])
    assert verify_consistency(0, 5, EMPTY_ROOT, root5, [])
    assert not verify_consistency(0, 5, root4, root5, [])
    assert not verify_consistency(5, 4, root5, root4, [])
    assert not verify_consistency(2, 5, root_hash(LEAVES[:2]), root5, [])


def test_verifiers_reject_malformed_hashes_instead_of_raising() -> None:
    root = root_hash(LEAVES[:8])
    proof = inclusion_proof(LEAVES[:8], 3)
    assert not verify_inclusion(LEAVES[3][:31], 3, 8, proof, root)
    assert not verify_inclusion(LEAVES[3], 3, 8, [proof[0][:31], *proof[1:]], root)
    assert not verify_inclusion(LEAVES[3], -1, 8, proof, root)
    assert not verify_consistency(3, 8, root[:31], root, consistency_proof(LEAVES[:8], 3))


def test_generators_reject_arguments_outside_the_tree() -> None:
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(LEAVES[:3], 3)
    with pytest.raises(ValueError, match="outside"):
        consistency_proof(LEAVES[:3], 4)


def test_compact_range_summarises_every_prefix() -> None:
    tree = CompactRange()
    for size in range(1, MAX_SIZE + 1):
        tree.append(LEAVES[size - 1])
        assert tree.size == size
        assert len(tree.hashes) == size.bit_count()
        assert tree.root() == root_hash(LEAVES[:size])
        # Resuming from the stored hashes gives the same tree as replaying every leaf.
        resumed = CompactRange(size, tree.hashes)
        resumed.append(LEAVES[0])
        assert resumed.root() == root_hash([*LEAVES[:size], LEAVES[0]])


def test_compact_range_rejects_hashes_that_do_not_fit_the_size() -> None:
    with pytest.raises(ValueError, match="subtree roots"):
        CompactRange(3, [LEAVES[0]])
    with pytest.raises(ValueError, match="32-byte"):
        CompactRange(1, [b"short"])
