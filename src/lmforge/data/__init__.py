"""Datasets: registry (dataset_info.json) -> reader -> format converter -> Conversation -> encoded ids.

The entry point is :func:`load_sft_datasets`. The layers below it are public too, for
``lmforge data preview/stats`` and tests: :func:`resolve_datasets` (names or paths to
:class:`DatasetSpec`), :func:`read_records` (rows), :func:`make_converter` (row to
Conversation) and :func:`encode_chunk`.
"""

from lmforge.data.encode import EncodeSettings, encode_chunk
from lmforge.data.formats import BadRecord, check_columns, detect_format, make_converter
from lmforge.data.loader import DatasetBundle, encode_dataset, load_sft_datasets
from lmforge.data.readers import Records, read_records
from lmforge.data.registry import load_dataset_info, resolve_datasets
from lmforge.data.report import DataReport, DatasetReport
from lmforge.data.spec import Columns, DatasetSpec, Tags

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
