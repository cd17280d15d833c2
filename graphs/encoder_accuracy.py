"""How close a reduced-precision encoder is to its reference, sentence by sentence (numpy only).

    agreement("sentence-similarity", expected, actual, mask)
      -> Agreement(cosines=array([0.9993, 0.9987, ...]), labels=0, label_changes=0)       # one cosine per row

What is compared, per task (`expected`/`actual`: {output name: array} of one padded batch, `mask` its
attention_mask, `focus` the positions that count for per-token heads, default the real tokens):

    feature-extraction, sentence-similarity   mean-pooled last_hidden_state over real tokens (what
                                              sentence-transformers' mean pooling computes): cosine
    text-classification                       the row's logits: cosine (reported), and the argmax label
    token-classification, fill-mask           the logits at the focus positions (fill-mask: the masked ones),
                                              flattened: cosine; argmax label of each position
    question-answering                        start and end logits over the real tokens: cosine of the two
                                              concatenated; argmax start and argmax end

What must hold (`Agreement.passes`): embeddings, the cosine; heads, the labels.
The same function serves the int8 guard (fp32 graph vs quantized graph) and `validate` (eager vs artifact).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EMBEDDING_TASKS = ("feature-extraction", "sentence-similarity")
# A label change where the reference's own probabilities for the two labels are this close is a tie, not an error:
# any rounding flips it (a 2-label head at 0.505 / 0.495). Counted apart as `tied_changes`.
TIE = 0.01


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@dataclass
class Agreement:
    """Per-row cosines and label counts over any number of batches (`extend` adds one)."""

    cosines: list[float] = field(default_factory=list)
    labels: int = 0
    label_changes: int = 0  # changes of a label the reference prefers by more than TIE
    tied_changes: int = 0  # changes between labels within TIE in the reference
    changed_rows: list[int] = field(default_factory=list)  # row indices (in `extend` order) with a changed label
    expected_labels: list[int] = field(default_factory=list)  # every compared label, in order
    actual_labels: list[int] = field(default_factory=list)

    @property
    def worst_cosine(self) -> float:
        return float(min(self.cosines)) if self.cosines else float("nan")

    @property
    def mean_cosine(self) -> float:
        return float(np.mean(self.cosines)) if self.cosines else float("nan")

    @property
    def worst_row(self) -> int:
        return int(np.argmin(self.cosines)) if self.cosines else -1

    def extend(self, other: Agreement) -> None:
        offset = len(self.cosines)
        self.cosines += other.cosines
        self.labels += other.labels
        self.label_changes += other.label_changes
        self.tied_changes += other.tied_changes
        self.changed_rows += [offset + i for i in other.changed_rows]
        self.expected_labels += other.expected_labels
        self.actual_labels += other.actual_labels

    def passes(self, min_cosine: float, task: str) -> bool:
        """Embeddings: every row's cosine >= min_cosine. Heads: every label unchanged (their logits cosine is
        reported, not judged: a head with small, close logits, say a 2-label one near a tie, has a low logits
        cosine while its answers stay the same; the pipelines' scores are judged by `validate`)."""
        if task in EMBEDDING_TASKS:
            return self.worst_cosine >= min_cosine and self.label_changes == 0
        return self.label_changes == 0


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    if denominator == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(a @ b / denominator)


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[batch, seq, hidden] x [batch, seq] -> [batch, hidden]: the mean over real tokens."""
    weights = mask[..., None].astype(np.float64)
    return (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)


def agreement(task: str, expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], mask: np.ndarray,
              focus: np.ndarray | None = None) -> Agreement:
    mask = mask.astype(bool)
    focus = mask if focus is None else focus.astype(bool) & mask
    result = Agreement()
    if task in EMBEDDING_TASKS:
        name = "last_hidden_state" if "last_hidden_state" in expected else next(iter(expected))
        e, a = mean_pool(expected[name], mask), mean_pool(actual[name], mask)
        result.cosines = [cosine(x, y) for x, y in zip(e, a)]
        return result
    for row in range(mask.shape[0]):
        e_parts, a_parts, e_labels, a_labels, ties = [], [], [], [], []
        for name, e in expected.items():
            a = actual[name]
            if e.ndim >= 2 and e.shape[1] == mask.shape[1]:  # per token: [batch, seq] or [batch, seq, labels]
                where = focus[row] if e.ndim == 3 else mask[row]
                e_row, a_row = e[row][where], a[row][where]
                if e.ndim == 3:
                    scored = [(e_row, a_row)]
                elif e_row.size:  # QA start/end: the argmax position over the sequence
                    scored = [(e_row[None], a_row[None])]
                else:
                    scored = []
            else:  # per sequence: [batch, labels]
                e_row, a_row = e[row], a[row]
                scored = [(e_row[None], a_row[None])]
            for e_logits, a_logits in scored:  # [n, labels] each
                want, got = e_logits.argmax(-1), a_logits.argmax(-1)
                probs = softmax(e_logits.astype(np.float64))
                rows = np.arange(len(want))
                e_labels += want.tolist()
                a_labels += got.tolist()
                ties += (probs[rows, want] - probs[rows, got] <= TIE).tolist()
            e_parts.append(e_row.ravel())
            a_parts.append(a_row.ravel())
        result.cosines.append(cosine(np.concatenate(e_parts), np.concatenate(a_parts)))
        changed = [x != y for x, y in zip(e_labels, a_labels)]
        result.labels += len(e_labels)
        result.label_changes += sum(c and not t for c, t in zip(changed, ties))
        result.tied_changes += sum(c and t for c, t in zip(changed, ties))
        result.expected_labels += e_labels
        # a change between two labels the reference itself rates within TIE is not counted: carry the expected one
        result.actual_labels += [x if c and t else y for x, y, c, t in zip(e_labels, a_labels, changed, ties)]
        if any(c and not t for c, t in zip(changed, ties)):
            result.changed_rows.append(row)
    return result
