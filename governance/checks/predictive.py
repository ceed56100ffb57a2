"""How well a set of columns predicts a target, and the fewest columns that do as well.

The single-column scores in ``leakage`` miss a label spread over several
columns (in RAND HIE, ``binexp`` is 1 exactly when ``outpdol + drugdol +
suppdol + inpdol > 0``, yet no one of them reaches AUC 0.98). Here
gradient-boosted trees (scikit-learn's ``HistGradientBoosting``) are fitted on
a bounded sample of rows, cross-fitted in two folds so that every sampled row
is scored by a model that never saw it. The minimal set is found greedily:
candidates ranked by permutation importance in the full model, added one at a
time until the set makes no more mistakes than all columns together, then
pruned of any member it does not need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import balanced_accuracy_score, r2_score, roc_auc_score
from threadpoolctl import threadpool_limits

# HistGradientBoosting bins every feature into at most 255 values; a category
# with more distinct values is passed as its (arbitrary) code instead.
MAX_CATEGORIES = 255
# Trees small and few: the question is whether the label is (almost) a function
# of the columns, which shallow boosting answers, not how well a tuned model does.
_MAX_ITER = 25
_LEARNING_RATE = 0.3
# Rare combinations (53 RAND rows have supplies as their only spending) must
# still get a leaf of their own, or a column that decides them looks unneeded.
_MIN_SAMPLES_LEAF = 5
# A set "does as well" as all columns when its out-of-fold mistakes exceed the
# full model's by at most this share, so noise in refitting does not keep a
# column; regression also allows this share of the target's variance, since
# near-perfect fits differ by rounding-sized errors.
_SLACK = 0.02
_VARIANCE_SLACK = 1e-3
# Forward selection tries only the columns whose shuffling hurts the full model most.
_CANDIDATES = 8


class Task(StrEnum):
    binary = "binary"
    multiclass = "multiclass"
    regression = "regression"


METRIC = {
    Task.binary: "ROC AUC",
    Task.multiclass: "balanced accuracy",
    Task.regression: "R^2",
}


@dataclass(frozen=True)
class Target:
    """What is predicted: 0/1 (binary), a class index (multiclass) or a number (regression)."""

    name: str
    task: Task
    values: np.ndarray


@dataclass(frozen=True)
class Fit:
    """Out-of-fold quality of one column set: the score and the mistakes it makes."""

    columns: tuple[str, ...]
    score: float  # ROC AUC, balanced accuracy or R^2 (see ``METRIC``)
    mistakes: float  # misclassified rows, or the sum of squared errors


@dataclass(frozen=True)
class Explanation:
    """The full model's fit, and the fewest columns found that do as well."""

    full: Fit
    minimal: Fit
    complete: bool  # False when no set within the size limit did as well


