"""Exact and near duplicates of code: normalised hashes, shingles, MinHash and LSH (chapter 7).

Codex deduplicated its GitHub files; so does chapter 7, in two passes: *exact* duplicates (the
same file after normalising whitespace) and *near* duplicates (Jaccard similarity of token
5-gram shingles above a threshold, found with MinHash signatures and LSH bands instead of
comparing every pair).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = [
    "normalize_code",
    "exact_duplicates",
    "code_tokens",
    "shingles",
    "jaccard",
    "shingle_hashes",
    "minhash_permutations",
    "minhash_signature",
    "minhash_jaccard",
    "lsh_bands",
    "MinHashIndex",
    "near_duplicates",
    "duplicates_to_drop",
    "remove_overlap",
]


# ---- exact and near duplicates -------------------------------------------------------

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WHITESPACE = re.compile(r"\s+")
#: The Mersenne prime 2**31 - 1: MinHash's hash functions are ``h -> (a * h + b) mod P``, with
#: ``a, b < P``; the product stays below 2**62, so numpy's uint64 arithmetic is exact.
_MERSENNE_PRIME = np.uint64((1 << 31) - 1)


def normalize_code(source: str) -> str:
    """Whitespace-insensitive form for exact deduplication: every run of whitespace -> one space."""
    return _WHITESPACE.sub(" ", source).strip()


def exact_duplicates(files: dict[str, str]) -> list[list[str]]:
    """Groups (size >= 2) of files whose :func:`normalize_code` text is identical.

    Files are grouped by the SHA-256 of the normalised text; each group lists names in sorted
    order, and the groups are sorted by their first name.
    """
    groups: dict[str, list[str]] = {}
    for name in sorted(files):
        digest = hashlib.sha256(normalize_code(files[name]).encode("utf-8")).hexdigest()
        groups.setdefault(digest, []).append(name)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def code_tokens(source: str) -> list[str]:
    """Words and single punctuation marks: ``"x = f(a)"`` -> ``['x', '=', 'f', '(', 'a', ')']``."""
    return _TOKEN.findall(source)


def shingles(source: str, k: int = 5) -> set[tuple[str, ...]]:
    """The set of ``k``-token shingles (windows of ``k`` consecutive :func:`code_tokens`).

    A text shorter than ``k`` tokens gives one shingle, all of its tokens (none if empty).
    """
    if k < 1:
        raise ValueError(f"shingle size k must be >= 1, got {k}")
    tokens = code_tokens(source)
    if len(tokens) < k:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + k]) for i in range(len(tokens) - k + 1)}


def jaccard(a: set, b: set) -> float:
    """``|A ∩ B| / |A ∪ B|``; 1.0 for two empty sets."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _hash32(token: str) -> int:
    # crc32 is deterministic across processes (Python's hash() of a str is not).
    return zlib.crc32(token.encode("utf-8"))


def _mix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: scrambles every input bit into every output bit."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> np.uint64(33))


def shingle_hashes(source: str, k: int = 5) -> np.ndarray:
    """The distinct 32-bit hashes of the ``k``-shingles of ``source`` (uint64 array, sorted).

    Each token is hashed with crc32; a shingle's hash is a polynomial in its tokens' hashes
    (mod 2**64), scrambled by a finaliser (a polynomial alone is linear, and MinHash needs
    hashes that look random), keeping the top 32 bits. Equal shingles get equal hashes;
    distinct shingles collide rarely (about n²/2**33 pairs among n shingles).
    """
    tokens = code_tokens(source)
    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    token_hash = {t: _hash32(t) for t in set(tokens)}
    th = np.array([token_hash[t] for t in tokens], dtype=np.uint64)
    k = min(k, len(th))
    n = len(th) - k + 1
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):  # h = sum_j th[i + j] * 1000003**(k - 1 - j)  (mod 2**64)
            h = h * np.uint64(1_000_003) + th[j : j + n]
    return np.unique(_mix64(h) >> np.uint64(32))


