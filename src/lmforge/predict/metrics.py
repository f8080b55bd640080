"""BLEU-4 and ROUGE-1/2/L of generated replies against their references, in percent.

Both texts are cut into words by jieba, which keeps runs of Latin letters and digits whole
(English words) and segments Chinese into dictionary words, so one rule serves both
languages. BLEU-4 is NLTK's sentence BLEU with smoothing method 3 (NIST geometric), ROUGE
is rouge-chinese's F score; each is averaged over the samples, as LLaMA-Factory reports them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from lmforge.errors import ConfigError

METRIC_NAMES = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")
MISSING_HELP = "generation metrics need nltk, jieba and rouge-chinese; install them with `pip install 'lmforge[metrics]'`"


def _libraries() -> tuple[Any, Any, Any]:
    try:
        import jieba
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
        from rouge_chinese import Rouge
    except ImportError as exc:
        raise ConfigError(f"{MISSING_HELP} (missing: {exc.name})") from None
    jieba.setLogLevel(logging.WARNING)  # it logs the dictionary load at INFO
    return jieba, (sentence_bleu, SmoothingFunction().method3), Rouge()


def metric_libraries_missing() -> str | None:
    """Why BLEU/ROUGE cannot be computed here (a one-line install hint), or None when they can."""
    try:
        _libraries()
    except ConfigError as exc:
        return str(exc)
    return None


def words(text: str) -> list[str]:
    """The words BLEU and ROUGE count: jieba's segments without the whitespace between them."""
    jieba, _, _ = _libraries()
    return [w for w in jieba.lcut(text) if w.strip()]


def sample_scores(prediction: str, reference: str) -> dict[str, float]:
    """The four scores of one reply, in percent; 0 when either text has no words."""
    _, (bleu, smoothing), rouge = _libraries()
    hyp, ref = words(prediction), words(reference)
    if not hyp or not ref:
        return dict.fromkeys(METRIC_NAMES, 0.0)
    rouge_scores = rouge.get_scores(" ".join(hyp), " ".join(ref))[0]
    return {
        "bleu-4": 100 * float(bleu([ref], hyp, smoothing_function=smoothing)),
        "rouge-1": 100 * rouge_scores["rouge-1"]["f"],
        "rouge-2": 100 * rouge_scores["rouge-2"]["f"],
        "rouge-l": 100 * rouge_scores["rouge-l"]["f"],
    }


def corpus_scores(pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    """Each score averaged over ``(prediction, reference)`` pairs, rounded to 4 places."""
    totals = dict.fromkeys(METRIC_NAMES, 0.0)
    count = 0
    for prediction, reference in pairs:
        for name, value in sample_scores(prediction, reference).items():
            totals[name] += value
        count += 1
    return {name: round(total / count, 4) if count else 0.0 for name, total in totals.items()}
