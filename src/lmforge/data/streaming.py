"""``streaming: true``: encode records lazily while training reads them, for files too large to prepare first.

JSON lines and text files are read line by line; other files are read whole and then
iterated. Nothing is cached, counts are not known ahead, and ``val_size`` must be a count
(the loader makes the first N samples the eval set). Drops are still counted and logged when
the stream ends; ``strict`` still stops at the first bad record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.data.encoding import DataReport, DatasetReport, EncodeSettings, encode_chunk
from lmforge.data.records import Part, make_converter, read_file, read_records
from lmforge.data.registry import DatasetSpec, check_columns, data_files, detect_format, hub_options
from lmforge.errors import DataError

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from lmforge.config import Config
    from lmforge.templates import ChatTemplate

logger = logging.getLogger(__name__)


def stream_datasets(
    config: Config,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate | None,
    settings: EncodeSettings,
    train_specs: list[DatasetSpec],
    eval_specs: list[DatasetSpec],
) -> tuple[list[datasets.IterableDataset], list[datasets.IterableDataset], DataReport]:
    """One ``datasets.IterableDataset`` per train and eval dataset, and the report their streams fill."""
    # why: datasets and pyarrow load only when data is read or built, not on import
    import datasets

    data = config.data
    hub = hub_options(config)
    report = DataReport(streaming=True)

    def build(spec: DatasetSpec, split: str) -> datasets.IterableDataset:
        if spec.num_samples is not None:
            raise DataError(
                f"{spec.describe()}: num_samples draws a random subset, which needs streaming: false"
            )
        part = DatasetReport(name=spec.name, split=split)
        report.datasets.append(part)
        stream = {
            "spec": spec,
            "tokenizer": tokenizer,
            "template": template,
            "settings": settings,
            "batch_size": max(1, data.preprocessing_batch_size),
            "max_samples": data.max_samples,
            "report": part,
            "hub": hub,
        }
        # The arguments travel with the dataset (no registry on the side); datasets hashes them once
        # per stream, about a second for a large vocabulary.
        return datasets.IterableDataset.from_generator(encoded_stream, gen_kwargs=stream)

    return (
        [build(spec, "train") for spec in train_specs],
        [build(spec, "eval") for spec in eval_specs],
        report,
    )


def encoded_stream(
    spec: DatasetSpec,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate | None,
    settings: EncodeSettings,
    batch_size: int,
    max_samples: int | None,
    report: DatasetReport,
    hub: dict[str, str | None],
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


# ---------------------------------------------------------------- rows


def stream_rows(spec: DatasetSpec, **hub_kwargs: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows one at a time with their location, reading JSON lines and text lazily (``streaming: true``)."""
    if spec.source != "file":
        records = read_records(spec, **hub_kwargs)
        for i, row in enumerate(_iter_part(records.parts[0])):
            yield records.locate(i), row
        return
    for path in data_files(spec):
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".txt"):
            yield from _stream_lines(path, suffix)
        else:
            part = read_file(path, spec)
            for i, row in enumerate(_iter_part(part)):
                yield f"{path}, record {i}", row


def _iter_part(part: Part) -> Iterator[dict[str, Any]]:
    if isinstance(part.rows, list):
        yield from part.rows
    else:
        for batch in part.rows.to_batches(max_chunksize=1000):
            yield from batch.to_pylist()


def _stream_lines(path: Path, suffix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8-sig") as handle:
        index = 0
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if suffix == ".txt":
                    row: Any = {"text": line.rstrip("\n")}
                else:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(
                            f"{path}: invalid JSON at line {number}, column {exc.colno}: {exc.msg}"
                        ) from None
                    if not isinstance(row, dict):
                        raise DataError(
                            f"{path}, line {number}: expected a JSON object, got {type(row).__name__}"
                        )
                yield f"{path}, record {index} (line {number})", row
                index += 1
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
