"""Classification: the output is a label. Accuracy, per-class precision / recall / F1, macro and micro averages, and a
confusion matrix.

Conventions (stated because libraries differ): a prediction outside the label set is wrong and counts against the
recall of the true class but against no class's precision; it appears in the confusion matrix column ``<other>``.
Precision, recall or F1 with a zero denominator is 0. Macro averages run over the classes that occur in the
references or the predictions of the data being averaged (a label nobody used says nothing about the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from api_schemas.graders import ClassificationGraderSpec, Score
from service.evaluations.graders.base import Grader, GraderConfigError, GradingError, Sample, _require_graded
from service.evaluations.graders.registry import register_grader
from service.evaluations.graders.text import normalize
from service.evaluations.stats import SufficientStatistics

OTHER = "<other>"


@register_grader
class ClassificationGrader(Grader[ClassificationGraderSpec]):
    spec_type = ClassificationGraderSpec
    description = (
        "The output is a class label: accuracy, per-class precision/recall/F1, macro and micro F1, confusion matrix."
    )
    always_binary = True
    corpus_metrics = True

    def __init__(self, spec: ClassificationGraderSpec) -> None:
        super().__init__(spec)
        # Normalised form -> label as written in the spec, so outputs like " Positive" map to "positive".
        self._canonical: dict[str, str] | None = None
        if spec.labels is not None:
            self._canonical = {}
            for label in spec.labels:
                key = normalize(label, spec.normalization)
                if key in self._canonical:
                    raise GraderConfigError(
                        f"labels {self._canonical[key]!r} and {label!r} are equal after normalisation"
                    )
                self._canonical[key] = label

    def _label(self, text: str) -> str | None:
        key = normalize(text, self.spec.normalization)
        if self._canonical is None:
            return key
        return self._canonical.get(key)

    def _grade(self, sample: Sample) -> Score:
        refs = sample.references
        if len(refs) != 1:
            raise GradingError(f"classification needs exactly one reference label, the sample has {len(refs)}")
        true = self._label(refs[0])
        if true is None:
            raise GradingError(f"reference label {refs[0]!r} is not one of the grader's labels")
        predicted = self._label(sample.output or "")
        correct = predicted == true
        return Score(
            value=1.0 if correct else 0.0,
            passed=correct,
            details={"label": true, "predicted": predicted, "output": (sample.output or "")[:200]},
        )

    # -- aggregates ---------------------------------------------------------------------------------------------------

    def label_set(self, scores: Sequence[Score]) -> list[str]:
        if self.spec.labels is not None:
            return list(self.spec.labels)
        return sorted({s.details["label"] for s in scores})

    def statistics(self, scores: Sequence[Score], samples: Sequence[Sample]) -> SufficientStatistics:
        """Rows: one-hot true label (L), one-hot predicted label (L, zero for <other>), one-hot correct (L), correct,
        1. Every metric below is a function of their sums."""
        _require_graded(scores, samples)
        labels = self.label_set(scores)
        index = {label: i for i, label in enumerate(labels)}
        n, n_labels = len(scores), len(labels)
        rows = np.zeros((n, 3 * n_labels + 2))
        for r, s in enumerate(scores):
            t = index[s.details["label"]]
            rows[r, t] = 1
            p = index.get(s.details["predicted"]) if s.details["predicted"] is not None else None
            if p is not None:
                rows[r, n_labels + p] = 1
            if s.passed:
                rows[r, 2 * n_labels + t] = 1
                rows[r, 3 * n_labels] = 1
        rows[:, -1] = 1
        return SufficientStatistics(rows, _classification_metrics(n_labels))

    def extras(self, scores: Sequence[Score], samples: Sequence[Sample]) -> dict[str, Any]:
        labels = self.label_set(scores)
        index = {label: i for i, label in enumerate(labels)}
        matrix = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
        for s in scores:
            predicted = s.details["predicted"]
            col = index.get(predicted, len(labels)) if predicted is not None else len(labels)
            matrix[index[s.details["label"]], col] += 1
        support = matrix.sum(axis=1)
        predicted_count = matrix[:, : len(labels)].sum(axis=0)
        tp = np.diag(matrix[:, : len(labels)])
        per_class = {}
        for i, label in enumerate(labels):
            p = _safe_div(tp[i], predicted_count[i])
            r = _safe_div(tp[i], support[i])
            per_class[label] = {
                "precision": p,
                "recall": r,
                "f1": _safe_div(2 * p * r, p + r),
                "support": int(support[i]),
                "predicted": int(predicted_count[i]),
            }
        return {
            "per_class": per_class,
            "confusion_matrix": {
                "labels": labels,
                "predicted_labels": [*labels, OTHER],
                "matrix": matrix.tolist(),
                "note": "rows are reference labels, columns predicted labels",
            },
        }


def _safe_div(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def _classification_metrics(n_labels: int) -> dict[str, Any]:
    def parts(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        support = sums[:, :n_labels]
        predicted = sums[:, n_labels : 2 * n_labels]
        tp = sums[:, 2 * n_labels : 3 * n_labels]
        return support, predicted, tp

    def div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)

    def per_class(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        support, predicted, tp = parts(sums)
        precision = div(tp, predicted)
        recall = div(tp, support)
        f1 = div(2 * precision * recall, precision + recall)
        present = (support + predicted) > 0
        return precision, recall, f1, present

    def macro(which: int):
        def fn(sums: np.ndarray) -> np.ndarray:
            values = per_class(sums)
            present = values[3]
            return div((values[which] * present).sum(axis=1), present.sum(axis=1).astype(np.float64))

        return fn

    def micro_f1(sums: np.ndarray) -> np.ndarray:
        support, predicted, tp = parts(sums)
        p = div(tp.sum(axis=1), predicted.sum(axis=1))
        r = div(tp.sum(axis=1), support.sum(axis=1))
        return div(2 * p * r, p + r)

    def accuracy(sums: np.ndarray) -> np.ndarray:
        return sums[:, 3 * n_labels] / sums[:, 3 * n_labels + 1]

    return {
        "accuracy": accuracy,
        "macro_precision": macro(0),
        "macro_recall": macro(1),
        "macro_f1": macro(2),
        "micro_f1": micro_f1,
    }
