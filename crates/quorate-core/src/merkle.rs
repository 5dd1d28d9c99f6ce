//! The Merkle tree over the decision log, as RFC 9162 (Certificate
//! Transparency v2) §2.1 defines it, with SHA-256.
//!
//! - Leaf `i` (0-based) is the decision record of index `i + 1`; the leaf's
//!   *data* is that record's 32-byte `hash`, never the record's bytes.
//! - Hashes are domain-separated so a leaf can never pass for an interior
//!   node: `leaf_hash(d) = SHA-256(0x00 || d)`, `node_hash(l, r) =
//!   SHA-256(0x01 || l || r)`. The root of the empty tree is `SHA-256("")`.
//! - The root of `n > 1` leaves splits at `k`, the largest power of two
//!   *smaller* than `n` (not the midpoint): `node_hash(MTH(D[0:k]),
//!   MTH(D[k:n]))`. Every size's root, proof and verifier here follows that.
//! - A *perfect node* `(level, index)` is the root of the perfect subtree of
//!   the `2^level` leaves `[index * 2^level, (index + 1) * 2^level)`; level 0
//!   node `i` is `leaf_hash` of leaf `i`. Perfect nodes never change once
//!   complete, so a store keeps them all (`Frontier::append` reports each as
//!   it completes) and serves them through [`NodeSource`]. Any historical
//!   root and any inclusion or consistency proof is computed from O(log n)
//!   of them.
//! - A [`Frontier`] (compact range) is the O(log n) state needed to append
//!   and to compute the current root without reading any stored node.

use serde::{Deserialize, Serialize};

use crate::canonical::sha256;
use crate::record::Digest;

/// Prefix of a leaf's hash input.
const LEAF_PREFIX: u8 = 0x00;
/// Prefix of an interior node's hash input.
const NODE_PREFIX: u8 = 0x01;

/// Why a Merkle operation or verification failed. Every variant names what
/// was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is out of range for a tree of size {tree_size}")]
    IndexOutOfRange { index: u64, tree_size: u64 },
    #[error("proof has {actual} hashes; {expected} expected")]
    WrongProofLength { expected: usize, actual: usize },
    /// The root computed from the proof is not the one given for the tree
    /// of `tree_size` (the old or the new tree of a consistency proof). The
    /// digests are left out to keep this error small: it is embedded in
    /// other error types.
    #[error("the proof does not lead to the given root of the tree of size {tree_size}")]
    RootMismatch { tree_size: u64 },
    #[error("a consistency proof needs 0 < old_size <= new_size; got {old_size} and {new_size}")]
    BadSizes { old_size: u64, new_size: u64 },
    #[error("leaf range [{start}, {end}) ends before it starts")]
    BadRange { start: u64, end: u64 },
    #[error("a frontier of size {size} has {expected} hashes, not {actual}")]
    FrontierShape {
        size: u64,
        expected: u32,
        actual: usize,
    },
}

/// Why producing a proof or a root from stored nodes failed: either the
/// request itself (`Merkle`) or reading a node (`Source`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError<E> {
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    #[error("reading a Merkle node: {0}")]
    Source(E),
}

/// `SHA-256(0x00 || data)`: the hash of a leaf whose data is `data`.
pub fn leaf_hash(data: &[u8]) -> Digest {
    let mut buf = Vec::with_capacity(1 + data.len());
    buf.push(LEAF_PREFIX);
    buf.extend_from_slice(data);
    Digest(sha256(&buf))
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut buf = [0u8; 65];
    buf[0] = NODE_PREFIX;
    buf[1..33].copy_from_slice(&left.0);
    buf[33..].copy_from_slice(&right.0);
    Digest(sha256(&buf))
}

/// `SHA-256("")`: the root of the empty tree.
pub fn empty_root() -> Digest {
    Digest(sha256(&[]))
}

/// The largest power of two strictly smaller than `n`. Requires `n >= 2`.
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The compact range of a tree of `size` leaves: the roots of the perfect
/// subtrees of the binary decomposition of `size`, largest (leftmost) first.
/// Hash `j` is the perfect node at the level of the `j`-th set bit of `size`
/// counted from the most significant. At most 64 hashes.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "FrontierRepr")]
pub struct Frontier {
    size: u64,
    hashes: Vec<Digest>,
}

/// The unchecked serialised form of a [`Frontier`]; deserialising checks
/// its shape through `from_parts`.
#[derive(Deserialize)]
struct FrontierRepr {
    size: u64,
    hashes: Vec<Digest>,
}

impl TryFrom<FrontierRepr> for Frontier {
    type Error = MerkleError;