def minhash_permutations(num_perm: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``num_perm`` random hash functions ``h -> (a * h + b) mod P``, ``P = 2**31 - 1``: arrays ``a,
    b``.

    With ``a`` in [1, P) and ``b`` in [0, P), each function is a random permutation of the
    numbers 0..P-1 (P is prime), which is what MinHash needs: a random order of all shingles.
    ``a`` must be drawn from the whole range: a small ``a`` would keep small hashes small, and
    the minimum would be the same shingle for every function. Same seed, same functions.
    """
    rng = np.random.default_rng(seed)
    p = int(_MERSENNE_PRIME)
    a = rng.integers(1, p, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, p, size=num_perm, dtype=np.uint64)
    return a, b


def minhash_signature(hashes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signature: for each hash function, the minimum over the set's hashes.

    For two sets A, B and one random hash function, P[min h(A) == min h(B)] = J(A, B): the
    smallest element of A ∪ B is equally likely to be any of them, and the minima agree
    exactly when it lies in A ∩ B. So the share of equal entries of two signatures estimates
    the Jaccard similarity, with standard error sqrt(J (1 - J) / num_perm).
    An empty set gets the all-max signature.
    """
    if hashes.size == 0:
        return np.full(a.shape, np.iinfo(np.uint64).max, dtype=np.uint64)
    sig = np.full(a.shape, np.iinfo(np.uint64).max, dtype=np.uint64)
    hashes = hashes % _MERSENNE_PRIME  # into 0..P-1, the domain of the permutations
    for chunk in range(0, hashes.size, 4096):  # bounded memory: (4096, num_perm) at a time
        h = hashes[chunk : chunk + 4096, None]
        sig = np.minimum(sig, ((a * h + b) % _MERSENNE_PRIME).min(axis=0))
    return sig


def minhash_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """The Jaccard estimate of two signatures: the share of positions where they agree."""
    return float(np.mean(sig_a == sig_b))


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """Choose ``(bands, rows)`` with ``bands * rows <= num_perm`` for an LSH threshold.

    Two sets with Jaccard ``s`` share at least one band (become candidates) with probability
    ``1 - (1 - s**rows)**bands``, an S-curve whose steep part is near ``(1/bands)**(1/rows)``.
    We pick the split whose curve best separates ``s < threshold`` (false positives, only
    extra work: candidates are verified) from ``s >= threshold`` (false negatives, missed
    duplicates, weighted 3x), by numerical integration as in the ``datasketch`` package.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    s_lo, s_hi = np.linspace(0, threshold, 200), np.linspace(threshold, 1, 200)
    best, best_cost = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        rows = num_perm // bands
        false_pos = np.trapezoid(1 - (1 - s_lo**rows) ** bands, s_lo)
        false_neg = np.trapezoid((1 - s_hi**rows) ** bands, s_hi)
        cost = false_pos + 3 * false_neg
        if cost < best_cost:
            best, best_cost = (bands, rows), cost
    return best


@dataclass
class MinHashIndex:
    """MinHash signatures of named documents, with the LSH band buckets that find candidates.

    Build with :meth:`build`; :meth:`candidate_pairs` lists pairs sharing a band bucket,
    :meth:`similarity` estimates the Jaccard similarity of two names.
    """

    names: list[str]
    signatures: np.ndarray  # (len(names), num_perm) uint64
    bands: int
    rows: int
    sizes: np.ndarray  # number of distinct shingles per document

    @classmethod
    def build(
        cls,
        files: dict[str, str],
        threshold: float = 0.8,
        num_perm: int = 128,
        shingle: int = 5,
        seed: int = 0,
    ) -> MinHashIndex:
        a, b = minhash_permutations(num_perm, seed)
        names = sorted(files)
        sigs, sizes = [], []
        for name in names:
            hashes = shingle_hashes(files[name], shingle)
            sigs.append(minhash_signature(hashes, a, b))
            sizes.append(hashes.size)
        bands, rows = lsh_bands(threshold, num_perm)
        signatures = np.stack(sigs) if sigs else np.zeros((0, num_perm), dtype=np.uint64)
        return cls(names, signatures, bands, rows, np.array(sizes))

    def candidate_pairs(self) -> set[tuple[int, int]]:
        """Index pairs ``(i, j)``, ``i < j``, whose signatures agree on a whole band."""
        pairs: set[tuple[int, int]] = set()
        for band in range(self.bands):
            cols = slice(band * self.rows, (band + 1) * self.rows)
            buckets: dict[bytes, list[int]] = {}
            for i, row in enumerate(self.signatures[:, cols]):
                if self.sizes[i]:  # empty documents are nobody's duplicate
                    buckets.setdefault(row.tobytes(), []).append(i)
            for members in buckets.values():
                for x in range(len(members)):
                    for y in range(x + 1, len(members)):
                        pairs.add((members[x], members[y]))
        return pairs

    def similarity(self, i: int, j: int) -> float:
        return minhash_jaccard(self.signatures[i], self.signatures[j])


def _clusters(n: int, edges) -> list[list[int]]:
    """Connected components (size >= 2) of a graph on ``range(n)``, by union-find."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in edges:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def near_duplicates(
    files: dict[str, str],
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle: int = 5,
    seed: int = 0,
) -> list[list[str]]:
    """Clusters of near-duplicate files: MinHash over token shingles, LSH banding.

    1. Each file becomes the set of its ``shingle``-token windows (:func:`shingles`), hashed.
    2. A MinHash signature of ``num_perm`` minima summarises each set (:func:`minhash_signature`).
    3. LSH: the signature is cut into bands (:func:`lsh_bands`); files that agree on a whole band
       are candidates, so we never compare all n² pairs.
    4. A candidate pair is kept if its estimated Jaccard similarity is >= ``threshold``.
    5. Kept pairs are joined into clusters (connected components; similarity is not
       transitive, so a cluster can hold a chain A~B~C with A, C less similar).

    Returns the clusters (size >= 2), names sorted within each, clusters sorted by first name.
    To deduplicate, keep one file per cluster: :func:`duplicates_to_drop` drops all but the
    first name. Deterministic for a given ``seed``.
    """
    index = MinHashIndex.build(files, threshold, num_perm, shingle, seed)
    edges = [
        (i, j) for i, j in sorted(index.candidate_pairs()) if index.similarity(i, j) >= threshold
    ]
    clusters = [sorted(index.names[i] for i in c) for c in _clusters(len(index.names), edges)]
    return sorted(clusters, key=lambda c: c[0])


def duplicates_to_drop(clusters: list[list[str]]) -> set[str]:
    """All names of each cluster except its first (the one kept)."""
    return {name for cluster in clusters for name in cluster[1:]}


def remove_overlap(
    train: dict[str, str],
    test: dict[str, str],
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle: int = 5,
    seed: int = 0,
) -> dict[str, str]:
    """``test`` without the files that are (near-)duplicates of a ``train`` file.

    Held-out data must be new: a validation file that is a copy of a training file measures
    memory, not generalisation. Names present in both dicts are renamed internally.
    """
    both = {("train", k): v for k, v in train.items()} | {("test", k): v for k, v in test.items()}
    keyed = {f"{side}\0{k}": v for (side, k), v in both.items()}
    drop = set()
    for cluster in near_duplicates(keyed, threshold, num_perm, shingle, seed):
        if any(c.startswith("train\0") for c in cluster):
            drop |= {c.split("\0", 1)[1] for c in cluster if c.startswith("test\0")}
    return {k: v for k, v in test.items() if k not in drop}