class Predictability:
    """Cross-fitted boosted trees over one design matrix, cached per column set.

    ``design`` maps each column to its values at the sampled rows (float, NaN
    for missing); ``categorical`` names those holding category codes.
    """

    def __init__(
        self,
        design: Mapping[str, np.ndarray],
        categorical: Sequence[str],
        target: Target,
        seed: int,
    ) -> None:
        self._design = dict(design)
        self._categorical = set(categorical)
        self.target = target
        self._seed = seed
        rng = np.random.default_rng(seed)
        self._folds = rng.integers(0, 2, size=len(target.values))
        self._cache: dict[tuple[str, ...], tuple[Fit, np.ndarray, list]] = {}

    def fit(self, columns: Sequence[str]) -> Fit:
        return self._fitted(tuple(columns))[0]

    def explain(self, columns: Sequence[str], max_size: int) -> Explanation:
        """The full fit of ``columns`` and a minimal subset that makes no more mistakes."""
        full = self.fit(columns)
        budget = full.mistakes * (1 + _SLACK)
        if self.target.task is Task.regression:
            y = self.target.values
            budget += _VARIANCE_SLACK * float(np.sum((y - y.mean()) ** 2))
        order = list(columns)
        chosen: list[str] = []
        candidates = self._ranked(tuple(columns))[: max(_CANDIDATES, max_size)]
        best = None
        while candidates and len(chosen) < max_size:
            trials = [self.fit(sorted([*chosen, c], key=order.index)) for c in candidates]
            best = min(trials, key=lambda f: (f.mistakes, -f.score))
            added = next(c for c in best.columns if c not in chosen)
            chosen.append(added)
            candidates.remove(added)
            if best.mistakes <= budget:
                break
        if best is None or best.mistakes > budget:
            return Explanation(full, best or full, complete=False)
        for column in list(chosen):  # prune: forward steps can leave a member redundant
            rest = [c for c in chosen if c != column]
            if rest and self.fit(sorted(rest, key=order.index)).mistakes <= budget:
                chosen = rest
        return Explanation(full, self.fit(sorted(chosen, key=order.index)), complete=True)

    def _ranked(self, columns: tuple[str, ...]) -> list[str]:
        """Columns by how much shuffling each raises the full model's out-of-fold mistakes."""
        fit, _, models = self._fitted(columns)
        rng = np.random.default_rng(self._seed + 1)
        gains = {}
        with threadpool_limits(limits=1, user_api="openmp"):
            for i, column in enumerate(columns):
                gains[column] = self._permuted_mistakes(columns, models, i, rng) - fit.mistakes
        return sorted((c for c in columns if gains[c] > 0), key=lambda c: -gains[c])

    def _permuted_mistakes(
        self, columns: tuple[str, ...], models: list, i: int, rng: np.random.Generator
    ) -> float:
        """Out-of-fold mistakes with column ``i`` shuffled within each scored fold."""
        predictions = np.empty(len(self.target.values))
        for fold, model in enumerate(models):
            rows = self._folds == fold
            x = self._matrix(columns, rows)
            x[:, i] = rng.permutation(x[:, i])
            predictions[rows] = _predict(model, x, self.target.task)
        return _mistakes(self.target, predictions)

    def _fitted(self, columns: tuple[str, ...]) -> tuple[Fit, np.ndarray, list]:
        if columns not in self._cache:
            # One thread: the sample is small, and OpenMP threads on a busy
            # machine cost 10-50x more than they save (measured on 2 shared cores).
            with threadpool_limits(limits=1, user_api="openmp"):
                self._cache[columns] = self._fit_folds(columns)
        return self._cache[columns]

    def _fit_folds(self, columns: tuple[str, ...]) -> tuple[Fit, np.ndarray, list]:
        predictions = np.empty(len(self.target.values))
        models = []
        for fold in (0, 1):
            learn, score = self._folds != fold, self._folds == fold
            model = _model(self.target.task, self._mask(columns), self._seed)
            model.fit(self._matrix(columns, learn), self.target.values[learn])
            predictions[score] = _predict(model, self._matrix(columns, score), self.target.task)
            models.append(model)
        fit = Fit(
            columns,
            _score(self.target, predictions),
            _mistakes(self.target, predictions),
        )
        return fit, predictions, models

    def _matrix(self, columns: tuple[str, ...], rows: np.ndarray) -> np.ndarray:
        return np.column_stack([self._design[c][rows] for c in columns])

    def _mask(self, columns: tuple[str, ...]) -> np.ndarray:
        return np.array([c in self._categorical for c in columns])


def _model(task: Task, categorical: np.ndarray, seed: int):
    regression = task is Task.regression
    kind = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
    return kind(
        max_iter=_MAX_ITER,
        learning_rate=_LEARNING_RATE,
        min_samples_leaf=_MIN_SAMPLES_LEAF,
        early_stopping=False,
        categorical_features=categorical if categorical.any() else None,
        random_state=seed,
    )


def _predict(model, x: np.ndarray, task: Task) -> np.ndarray:
    """P(positive) for binary, the class for multiclass, the value for regression."""
    if task is Task.binary:
        return model.predict_proba(x)[:, 1]
    return model.predict(x)


def _score(target: Target, predictions: np.ndarray) -> float:
    y = target.values
    if target.task is Task.binary:
        return float(roc_auc_score(y, predictions))
    if target.task is Task.multiclass:
        return float(balanced_accuracy_score(y, predictions))
    return float(r2_score(y, predictions))


def _mistakes(target: Target, predictions: np.ndarray) -> float:
    y = target.values
    if target.task is Task.binary:
        return float(np.sum((predictions >= 0.5) != (y == 1)))
    if target.task is Task.multiclass:
        return float(np.sum(predictions != y))
    return float(np.sum((predictions - y) ** 2))
