"""BLEU and chrF through sacreBLEU.

Each sample keeps sacreBLEU's sufficient statistics (n-gram match counts, lengths) in ``details["stats"]``. The
corpus score is sacreBLEU's formula on their sums, which is exactly what ``corpus_score`` computes, and the stored
counts let aggregates and bootstrap intervals be recomputed from saved results without tokenising again. This uses
sacreBLEU's ``_extract_corpus_statistics`` / ``_compute_score_from_stats``, the hooks its own significance tests use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sacrebleu.metrics.base import Metric
from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.chrf import CHRF

from api_schemas.graders import BleuGraderSpec, ChrfGraderSpec, Score
from service.evaluations.graders.base import Grader, GradingError, Sample, _require_graded
from service.evaluations.graders.registry import register_grader
from service.evaluations.stats import SufficientStatistics


class _SacrebleuGrader(Grader[Any]):
    corpus_metrics = True
    metric_name: str
    # The metric whose formula turns summed statistics into the corpus score.
    _corpus: Metric
    # The metric for one sentence (BLEU needs effective order there).
    _sentence: Metric

    def _stats(self, sample: Sample) -> list[float]:
        refs = sample.references
        if any(not isinstance(r, str) for r in refs):
            raise GradingError("references must be text")
        return self._corpus._extract_corpus_statistics([sample.output or ""], [[r] for r in refs])[0]

    def _grade(self, sample: Sample) -> Score:
        stats = self._stats(sample)
        value = float(self._sentence._compute_score_from_stats(list(stats)).score)
        return Score(value=value, passed=self._threshold(value), details={"stats": [int(x) for x in stats]})

    def corpus_score(self, stats_sum: Sequence[float]) -> float:
        return float(self._corpus._compute_score_from_stats([float(x) for x in stats_sum]).score)

    def statistics(self, scores: Sequence[Score], samples: Sequence[Sample]) -> SufficientStatistics:
        """Columns: sacreBLEU's per-sentence statistics, then value, count (and passed when binary). Metrics: the
        corpus score under ``metric_name``, the mean sentence score, and the pass rate when binary."""
        _require_graded(scores, samples)
        stats = np.array([s.details["stats"] for s in scores], dtype=np.float64)
        values = np.array([s.value for s in scores], dtype=np.float64)
        k = stats.shape[1]
        columns = [stats, values[:, None], np.ones((len(scores), 1))]
        metrics: dict[str, Any] = {
            self.metric_name: lambda sums: np.array([self.corpus_score(row[:k]) for row in sums]),
            "sentence_mean": lambda sums: sums[:, k] / sums[:, k + 1],
        }
        if self.is_binary:
            columns.append(np.array([[1.0 if s.passed else 0.0] for s in scores]))
            metrics["pass_rate"] = lambda sums: sums[:, k + 2] / sums[:, k + 1]
        return SufficientStatistics(np.hstack(columns), metrics)

    def extras(self, scores: Sequence[Score], samples: Sequence[Sample]) -> dict[str, Any]:
        total = np.sum([s.details["stats"] for s in scores], axis=0)
        # sacreBLEU's signature records the reference count; -1 is its mark for "varies by segment".
        ref_counts = {len(s.references) for s in samples}
        self._corpus.num_refs = ref_counts.pop() if len(ref_counts) == 1 else -1
        return {"signature": str(self._corpus.get_signature()), "corpus_detail": self._detail(total)}

    def _detail(self, total: np.ndarray) -> dict[str, Any]:
        return {}


@register_grader
class BleuGrader(_SacrebleuGrader):
    spec_type = BleuGraderSpec
    description = "sacreBLEU BLEU (0-100): corpus BLEU as the aggregate, sentence BLEU with effective order per sample."
    metric_name = "bleu"

    def __init__(self, spec: BleuGraderSpec) -> None:
        super().__init__(spec)
        common = {
            "lowercase": spec.lowercase,
            "tokenize": spec.tokenize,
            "smooth_method": spec.smooth_method,
            "smooth_value": spec.smooth_value,
        }
        # force: outputs are not pre-tokenised corpora, so sacreBLEU's tokenised-period warning does not apply.
        self._corpus = BLEU(**common, force=True)
        self._sentence = BLEU(**common, force=True, effective_order=True)

    def _detail(self, total: np.ndarray) -> dict[str, Any]:
        score = self._corpus._compute_score_from_stats([float(x) for x in total])
        return {
            "precisions": [round(float(p), 4) for p in score.precisions],
            "bp": round(float(score.bp), 4),
            "sys_len": int(score.sys_len),
            "ref_len": int(score.ref_len),
        }


@register_grader
class ChrfGrader(_SacrebleuGrader):
    spec_type = ChrfGraderSpec
    description = "sacreBLEU chrF / chrF++ (0-100): corpus score as the aggregate, sentence score per sample."
    metric_name = "chrf"

    def __init__(self, spec: ChrfGraderSpec) -> None:
        super().__init__(spec)
        self._corpus = CHRF(
            char_order=spec.char_order,
            word_order=spec.word_order,
            beta=spec.beta,
            lowercase=spec.lowercase,
            whitespace=spec.whitespace,
        )
        self._sentence = self._corpus
