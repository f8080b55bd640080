"""Prediction and evaluation of a model: generated replies with their metrics, and benchmarks.

:mod:`~lmforge.predict.generate` runs ``do_predict`` through a serving engine,
:mod:`~lmforge.predict.metrics` scores replies (BLEU-4, ROUGE), :mod:`~lmforge.predict.perplexity`
gives loss and perplexity, and :mod:`~lmforge.predict.mcq` scores multiple-choice benchmarks
(``lmforge eval``).
"""
