"""Extractive ranking: which transcript units carry the recording's content (LexRank over TF-IDF).

No weights to download and nothing to tune per language: TF-IDF (scikit-learn) weighs each unit's
words by how rare they are across the transcript, LexRank (Erkan & Radev, 2004) scores each unit by
how central it is in the graph of cosine similarities (power iteration with numpy), and maximal
marginal relevance picks a diverse top list, so ten near-identical sentences about one topic do not
crowd out the rest of a meeting.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

# Speech fillers and discourse words that TF-IDF would otherwise take for topic words.
SPEECH_STOP_WORDS = frozenset(
    [
        "yeah", "okay", "ok", "um", "uh", "hmm", "mm", "like", "just", "really", "think", "know",
        "mean", "gonna", "right", "actually", "basically", "kind", "sort", "thing", "things", "stuff",
        "yes", "oh", "alright", "sure", "maybe", "probably", "lot", "got", "say", "said", "going",
        "want", "don", "didn", "doesn", "isn", "wasn", "ll", "ve", "re", "let", "good", "well", "guess",
        "did", "does", "way", "bit", "pretty", "quite", "need", "use", "make", "look", "come", "go",
        "s", "t", "d", "m",
    ]
)  # fmt: skip
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS | SPEECH_STOP_WORDS)
_DAMPING = 0.85
_TOKEN = re.compile(r"(?u)\b[^\W\d_][^\W_]+\b")
# Content words from which a unit counts as fully informative (fewer damp its score).
_FULL_UNIT_WORDS = 8


def _vectorizer(ngrams: tuple[int, int] = (1, 1)) -> TfidfVectorizer:
    return TfidfVectorizer(
        lowercase=True,
        stop_words=sorted(STOP_WORDS),
        token_pattern=r"(?u)\b[^\W\d_][^\W_]+\b",
        ngram_range=ngrams,
        sublinear_tf=True,
    )


def similarity(texts: Sequence[str]) -> np.ndarray:
    """Cosine similarity between the texts' TF-IDF vectors (rows are L2-normalised)."""
    try:
        matrix = _vectorizer().fit_transform(texts)
    except ValueError:  # no words left after stop words
        return np.eye(len(texts))
    sim = (matrix @ matrix.T).toarray()
    return np.asarray(sim, dtype=np.float64)


def lexrank(sim: np.ndarray, iterations: int = 100, tolerance: float = 1e-8) -> np.ndarray:
    """Continuous LexRank: the stationary distribution of a random walk over the similarity graph."""
    n = sim.shape[0]
    if n == 0:
        return np.zeros(0)
    weights = sim.copy()
    np.fill_diagonal(weights, 0.0)
    rows = weights.sum(axis=1, keepdims=True)
    # A unit that shares no word with any other jumps uniformly (no dangling rows).
    transition = np.where(rows > 0, weights / np.where(rows > 0, rows, 1.0), 1.0 / n)
    scores = np.full(n, 1.0 / n)
    for _ in range(iterations):
        updated = (1 - _DAMPING) / n + _DAMPING * transition.T @ scores
        if np.abs(updated - scores).sum() < tolerance:
            return np.asarray(updated)
        scores = updated
    return scores


def rank(texts: Sequence[str], sim: np.ndarray | None = None) -> np.ndarray:
    """A centrality score per text (higher = more central to the whole), damped for short texts:
    "It's sitting, it's not standing" is similar to much of a meeting and says little."""
    if not texts:
        return np.zeros(0)
    sim = similarity(texts) if sim is None else sim
    substance = np.array([len(set(_TOKEN.findall(t.lower())) - STOP_WORDS) for t in texts], dtype=float)
    return np.asarray(lexrank(sim) * np.minimum(1.0, substance / _FULL_UNIT_WORDS))


def select(
    scores: np.ndarray, sim: np.ndarray, k: int, among: Sequence[int] | None = None, diversity: float = 0.5
) -> list[int]:
    """Maximal marginal relevance: up to k indices, each central and unlike those already chosen."""
    pool = list(range(len(scores)) if among is None else among)
    if not pool or k <= 0:
        return []
    top = float(max(scores[i] for i in pool)) or 1.0
    chosen: list[int] = []
    while pool and len(chosen) < k:
        best = max(
            pool,
            key=lambda i: (
                (1 - diversity) * scores[i] / top - diversity * max((sim[i, j] for j in chosen), default=0.0)
            ),
        )
        chosen.append(best)
        pool.remove(best)
    return chosen


def verbatim_ngrams(text: str, longest: int = 3) -> list[str]:
    """Word n-grams exactly as they occur (stop words inside kept, never at either end)."""
    tokens = _TOKEN.findall(text.lower())
    grams: list[str] = []
    for n in range(1, longest + 1):
        for i in range(len(tokens) - n + 1):
            window = tokens[i : i + n]
            if window[0] not in STOP_WORDS and window[-1] not in STOP_WORDS:
                grams.append(" ".join(window))
    return grams


def key_phrases(texts: Sequence[str], k: int = 8) -> list[str]:
    """The transcript's most characteristic one- to three-word phrases (summed TF-IDF weight),
    each as it occurs in the text."""
    if not texts:
        return []
    try:
        vectorizer = TfidfVectorizer(analyzer=verbatim_ngrams, sublinear_tf=True)
        matrix = vectorizer.fit_transform(texts)
    except ValueError:
        return []
    weights = np.asarray(matrix.sum(axis=0)).ravel()
    names = vectorizer.get_feature_names_out()
    # Longer phrases count a little more: "remote control" names a topic better than "remote".
    lengths = np.array([name.count(" ") + 1 for name in names])
    order = np.argsort(-(weights * (1 + 0.3 * (lengths - 1))))
    phrases: list[str] = []
    for i in order:
        name = str(names[i])
        if any(name in p or p in name for p in phrases):
            continue
        phrases.append(name)
        if len(phrases) == k:
            break
    return phrases
