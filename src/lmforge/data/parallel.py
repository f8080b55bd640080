"""Run chunk encoding in forked worker processes (``preprocessing_num_workers``).

Workers are forked so they inherit the tokenizer, template and records without pickling
them (a large vocabulary takes longer to pickle than to encode a chunk). Only the small
flat result arrays travel back. Where ``fork`` is unavailable the chunks run in this
process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_WORK: Callable[[Any], Any] | None = None
_ITEMS: Sequence[Any] = ()


def _run(index: int) -> Any:
    assert _WORK is not None
    return _WORK(_ITEMS[index])


def map_in_processes(work: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[work(item) for item in items]`` across ``workers`` forked processes, in order."""
    global _WORK, _ITEMS
    if "fork" not in multiprocessing.get_all_start_methods():
        logger.info("this platform cannot fork; encoding in one process")
        return [work(item) for item in items]
    _WORK, _ITEMS = work, items
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    # Each worker encodes single-threaded; saying so up front avoids the tokenizers fork warning.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(workers) as pool:
            if previous is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = previous
            return pool.map(_run, range(len(items)), chunksize=1)
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
        _WORK, _ITEMS = None, ()
