"""Run chunk encoding in forked worker processes (``preprocessing_num_workers``).

Workers are forked so they inherit the tokenizer, template and records without pickling
them (a large vocabulary takes longer to pickle than to encode a chunk): each process is
started with the work function itself, which a forked child needs no pickling for, and deals
with every ``workers``-th item. Only the small flat result arrays travel back, each over its
worker's own pipe. Where ``fork`` is unavailable the items run in this process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def map_in_processes(work: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[work(item) for item in items]`` across ``workers`` forked processes, in order.

    An exception in a worker (a ``DataError`` under ``strict``, say) is raised here.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        logger.info("this platform cannot fork; encoding in one process")
        return [work(item) for item in items]
    context = multiprocessing.get_context("fork")
    results: dict[int, R] = {}
    pipes: dict[Connection, BaseProcess] = {}
    with _single_threaded_tokenizers():
        for rank in range(workers):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_serve, args=(work, items, range(rank, len(items), workers), sender)
            )
            process.start()
            sender.close()
            pipes[receiver] = process
    try:
        while pipes:
            for ready in wait(list(pipes)):
                assert isinstance(ready, Connection)
                try:
                    index, result, error = ready.recv()
                except EOFError:  # the worker is done (or died: then its items are missing below)
                    pipes.pop(ready).join()
                    ready.close()
                    continue
                if error is not None:
                    raise error
                results[index] = result
    finally:
        for receiver, unfinished in pipes.items():
            unfinished.terminate()
            unfinished.join()
            receiver.close()
    if len(results) != len(items):
        raise RuntimeError(
            f"an encoding worker process ended early: {len(items) - len(results)} chunks are missing"
        )
    return [results[i] for i in range(len(items))]


def _serve(work: Callable[[T], R], items: Sequence[T], indices: range, sender: Connection) -> None:
    """A worker: ``work`` each of ``indices`` and send ``(index, result, None)`` back, or the error."""
    try:
        for index in indices:
            sender.send((index, work(items[index]), None))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent, which raises it
        try:
            sender.send((None, None, exc))
        except Exception:  # the exception itself does not pickle: send its text
            sender.send((None, None, RuntimeError(f"{type(exc).__name__}: {exc}")))
    finally:
        sender.close()


@contextmanager
def _single_threaded_tokenizers() -> Iterator[None]:
    """Each worker encodes single-threaded; saying so before the fork avoids the tokenizers fork warning."""
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