    fn try_from(repr: FrontierRepr) -> Result<Frontier, MerkleError> {
        Frontier::from_parts(repr.size, repr.hashes)
    }
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuilds a frontier from its size and hashes (as stored or as
    /// serialised). Fails unless there is exactly one hash per set bit of
    /// `size`; the hashes themselves cannot be checked here.
    pub fn from_parts(size: u64, hashes: Vec<Digest>) -> Result<Frontier, MerkleError> {
        let expected = size.count_ones();
        if usize::try_from(expected).ok() != Some(hashes.len()) {
            return Err(MerkleError::FrontierShape {
                size,
                expected,
                actual: hashes.len(),
            });
        }
        Ok(Frontier { size, hashes })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree roots, largest first (see the type's doc).
    pub fn hashes(&self) -> &[Digest] {
        &self.hashes
    }

    /// Appends one leaf, given as its *leaf hash* (`leaf_hash(data)`), and
    /// returns every perfect node this append completed as `(level, index,
    /// hash)`, from the leaf itself (level 0, index = the old size) upward.
    /// A store that persists all of them can serve every proof.
    ///
    /// The tree holds at most `u64::MAX` leaves: appending to a full tree
    /// changes nothing and returns an empty vector. Otherwise the vector is
    /// never empty.
    pub fn append(&mut self, leaf: Digest) -> Vec<(u32, u64, Digest)> {
        let Some(new_size) = self.size.checked_add(1) else {
            return Vec::new();
        };
        // Each trailing 1 bit of the old size is a perfect subtree at the
        // end of the frontier that the new leaf's subtree now completes.
        let merges = self.size.trailing_ones();
        let mut completed = Vec::with_capacity(1 + merges as usize);
        let mut level = 0u32;
        let mut index = self.size;
        let mut hash = leaf;
        completed.push((level, index, hash));
        for _ in 0..merges {
            let Some(left) = self.hashes.pop() else {
                // Unreachable: the shape invariant gives popcount(size)
                // hashes, at least `merges` of them.
                break;
            };
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            completed.push((level, index, hash));
        }
        self.hashes.push(hash);
        self.size = new_size;
        completed
    }

    /// The root of the whole tree (RFC 9162 MTH); [`empty_root`] when empty.
    pub fn root(&self) -> Digest {
        let mut rev = self.hashes.iter().rev();
        let Some(last) = rev.next() else {
            return empty_root();
        };
        rev.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// Read access to stored perfect nodes (see the module doc for addressing).
pub trait NodeSource {
    type Error;

    /// The perfect node covering leaves `[index * 2^level, (index + 1) *
    /// 2^level)`. Only asked for nodes that are complete in the tree the
    /// caller is proving against.
    fn node(&self, level: u32, index: u64) -> Result<Digest, Self::Error>;
}

/// `MTH(D[start:end])` from stored perfect nodes.
///
/// A range that starts at a multiple of the largest power of two below its
/// length, which every range RFC 9162's MTH, PATH and SUBPROOF recursions
/// produce, costs at most one lookup per set bit of its length (one lookup
/// for an aligned power-of-two range). Any other range is also answered
/// correctly but can cost up to one lookup per leaf: its interior nodes are
/// not perfect nodes of the tree. `start == end` gives [`empty_root`].
pub fn subtree_root<S: NodeSource + ?Sized>(
    src: &S,
    start: u64,
    end: u64,
) -> Result<Digest, ProofError<S::Error>> {
    if start > end {
        return Err(MerkleError::BadRange { start, end }.into());
    }
    range_root(src, start, end).map_err(ProofError::Source)
}

fn range_root<S: NodeSource + ?Sized>(src: &S, start: u64, end: u64) -> Result<Digest, S::Error> {
    let n = end - start;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start % n == 0 {
        let level = n.trailing_zeros();
        return src.node(level, start >> level);
    }
    let mid = start + split_point(n);
    let left = range_root(src, start, mid)?;
    let right = range_root(src, mid, end)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree's first `size` leaves; [`empty_root`] for 0.
pub fn root_at<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Digest, ProofError<S::Error>> {
    subtree_root(src, 0, size)
}

/// RFC 9162 §2.1.3.1 `PATH(leaf_index, D[tree_size])`: the audit path of a
/// leaf, ordered from the leaf's sibling up to the root's child.
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    src: &S,
    leaf_index: u64,
    tree_size: u64,
) -> Result<Vec<Digest>, ProofError<S::Error>> {
    if leaf_index >= tree_size {
        return Err(MerkleError::IndexOutOfRange {
            index: leaf_index,
            tree_size,
        }
        .into());
    }
    // Walk down from the whole tree to the leaf; the RFC appends each
    // sibling after the deeper part of the path, so reverse at the end.
    let mut siblings = Vec::new();
    let (mut start, mut end) = (0u64, tree_size);
    while end - start > 1 {
        let mid = start + split_point(end - start);
        if leaf_index < mid {
            siblings.push(subtree_root(src, mid, end)?);
            end = mid;
        } else {
            siblings.push(subtree_root(src, start, mid)?);
            start = mid;
        }
    }
    siblings.reverse();
    Ok(siblings)
}

/// RFC 9162 §2.1.4.1 `PROOF(old_size, D[new_size])` (SUBPROOF with `b =
/// true`). Requires `0 < old_size <= new_size`; equal sizes give an empty
/// proof.
pub fn consistency_proof<S: NodeSource + ?Sized>(
    src: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Digest>, ProofError<S::Error>> {
    if old_size == 0 || old_size > new_size {
        return Err(MerkleError::BadSizes { old_size, new_size }.into());
    }
    // SUBPROOF(m, D[start:end], b), unrolled: `old_size - start` is `m`.
    let mut siblings = Vec::new();
    let (mut start, mut end) = (0u64, new_size);
    let mut b = true;
    let mut head = None;
    loop {
        let n = end - start;
        let m = old_size - start;
        if m == n {
            if !b {
                head = Some(subtree_root(src, start, end)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            siblings.push(subtree_root(src, start + k, end)?);
            end = start + k;
        } else {
            siblings.push(subtree_root(src, start, start + k)?);
            start += k;
            b = false;
        }
    }
    Ok(head.into_iter().chain(siblings.into_iter().rev()).collect())
}

/// The number of hashes in a valid inclusion proof: the iterations RFC 9162
/// §2.1.3.2 step 4 takes for `sn` to reach 0. Requires `index < size`.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut len = 0;
    while s_n != 0 {
        if (f_n & 1 == 1 || f_n == s_n) && f_n & 1 == 0 {
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        }
        f_n >>= 1;
        s_n >>= 1;
        len += 1;
    }
    len
}

/// The number of hashes in a valid consistency proof from `old` to `new`
/// leaves, following RFC 9162 §2.1.4.2 steps 2–6. Requires `0 < old < new`.
fn consistency_proof_len(old: u64, new: u64) -> usize {
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut after_first = 0;
    while s_n != 0 {
        if (f_n & 1 == 1 || f_n == s_n) && f_n & 1 == 0 {
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        }
        f_n >>= 1;
        s_n >>= 1;
        after_first += 1;
    }
    // The path's first value is the old root itself when old is a power of
    // two (step 2 prepends it); otherwise the proof carries it.
    if old.is_power_of_two() {
        after_first
    } else {
        after_first + 1
    }
}

/// RFC 9162 §2.1.3.2: checks that `leaf` (a *leaf hash*) is leaf
/// `leaf_index` of the tree of `tree_size` leaves whose root is `root`.
/// The proof must have exactly the length that index and size imply.
pub fn verify_inclusion(
    leaf: &Digest,
    leaf_index: u64,
    tree_size: u64,
    proof: &[Digest],
    root: &Digest,
) -> Result<(), MerkleError> {
    // Step 1.
    if leaf_index >= tree_size {
        return Err(MerkleError::IndexOutOfRange {
            index: leaf_index,
            tree_size,
        });
    }
    let expected = inclusion_proof_len(leaf_index, tree_size);
    let wrong_length = MerkleError::WrongProofLength {
        expected,
        actual: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // Steps 2 and 3.
    let (mut f_n, mut s_n) = (leaf_index, tree_size - 1);
    let mut r = *leaf;
    // Step 4.
    for p in proof {
        if s_n == 0 {
            return Err(wrong_length);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5.
    if s_n != 0 {
        return Err(wrong_length);
    }
    if r != *root {
        return Err(MerkleError::RootMismatch { tree_size });
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: checks that the tree of `new_size` leaves with root
/// `new_root` extends the tree of `old_size` leaves with root `old_root`.
/// Requires `0 < old_size <= new_size`; equal sizes need an empty proof and
/// equal roots. The proof must have exactly the length the sizes imply.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Digest,
    new_root: &Digest,
    proof: &[Digest],
) -> Result<(), MerkleError> {
    if old_size == 0 || old_size > new_size {
        return Err(MerkleError::BadSizes { old_size, new_size });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(MerkleError::WrongProofLength {
                expected: 0,
                actual: proof.len(),
            });
        }
        if old_root != new_root {
            return Err(MerkleError::RootMismatch {
                tree_size: new_size,
            });
        }
        return Ok(());
    }
    let expected = consistency_proof_len(old_size, new_size);
    let wrong_length = MerkleError::WrongProofLength {
        expected,
        actual: proof.len(),
    };
    // Step 1 (an empty proof is always the wrong length here).
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // Step 2.
    let mut path = proof.iter();
    let first = if old_size.is_power_of_two() {
        *old_root
    } else {
        match path.next() {
            Some(c) => *c,
            None => return Err(wrong_length),
        }
    };
    // Step 3.
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    // Step 4.
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5.
    let (mut fr, mut sr) = (first, first);
    // Step 6.
    for c in path {
        if s_n == 0 {
            return Err(wrong_length);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 7.
    if s_n != 0 {
        return Err(wrong_length);
    }
    if fr != *old_root {
        return Err(MerkleError::RootMismatch {
            tree_size: old_size,
        });
    }
    if sr != *new_root {
        return Err(MerkleError::RootMismatch {
            tree_size: new_size,
        });
    }
    Ok(())
}

/// A perfect node a [`MemoryTree`] does not hold (the range is not complete
/// in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no perfect Merkle node at level {level}, index {index}")]
pub struct MissingNode {
    pub level: u32,
    pub index: u64,
}

/// A whole tree in memory: every leaf hash and every perfect node, by
/// level (`levels[0]` are the leaf hashes). For tests and for an offline
/// verifier rebuilding a tree from an export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryTree {
    levels: Vec<Vec<Digest>>,
    frontier: Frontier,
}

impl MemoryTree {
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    /// Appends a leaf, given as its *leaf hash*.
    pub fn push(&mut self, leaf_hash: Digest) {
        for (level, _index, hash) in self.frontier.append(leaf_hash) {
            let level = level as usize;
            if self.levels.len() <= level {
                self.levels.resize_with(level + 1, Vec::new);
            }
            // `append` completes nodes in order, so `_index` is always the
            // level's current length.
            self.levels[level].push(hash);
        }
    }

    /// The number of leaves.
    pub fn len(&self) -> u64 {
        self.frontier.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The leaf hashes, in order.
    pub fn leaves(&self) -> &[Digest] {
        self.levels.first().map_or(&[], Vec::as_slice)
    }

    /// The frontier of the whole tree.
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Digest {
        self.frontier.root()
    }
}

impl NodeSource for MemoryTree {
    type Error = MissingNode;

    fn node(&self, level: u32, index: u64) -> Result<Digest, MissingNode> {
        usize::try_from(level)
            .ok()
            .and_then(|l| self.levels.get(l))
            .and_then(|nodes| nodes.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(MissingNode { level, index })
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test should fail loudly on an unexpected error"
)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest as _, Sha256};

    // ---- Reference implementation, straight from the RFC 9162 text, over
    // the leaves' data. It hashes with sha2 directly so that it shares no
    // code with the implementation under test.

    fn r_hash(parts: &[&[u8]]) -> Digest {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Digest(h.finalize().into())
    }

    /// The largest power of two smaller than n (n > 1), by counting up.
    fn r_k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// MTH(D[n]).
    fn r_mth(d: &[[u8; 32]]) -> Digest {
        match d.len() {
            0 => r_hash(&[]),
            1 => r_hash(&[&[0x00], &d[0]]),
            n => {
                let k = r_k(n);
                let (l, r) = (r_mth(&d[..k]), r_mth(&d[k..]));
                r_hash(&[&[0x01], &l.0, &r.0])
            }
        }
    }

    /// PATH(m, D[n]).
    fn r_path(m: usize, d: &[[u8; 32]]) -> Vec<Digest> {
        let n = d.len();
        if n == 1 {
            return vec![];
        }
        let k = r_k(n);
        if m < k {
            let mut p = r_path(m, &d[..k]);
            p.push(r_mth(&d[k..]));
            p
        } else {
            let mut p = r_path(m - k, &d[k..]);
            p.push(r_mth(&d[..k]));
            p
        }
    }

    /// SUBPROOF(m, D[n], b).
    fn r_subproof(m: usize, d: &[[u8; 32]], b: bool) -> Vec<Digest> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![r_mth(d)] };
        }
        let k = r_k(n);
        if m <= k {
            let mut p = r_subproof(m, &d[..k], b);
            p.push(r_mth(&d[k..]));
            p
        } else {
            let mut p = r_subproof(m - k, &d[k..], false);
            p.push(r_mth(&d[..k]));
            p
        }
    }

    /// PROOF(m, D[n]).
    fn r_proof(m: usize, d: &[[u8; 32]]) -> Vec<Digest> {
        r_subproof(m, d, true)
    }

    // ---- Fixtures.

    /// `n` distinct pseudo-random leaf data (record hashes) from `seed`.
    fn data(seed: u64, n: usize) -> Vec<[u8; 32]> {
        (0..n as u64)
            .map(|i| {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&seed.to_be_bytes());
                b[8..].copy_from_slice(&i.to_be_bytes());
                sha256(&b)
            })
            .collect()
    }

    fn tree_of(d: &[[u8; 32]]) -> MemoryTree {
        let mut t = MemoryTree::new();
        for x in d {
            t.push(leaf_hash(x));
        }
        t
    }

    fn flip(d: &Digest, bit: usize) -> Digest {
        let mut out = *d;
        out.0[(bit / 8) % 32] ^= 1 << (bit % 8);
        out
    }

    fn h(s: &str) -> Digest {
        Digest::from_hex(s).unwrap()
    }

    // ---- Known answers that do not come from this code.

    /// RFC 6962 test leaves and roots of sizes 0..=8 (published by
    /// transparency-dev/merkle, testonly/constants.go, and used by every CT
    /// implementation's tests).
    const CT_LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    /// Perfect nodes of the 8-leaf tree, by (level, index).
    const CT_NODES: [&[&str]; 4] = [
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ],
        &[
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ],
        &[
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
        &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
    ];

    fn ct_tree() -> MemoryTree {
        let mut t = MemoryTree::new();
        for l in CT_LEAVES {
            t.push(leaf_hash(&hex::decode(l).unwrap()));
        }
        t
    }

    #[test]
    fn hashing_primitives_match_known_answers() {
        assert_eq!(empty_root(), h(CT_ROOTS[0]));
        // SHA-256(0x00), the CT hash of the empty leaf.
        assert_eq!(leaf_hash(&[]), h(CT_ROOTS[1]));
        let (l0, l1) = (h(CT_NODES[0][0]), h(CT_NODES[0][1]));
        assert_eq!(node_hash(&l0, &l1), h(CT_ROOTS[2]));
    }

    #[test]
    fn small_trees_have_the_rfc_shape() {
        let d = data(7, 3);
        let l: Vec<Digest> = d.iter().map(|x| leaf_hash(x)).collect();
        let mut f = Frontier::new();
        assert_eq!(f.root(), empty_root());
        f.append(l[0]);
        assert_eq!(f.root(), leaf_hash(&d[0]));
        f.append(l[1]);
        assert_eq!(f.root(), node_hash(&l[0], &l[1]));
        f.append(l[2]);
        // Split at 2, the largest power of two below 3: not ((l0), (l1, l2)).
        assert_eq!(f.root(), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        let t = tree_of(&d);
        for n in 0..=3 {
            let mut g = Frontier::new();
            for x in &l[..n] {
                g.append(*x);
            }
            assert_eq!(root_at(&t, n as u64).unwrap(), g.root());
        }
    }

    #[test]
    fn ct_roots_nodes_and_frontiers() {
        let t = ct_tree();
        for (size, want) in CT_ROOTS.iter().enumerate() {
            assert_eq!(root_at(&t, size as u64).unwrap(), h(want), "size {size}");
        }
        for (level, nodes) in CT_NODES.iter().enumerate() {
            for (index, want) in nodes.iter().enumerate() {
                assert_eq!(t.node(level as u32, index as u64).unwrap(), h(want));
            }
        }
        // Compact ranges of sizes 5 and 7, as in testonly's CompactTrees.
        let mut f = Frontier::new();
        for l in &t.leaves()[..5] {
            f.append(*l);
        }
        assert_eq!(f.hashes(), &[h(CT_NODES[2][0]), h(CT_NODES[0][4])]);
        f.append(t.leaves()[5]);
        f.append(t.leaves()[6]);
        assert_eq!(
            f.hashes(),
            &[h(CT_NODES[2][0]), h(CT_NODES[1][2]), h(CT_NODES[0][6])]
        );
        assert_eq!(f.root(), h(CT_ROOTS[7]));
        // The eighth append completes one node per level.
        let done = f.append(t.leaves()[7]);
        let want: Vec<(u32, u64, Digest)> = vec![
            (0, 7, h(CT_NODES[0][7])),
            (1, 3, h(CT_NODES[1][3])),
            (2, 1, h(CT_NODES[2][1])),
            (3, 0, h(CT_NODES[3][0])),
        ];
        assert_eq!(done, want);
        assert_eq!(f.hashes(), &[h(CT_ROOTS[8])]);
    }

    #[test]
    fn ct_inclusion_and_consistency_vectors() {
        let t = ct_tree();
        let incl: [(u64, u64, &[&str]); 4] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (index, size, want) in incl {
            let want: Vec<Digest> = want.iter().map(|s| h(s)).collect();
            let got = inclusion_proof(&t, index, size).unwrap();
            assert_eq!(got, want, "inclusion {index} in {size}");
            let leaf = t.leaves()[index as usize];
            let root = h(CT_ROOTS[size as usize]);
            verify_inclusion(&leaf, index, size, &got, &root).unwrap();
            for (i, _) in got.iter().enumerate() {
                for bit in 0..256 {
                    let mut bad = got.clone();
                    bad[i] = flip(&bad[i], bit);
                    assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
                }
            }
        }
        assert!(inclusion_proof(&t, 0, 1).unwrap().is_empty());

        let cons: [(u64, u64, &[&str]); 4] = [
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                7,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (old, new, want) in cons {
            let want: Vec<Digest> = want.iter().map(|s| h(s)).collect();
            let got = consistency_proof(&t, old, new).unwrap();
            assert_eq!(got, want, "consistency {old} to {new}");
            let (r1, r2) = (h(CT_ROOTS[old as usize]), h(CT_ROOTS[new as usize]));
            verify_consistency(old, new, &r1, &r2, &got).unwrap();
            for (i, _) in got.iter().enumerate() {
                for bit in 0..256 {
                    let mut bad = got.clone();
                    bad[i] = flip(&bad[i], bit);
                    assert!(verify_consistency(old, new, &r1, &r2, &bad).is_err());
                }
            }
        }
    }

    #[test]
    fn errors_are_precise() {
        let t = tree_of(&data(1, 6));
        let root = t.root();
        let leaf = t.leaves()[0];
        assert_eq!(
            inclusion_proof(&t, 6, 6),
            Err(ProofError::Merkle(MerkleError::IndexOutOfRange {
                index: 6,
                tree_size: 6
            }))
        );
        assert_eq!(
            verify_inclusion(&leaf, 0, 0, &[], &empty_root()),
            Err(MerkleError::IndexOutOfRange {
                index: 0,
                tree_size: 0
            })
        );
        let p = inclusion_proof(&t, 0, 6).unwrap();
        assert_eq!(
            verify_inclusion(&leaf, 0, 6, &p[..2], &root),
            Err(MerkleError::WrongProofLength {
                expected: 3,
                actual: 2
            })
        );
        let mut long = p.clone();
        long.push(root);
        assert_eq!(
            verify_inclusion(&leaf, 0, 6, &long, &root),
            Err(MerkleError::WrongProofLength {
                expected: 3,
                actual: 4
            })
        );
        assert!(matches!(
            verify_inclusion(&leaf, 0, 6, &p, &empty_root()),
            Err(MerkleError::RootMismatch { tree_size: 6, .. })
        ));

        for (old, new) in [(0, 0), (0, 5), (4, 3)] {
            let bad = MerkleError::BadSizes {
                old_size: old,
                new_size: new,
            };
            assert_eq!(
                consistency_proof(&t, old, new),
                Err(ProofError::Merkle(bad.clone()))
            );
            assert_eq!(verify_consistency(old, new, &root, &root, &[]), Err(bad));
        }
        assert_eq!(consistency_proof(&t, 6, 6), Ok(vec![]));
        verify_consistency(6, 6, &root, &root, &[]).unwrap();
        assert_eq!(
            verify_consistency(6, 6, &root, &root, &[root]),
            Err(MerkleError::WrongProofLength {
                expected: 0,
                actual: 1
            })
        );
        assert!(matches!(
            verify_consistency(6, 6, &root, &empty_root(), &[]),
            Err(MerkleError::RootMismatch { .. })
        ));
        let r3 = root_at(&t, 3).unwrap();
        assert!(matches!(
            verify_consistency(3, 6, &r3, &root, &[]),
            Err(MerkleError::WrongProofLength { actual: 0, .. })
        ));
        let c = consistency_proof(&t, 3, 6).unwrap();
        assert!(matches!(
            verify_consistency(3, 6, &root, &root, &c),
            Err(MerkleError::RootMismatch { tree_size: 3, .. })
        ));
        assert!(matches!(
            verify_consistency(3, 6, &r3, &r3, &c),
            Err(MerkleError::RootMismatch { tree_size: 6, .. })
        ));

        assert_eq!(
            subtree_root(&t, 4, 2),
            Err(ProofError::Merkle(MerkleError::BadRange {
                start: 4,
                end: 2
            }))
        );
        assert_eq!(subtree_root(&t, 3, 3), Ok(empty_root()));
        // Beyond the stored tree: the source's own error.
        assert_eq!(
            root_at(&t, 8),
            Err(ProofError::Source(MissingNode { level: 3, index: 0 }))
        );
        assert!(inclusion_proof(&t, 0, 7).is_err());
        assert!(consistency_proof(&t, 2, 7).is_err());
    }

    #[test]
    fn frontier_shape_is_checked() {
        let d = data(3, 11);
        let mut f = Frontier::new();
        for x in &d {
            f.append(leaf_hash(x));
        }
        assert_eq!(f.size(), 11);
        assert_eq!(f.hashes().len(), 3);
        let g = Frontier::from_parts(11, f.hashes().to_vec()).unwrap();
        assert_eq!(g, f);
        assert_eq!(
            Frontier::from_parts(12, f.hashes().to_vec()),
            Err(MerkleError::FrontierShape {
                size: 12,
                expected: 2,
                actual: 3
            })
        );
        assert_eq!(
            Frontier::from_parts(0, vec![]).unwrap().root(),
            empty_root()
        );

        let json = serde_json::to_string(&f).unwrap();
        let back: Frontier = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
        let bad = json.replace("\"size\":11", "\"size\":12");
        assert_ne!(bad, json);
        assert!(serde_json::from_str::<Frontier>(&bad).is_err());

        // A full tree refuses to grow rather than wrap around.
        let mut full = Frontier::from_parts(u64::MAX, vec![Digest::default(); 64]).unwrap();
        let before = full.clone();
        assert!(full.append(leaf_hash(&[])).is_empty());
        assert_eq!(full, before);
    }

    #[test]
    fn aligned_ranges_cost_few_lookups() {
        use std::cell::Cell;
        struct Counting<'a>(&'a MemoryTree, Cell<usize>);
        impl NodeSource for Counting<'_> {
            type Error = MissingNode;
            fn node(&self, level: u32, index: u64) -> Result<Digest, MissingNode> {
                self.1.set(self.1.get() + 1);
                self.0.node(level, index)
            }
        }
        let t = tree_of(&data(9, 1000));
        let c = Counting(&t, Cell::new(0));
        root_at(&c, 512).unwrap();
        assert_eq!(c.1.get(), 1);
        c.1.set(0);
        root_at(&c, 1000).unwrap();
        assert_eq!(c.1.get(), 1000u64.count_ones() as usize);
        c.1.set(0);
        let p = inclusion_proof(&c, 777, 1000).unwrap();
        assert!(c.1.get() <= 2 * 64, "{}", c.1.get());
        assert_eq!(p.len(), inclusion_proof_len(777, 1000));
    }

    // ---- Properties against the reference.

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// At every size 1..=n: the frontier's root, the reference MTH and
        /// the root computed from stored nodes of the *full* tree agree, and
        /// each append reports exactly the perfect nodes it completed.
        #[test]
        fn roots_agree_at_every_size(n in 1usize..300, seed in any::<u64>()) {
            let d = data(seed, n);
            let full = tree_of(&d);
            let mut f = Frontier::new();
            let mut reported = 0usize;
            for (size, x) in d.iter().enumerate() {
                let done = f.append(leaf_hash(x));
                prop_assert_eq!(done.len(), 1 + (size as u64).trailing_ones() as usize);
                for (level, index, hash) in &done {
                    let w = 1usize << level;
                    let i = *index as usize;
                    prop_assert_eq!(*hash, r_mth(&d[i * w..(i + 1) * w]));
                    prop_assert_eq!((i + 1) * w, size + 1);
                }
                reported += done.len();
                let want = r_mth(&d[..=size]);
                prop_assert_eq!(f.root(), want);
                prop_assert_eq!(root_at(&full, size as u64 + 1).unwrap(), want);
                prop_assert_eq!(f.size(), size as u64 + 1);
                prop_assert_eq!(f.hashes().len(), (size as u64 + 1).count_ones() as usize);
            }
            // Every perfect node of the tree, reported once each.
            let all: usize = (0..64).map(|l| n >> l).sum();
            prop_assert_eq!(reported, all);
            prop_assert_eq!(&full.frontier, &f);
            prop_assert_eq!(full.root(), r_mth(&d));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn inclusion_proofs_match_and_only_they_verify(
            n in 1usize..300,
            seed in any::<u64>(),
            a in any::<usize>(),
            b in any::<usize>(),
            bit in 0usize..256,
        ) {
            let d = data(seed, n);
            let full = tree_of(&d);
            let size = 1 + a % n;
            let index = b % size;
            let (size64, index64) = (size as u64, index as u64);
            let root = r_mth(&d[..size]);
            let leaf = leaf_hash(&d[index]);

            let proof = inclusion_proof(&full, index64, size64).unwrap();
            prop_assert_eq!(&proof, &r_path(index, &d[..size]));
            prop_assert_eq!(verify_inclusion(&leaf, index64, size64, &proof, &root), Ok(()));

            // Any single-bit flip in any element.
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i] = flip(&bad[i], bit + i);
                prop_assert!(verify_inclusion(&leaf, index64, size64, &bad, &root).is_err());
            }
            // Wrong leaf, wrong root.
            prop_assert!(verify_inclusion(&flip(&leaf, bit), index64, size64, &proof, &root).is_err());
            prop_assert!(verify_inclusion(&leaf, index64, size64, &proof, &flip(&root, bit)).is_err());
            // Every wrong index in the same tree, and out of range.
            for j in 0..size64 {
                if j != index64 {
                    prop_assert!(verify_inclusion(&leaf, j, size64, &proof, &root).is_err());
                }
            }
            let r = verify_inclusion(&leaf, size64, size64, &proof, &root);
            prop_assert!(matches!(r, Err(MerkleError::IndexOutOfRange { .. })), "{r:?}");
            // Every wrong size, each with that size's own root. (With the
            // original root a different size can have the same path shape and
            // verify: the size is bound by the signed checkpoint, not the
            // proof.)
            for s in (index + 1)..=n {
                if s != size {
                    let rs = root_at(&full, s as u64).unwrap();
                    prop_assert!(verify_inclusion(&leaf, index64, s as u64, &proof, &rs).is_err());
                }
            }
            // Truncated, extended.
            if !proof.is_empty() {
                let short = &proof[..proof.len() - 1];
                let r = verify_inclusion(&leaf, index64, size64, short, &root);
                prop_assert!(matches!(r, Err(MerkleError::WrongProofLength { .. })), "{r:?}");
            }
            let mut long = proof.clone();
            long.push(root);
            let r = verify_inclusion(&leaf, index64, size64, &long, &root);
            prop_assert!(matches!(r, Err(MerkleError::WrongProofLength { .. })), "{r:?}");
        }

        #[test]
        fn consistency_proofs_match_and_only_they_verify(
            n in 1usize..300,
            seed in any::<u64>(),
            a in any::<usize>(),
            b in any::<usize>(),
            bit in 0usize..256,
        ) {
            let d = data(seed, n);
            let full = tree_of(&d);
            let new = 1 + a % n;
            let old = 1 + b % new;
            let (old64, new64) = (old as u64, new as u64);
            let r1 = r_mth(&d[..old]);
            let r2 = r_mth(&d[..new]);

            let proof = consistency_proof(&full, old64, new64).unwrap();
            prop_assert_eq!(&proof, &r_proof(old, &d[..new]));
            prop_assert_eq!(verify_consistency(old64, new64, &r1, &r2, &proof), Ok(()));

            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i] = flip(&bad[i], bit + i);
                prop_assert!(verify_consistency(old64, new64, &r1, &r2, &bad).is_err());
            }
            prop_assert!(verify_consistency(old64, new64, &flip(&r1, bit), &r2, &proof).is_err());
            prop_assert!(verify_consistency(old64, new64, &r1, &flip(&r2, bit), &proof).is_err());
            if old != new {
                prop_assert!(verify_consistency(old64, new64, &r2, &r1, &proof).is_err());
                let short = &proof[..proof.len() - 1];
                let r = verify_consistency(old64, new64, &r1, &r2, short);
                prop_assert!(matches!(r, Err(MerkleError::WrongProofLength { .. })), "{r:?}");
            }
            let mut long = proof.clone();
            long.push(r1);
            let r = verify_consistency(old64, new64, &r1, &r2, &long);
            prop_assert!(matches!(r, Err(MerkleError::WrongProofLength { .. })), "{r:?}");
            // Every wrong old size and every wrong new size, each with its
            // own true root.
            for o in 1..=new {
                if o != old {
                    let ro = root_at(&full, o as u64).unwrap();
                    prop_assert!(verify_consistency(o as u64, new64, &ro, &r2, &proof).is_err());
                }
            }
            for s in old..=n {
                if s != new {
                    let rs = root_at(&full, s as u64).unwrap();
                    prop_assert!(verify_consistency(old64, s as u64, &r1, &rs, &proof).is_err());
                }
            }

            // A fork: one leaf before `old` differs. Neither history's proof
            // links the honest old root to the forked new root.
            let mut forked = d.clone();
            let j = b % old;
            forked[j][0] ^= 1;
            let ft = tree_of(&forked);
            let fr2 = root_at(&ft, new64).unwrap();
            prop_assert_ne!(fr2, r2);
            let fproof = consistency_proof(&ft, old64, new64).unwrap();
            prop_assert!(verify_consistency(old64, new64, &r1, &fr2, &fproof).is_err());
            prop_assert!(verify_consistency(old64, new64, &r1, &fr2, &proof).is_err());
        }
    }
}
