"""Precomputed reference log-probabilities, cached beside the encoded datasets, so a rerun skips the reference.

``precompute_ref_log_probs`` runs the reference once over each dataset. The result depends on
two things only, and the cache key names both:

- **the reference**: its model (``ref_model``, else ``model_name_or_path``: the folder's weight
  files by name, size and modification time, or the hub id and revision), its adapters
  (``ref_model_adapters``, else ``adapter_name_or_path``: their files' bytes), how it is built
  (adapter off, SFT adapter or frozen copy), quantization and dtype;
- **the data**: the datasets, template and ``cutoff_len`` named in the config, and a digest of
  the very token ids and labels the reference reads (so a different encoding, split, sample
  selection or KTO pairing is a different entry).

An entry is a folder under the datasets cache (``<cache>/datasets/reference/<key>``) holding
the value columns as an arrow dataset and ``report.json`` (what the key was made of). It is
written under a temporary name and renamed into place, so a killed run leaves no half entry;
``overwrite_cache: true`` recomputes and replaces it. ``train_from_scratch`` (random weights,
never the same twice) is never cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset

from lmforge.config import Config
from lmforge.data.loader import datasets_cache_root, file_digest, quiet_datasets, write_entry
from lmforge.model.loader import model_path
from lmforge.train.reference import reference_kind

if TYPE_CHECKING:
    import pyarrow as pa
    import torch

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the layout of an entry or the meaning of its values changes
REPORT_FILE = "report.json"
DATA_DIR = "data"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".model")


@dataclass
class ReferenceCache:
    """One run's reference cache: the parts of every key that do not depend on the dataset."""

    identity: dict[str, Any]  # the reference and the data settings
    reads: tuple[str, ...]  # the columns the reference reads (their content enters the key)
    refresh: bool = False  # overwrite_cache: recompute, then replace the entry

    @classmethod
    def for_run(
        cls, config: Config, dtype: torch.dtype, *, stage: str, reads: tuple[str, ...]
    ) -> ReferenceCache | None:
        """The cache for this run's reference; None where its outputs cannot be reproduced."""
        if config.model.train_from_scratch:
            return None
        data = config.data
        identity = {
            "format": CACHE_FORMAT,
            "stage": stage,
            "reference": reference_identity(config, dtype),
            "data": {
                "dataset": data.dataset,
                "eval_dataset": data.eval_dataset,
                "template": data.template,
                "cutoff_len": data.cutoff_len,
            },
        }
        return cls(identity, reads, refresh=data.overwrite_cache)

    def key(self, dataset: Dataset) -> str:
        parts = {**self.identity, "content": content_digest(dataset, self.reads)}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def load(self, dataset: Dataset) -> dict[str, list[float]] | None:
        """The cached value columns of ``dataset`` (one value per row), or None to compute them."""
        if self.refresh:
            return None
        folder = entry_folder(self.key(dataset))
        if not ((folder / REPORT_FILE).is_file() and (folder / DATA_DIR).is_dir()):
            return None
        import datasets

        with quiet_datasets():
            values = datasets.load_from_disk(str(folder / DATA_DIR))
        if len(values) != len(dataset):
            return None
        logger.info("reference log-probabilities of %d rows read from the cache (%s)", len(values), folder)
        return values.to_dict()

    def store(self, dataset: Dataset, columns: dict[str, list[float]]) -> None:
        key = self.key(dataset)
        report = {**self.identity, "rows": len(dataset), "columns": sorted(columns)}
        write_entry(entry_folder(key), Dataset.from_dict(columns), report)


def entry_folder(key: str) -> Path:
    return datasets_cache_root() / "reference" / key


def reference_identity(config: Config, dtype: torch.dtype) -> dict[str, Any]:
    """What the reference's log-probabilities depend on (see the module docstring)."""
    finetuning, model_args = config.finetuning, config.model
    kind = reference_kind(config)
    if finetuning.ref_model:
        path, adapters = finetuning.ref_model, finetuning.ref_model_adapters
        bits = finetuning.ref_model_quantization_bit
    else:
        path, adapters, bits = (
            model_path(model_args),
            model_args.adapter_name_or_path,
            model_args.quantization_bit,
        )
    return {
        "kind": kind,
        "model": folder_fingerprint(path, model_args.model_revision),
        "adapters": [adapter_fingerprint(adapter) for adapter in adapters or []],
        "quantization_bit": bits,
        "dtype": str(dtype),
        "pissa_init": finetuning.pissa_init if kind == "adapter_off" else None,  # PiSSA changes the base
    }


def folder_fingerprint(path: str, revision: str) -> dict[str, Any]:
    """A model folder's weight and config files by name, size and modification time (reading
    gigabytes of weights would cost more than the pass it saves); a hub id by id and revision."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return {"hub_id": path, "revision": revision}
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    return {
        "path": str(folder.resolve()),
        "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files],
    }


def adapter_fingerprint(path: str) -> dict[str, Any]:
    """An adapter folder by its files' bytes (adapters are small; a retrained one in the same folder differs)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return {"hub_id": path}
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith("adapter_"))
    return {"path": str(folder.resolve()), "files": [(p.name, file_digest(p)) for p in files]}


def content_digest(dataset: Dataset, columns: tuple[str, ...]) -> str:
    """A digest of ``columns`` of every row, in order (token ids, labels, media references)."""
    h = hashlib.sha256()
    present = [name for name in columns if name in dataset.column_names]
    h.update(json.dumps([present, len(dataset)]).encode())
    for table in dataset.select_columns(present).with_format("arrow").iter(batch_size=4096):
        for name in present:
            _update(h, table.column(name).combine_chunks())
    return h.hexdigest()


def _update(h: Any, array: pa.Array) -> None:
    import pyarrow as pa

    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        h.update(array.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).tobytes())
        _update(h, array.flatten())
    elif pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        h.update("\0".join(str(v) for v in array.to_pylist()).encode())
    else:
        h.update(array.to_numpy(zero_copy_only=False).tobytes())
