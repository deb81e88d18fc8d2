"""Average precision and ROC AUC of link predictions, in numpy.

Both take scores (any monotone function of the probability, logits included) and 0/1 labels.
Tied scores count as one threshold, as scikit-learn does: AP is the sum over thresholds of
precision times the recall gained; AUC is the chance that a random positive outscores a
random negative, ties counting one half.

Examples
--------
>>> average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
0.8333333333333333
>>> roc_auc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
0.75
"""

from __future__ import annotations

import numpy as np

from tgpipe.errors import InputError

__all__ = ["average_precision", "roc_auc"]


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise InputError(f"{len(scores)} scores for {len(labels)} labels")
    if not np.isin(labels, (0, 1)).all():
        raise InputError("labels must be 0 or 1")
    if np.isnan(scores).any():
        raise InputError("scores contain NaN")
    positives = int(labels.sum())
    if positives in (0, len(labels)):
        raise InputError("AP and AUC need both positive and negative labels")
    return scores, labels.astype(np.int64)


def average_precision(scores, labels) -> float:
    """Area under the precision-recall steps, one step per distinct score."""
    scores, labels = _check(scores, labels)
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # end of each tie group
    true_pos = np.cumsum(labels)[last]
    precision = true_pos / (last + 1)
    recall = true_pos / true_pos[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def roc_auc(scores, labels) -> float:
    """Mann-Whitney statistic: mean rank of the positives, ties given their average rank."""
    scores, labels = _check(scores, labels)
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # 1-based average
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
