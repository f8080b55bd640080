"""Datasets, in the order a training sample passes through them (docs/data.md):

1. ``registry.py``: a dataset name (or path) -> :class:`DatasetSpec`, its files and its format;
2. ``records.py``: its files -> :class:`Records` (rows) -> Conversations (:func:`make_converter`);
3. ``encoding.py``: Conversations -> ids and labels, a chunk at a time (:func:`encode_chunk`),
   truncated, with a :class:`DatasetReport` of what was dropped;
4. ``loader.py``: :func:`load_sft_datasets` runs 1-3 per dataset, caches the result, mixes the
   datasets and splits off the eval set;
5. ``batching.py``: packing and the training collator.

``streaming.py`` (``streaming: true``), ``parallel.py`` (``preprocessing_num_workers``),
``preference.py`` (dpo, rm, kto) and ``preview.py`` (``lmforge data preview``) branch off it.
"""

from lmforge.data.encoding import DataReport, DatasetBundle, DatasetReport, EncodeSettings, encode_chunk
from lmforge.data.loader import encode_dataset, load_sft_datasets
from lmforge.data.records import BadRecord, Records, make_converter, read_records
from lmforge.data.registry import (
    Columns,
    DatasetSpec,
    Tags,
    check_columns,
    detect_format,
    load_dataset_info,
    resolve_datasets,
)

__all__ = [
    "BadRecord",
    "Columns",
    "DataReport",
    "DatasetBundle",
    "DatasetReport",
    "DatasetSpec",
    "EncodeSettings",
    "Records",
    "Tags",
    "check_columns",
    "detect_format",
    "encode_chunk",
    "encode_dataset",
    "load_dataset_info",
    "load_sft_datasets",
    "make_converter",
    "read_records",
    "resolve_datasets",
]
