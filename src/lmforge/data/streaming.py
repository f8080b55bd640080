"""``streaming: true``: encode records lazily while training reads them, for files too large to prepare first.

JSON lines and text files are read line by line; other files are read whole and then
iterated. Nothing is cached, counts are not known ahead, and ``val_size`` must be a count
(the first N samples become the eval set). Drops are still counted and logged when the
stream ends; ``strict`` still stops at the first bad record.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

from lmforge.data.encode import EncodeSettings, encode_chunk
from lmforge.data.formats import check_columns, detect_format, make_converter
from lmforge.data.readers import stream_rows
from lmforge.data.report import DataReport, DatasetReport
from lmforge.data.selection import mix
from lmforge.data.spec import DatasetSpec
from lmforge.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def encoded_stream(
    spec: DatasetSpec,
    tokenizer: Any,
    template: Any,
    settings: EncodeSettings,
    batch_size: int,
    max_samples: int | None,
    report: DatasetReport,
    hub: dict[str, Any],
) -> Iterator[dict[str, list[int]]]:
    """Encoded samples of one dataset, produced a chunk at a time."""
    rows = stream_rows(spec, **hub)
    convert = None
    buffer: list[tuple[str, dict[str, Any]]] = []

    def flush() -> Iterator[dict[str, list[int]]]:
        nonlocal convert, spec
        if convert is None:
            columns = list(dict.fromkeys(key for _, row in buffer for key in row))
            spec = detect_format(spec, columns, buffer[0][1])
            check_columns(spec, columns)
            convert = make_converter(spec)
        places = [where for where, _ in buffer]
        out = encode_chunk(
            [row for _, row in buffer],
            range(len(buffer)),
            convert=convert,
            template=template,
            tokenizer=tokenizer,
            settings=settings,
            locate=places.__getitem__,
            dataset=spec.name,
        )
        report.records += len(buffer)
        report.truncated += out.truncated
        report.merge_drops(out.dropped, out.first_dropped)
        start = 0
        for length in out.lengths.tolist():
            stop = start + length
            report.samples += 1
            yield {"input_ids": out.ids[start:stop].tolist(), "labels": out.labels[start:stop].tolist()}
            start = stop
        buffer.clear()

    for count, item in enumerate(rows):
        if max_samples is not None and count >= max_samples:
            break
        buffer.append(item)
        if len(buffer) >= batch_size:
            yield from flush()
    if buffer:
        yield from flush()
    if report.dropped:
        logger.warning(
            "streaming dataset '%s': dropped %d records (%s)",
            spec.name,
            report.dropped_total,
            ", ".join(f"{n} {r}" for r, n in report.dropped.items()),
        )


_STREAMS: dict[str, dict[str, Any]] = {}


def _stream_by_key(key: str) -> Iterator[dict[str, list[int]]]:
    yield from encoded_stream(**_STREAMS[key])


def load_streaming(
    config: Any,
    tokenizer: Any,
    template: Any,
    settings: EncodeSettings,
    train_specs: list[DatasetSpec],
    eval_specs: list[DatasetSpec],
    seed: int,
) -> Any:
    """A :class:`~lmforge.data.loader.DatasetBundle` of ``datasets.IterableDataset``s."""
    import datasets

    from lmforge.data.loader import DatasetBundle, _hub_kwargs

    data = config.data
    if data.val_size and data.val_size < 1:
        raise ConfigError(
            "with streaming, config key 'val_size' must be a sample count (a whole number), not a fraction"
        )
    hub = _hub_kwargs(config)
    report = DataReport(streaming=True)

    def build(spec: DatasetSpec, split: str) -> datasets.IterableDataset:
        if spec.num_samples is not None:
            raise DataError(
                f"{spec.describe()}: num_samples draws a random subset, which needs streaming: false"
            )
        part = DatasetReport(name=spec.name, split=split)
        report.datasets.append(part)
        key = uuid.uuid4().hex
        _STREAMS[key] = {
            "spec": spec,
            "tokenizer": tokenizer,
            "template": template,
            "settings": settings,
            "batch_size": max(1, data.preprocessing_batch_size),
            "max_samples": data.max_samples,
            "report": part,
            "hub": hub,
        }
        # Only the key goes through datasets (which hashes its arguments: hashing a tokenizer takes seconds).
        return datasets.IterableDataset.from_generator(_stream_by_key, gen_kwargs={"key": key})

    train_parts = [build(spec, "train") for spec in train_specs]
    eval_parts = [build(spec, "eval") for spec in eval_specs]
    train = mix(train_parts, data.mix_strategy, data.interleave_probs, seed) if train_parts else None
    evaluation = mix(eval_parts, "concat", None, seed) if eval_parts else None
    if train is not None and data.val_size:
        n_eval = int(data.val_size)
        train, evaluation = train.skip(n_eval), train.take(n_eval)
    return DatasetBundle(train, evaluation, report)
