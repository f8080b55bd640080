"""``load_sft_datasets``: from config to encoded train/eval ``datasets.Dataset``s, cached on disk.

Per dataset: resolve its registration, hash its files with the tokenizer, template and
settings into a cache key; on a hit, memory-map the cached arrow data. Otherwise read the
records, convert them to Conversations, encode them in chunks (across
``preprocessing_num_workers`` processes when set), truncate to ``cutoff_len``, and save.
Then mix the datasets and split off ``val_size``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.data import cache
from lmforge.data.encode import ChunkOutput, EncodeSettings, encode_chunk
from lmforge.data.formats import check_columns, detect_format, make_converter
from lmforge.data.preference import (
    PREFERENCE_STAGES,
    assemble_preference,
    check_preference_settings,
    check_preference_spec,
    encode_preference_chunk,
)
from lmforge.data.readers import Records, data_files, read_records
from lmforge.data.registry import resolve_datasets
from lmforge.data.report import DataReport, DatasetReport
from lmforge.data.selection import mix, select_indices, split_eval
from lmforge.data.spec import DatasetSpec
from lmforge.errors import ConfigError, DataError
from lmforge.media.samples import MEDIA_COLUMN
from lmforge.templates.results import IGNORE_INDEX

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

STAGES = ("sft", "pt", *PREFERENCE_STAGES)


@dataclass
class DatasetBundle:
    """The encoded train and eval sets (``input_ids``, ``labels``) and what happened on the way."""

    train: datasets.Dataset | datasets.IterableDataset | None
    eval: datasets.Dataset | datasets.IterableDataset | None
    report: DataReport


def encode_settings(data_args: Any, stage: str) -> EncodeSettings:
    if stage not in STAGES:
        raise ConfigError(f"stage '{stage}': datasets can be prepared for {' or '.join(STAGES)}")
    if data_args.train_on_prompt and data_args.mask_history:
        raise ConfigError("config keys 'train_on_prompt' and 'mask_history' cannot both be true; keep one")
    return EncodeSettings(
        stage=stage,
        cutoff_len=data_args.cutoff_len,
        train_on_prompt=data_args.train_on_prompt,
        mask_history=data_args.mask_history,
        enable_thinking=True if data_args.enable_thinking is None else bool(data_args.enable_thinking),
        strict=data_args.strict,
    )


def training_seed(config: Any) -> int:
    return int(config.training_kwargs.get("seed", 42) or 42)


def load_sft_datasets(
    config: Any, tokenizer: Any, template: Any, stage: str = "sft", media: Any = None
) -> DatasetBundle:
    """Train and eval sets for ``stage`` (``sft``: chat samples; ``pt``: plain text, every token trained;
    ``dpo``/``rm``: preference pairs, ``kto``: tagged answers, see :mod:`lmforge.data.preference`).

    See docs/data.md for every key this reads. Raises DataError/ConfigError (one line) for
    anything the user can fix. ``media`` (a multimodal model's ``MediaProcessing``) expands
    media placeholders and keeps each sample's media in a ``media`` column.
    """
    data = config.data
    settings = encode_settings(data, stage)
    if stage != "pt" and template is None:
        raise ConfigError(
            f"config key 'template' is required for stage {stage} (`lmforge template list` shows them)"
        )
    if stage in PREFERENCE_STAGES:
        check_preference_settings(data, stage)
    if data.tokenized_path and is_saved_bundle(Path(data.tokenized_path)):
        return load_saved_bundle(Path(data.tokenized_path))
    if data.eval_dataset and data.val_size:
        raise ConfigError("config keys 'val_size' and 'eval_dataset' both choose the eval set; keep one")
    seed = training_seed(config)
    train_specs = resolve_datasets(data.dataset, data.dataset_dir, data.media_dir)
    eval_specs = resolve_datasets(data.eval_dataset, data.dataset_dir, data.media_dir)
    if not train_specs and not eval_specs:
        raise ConfigError(
            "config key 'dataset' is required: dataset names from dataset_info.json, or file paths"
        )
    if data.streaming:
        with_media = [spec.name for spec in train_specs + eval_specs if media_columns(spec)]
        if media is not None and with_media:
            raise ConfigError(
                f"streaming: true reads text only, and dataset '{with_media[0]}' has media; "
                "set streaming: false to train on its media"
            )
        from lmforge.data.streaming import load_streaming

        return load_streaming(config, tokenizer, template, settings, train_specs, eval_specs, seed)

    report = DataReport()
    hub = _hub_kwargs(config)
    train_parts = []
    for spec in train_specs:
        dataset, part_report = encode_dataset(
            spec, tokenizer, template, settings, data, seed, "train", hub, media
        )
        train_parts.append(dataset)
        report.datasets.append(part_report)
    eval_parts = []
    for spec in eval_specs:
        dataset, part_report = encode_dataset(
            spec, tokenizer, template, settings, data, seed, "eval", hub, media
        )
        eval_parts.append(dataset)
        report.datasets.append(part_report)

    train = mix(train_parts, data.mix_strategy, data.interleave_probs, seed) if train_parts else None
    evaluation = mix(eval_parts, "concat", None, seed) if eval_parts else None
    if train is not None and data.val_size:
        train, evaluation = split_eval(train, data.val_size, seed)
    report.train_samples = len(train) if train is not None else 0
    report.eval_samples = len(evaluation) if evaluation is not None else 0
    for line in report.lines():
        logger.info(line)
    for part in report.datasets:
        if part.dropped:
            logger.warning("dataset '%s': dropped %s", part.name, _drop_text(part))
    bundle = DatasetBundle(train, evaluation, report)
    if data.tokenized_path:
        save_bundle(bundle, Path(data.tokenized_path))
    return bundle


def media_columns(spec: DatasetSpec) -> list[str]:
    """The image, video and audio columns a dataset's entry names."""
    return [kind for kind in ("images", "videos", "audios") if getattr(spec.columns, kind, None)]


def _drop_text(part: DatasetReport) -> str:
    reasons = ", ".join(f"{n} {reason}" for reason, n in part.dropped.items())
    first = "; ".join(part.drop_details())
    return (
        f"{part.dropped_total} records ({reasons}); {first}; set strict: true to stop at such records instead"
    )


def _hub_kwargs(config: Any) -> dict[str, Any]:
    model = getattr(config, "model", None)
    return {"cache_dir": getattr(model, "cache_dir", None), "token": getattr(model, "hf_hub_token", None)}


# ---------------------------------------------------------------- one dataset


def dataset_cache_key(
    spec: DatasetSpec,
    tokenizer: Any,
    template: Any,
    settings: EncodeSettings,
    data_args: Any,
    seed: int,
    media: Any = None,
) -> str:
    """The cache key of ``spec`` encoded with these settings (hashes the data files' bytes)."""
    if spec.source == "file":
        files = [(str(p), cache.file_digest(p)) for p in data_files(spec)]
    else:
        files = [(spec.hub_id, spec.split, spec.subset, spec.folder)]
    return cache.make_key(
        {
            "spec": spec.fingerprint(),
            "files": files,
            "tokenizer": cache.tokenizer_fingerprint(tokenizer),
            "template": repr(template) if settings.stage != "pt" else None,
            "settings": settings.__dict__,
            "max_samples": data_args.max_samples,
            "seed": seed if spec.num_samples is not None else None,
            "media": media.fingerprint() if media is not None else None,
        }
    )


def encode_dataset(
    spec: DatasetSpec,
    tokenizer: Any,
    template: Any,
    settings: EncodeSettings,
    data_args: Any,
    seed: int,
    split: str = "train",
    hub: dict[str, Any] | None = None,
    media: Any = None,
) -> tuple[datasets.Dataset, DatasetReport]:
    """One dataset, encoded: from the cache when its key matches, else built and cached."""
    import datasets

    key = dataset_cache_key(spec, tokenizer, template, settings, data_args, seed, media)
    hit = None if data_args.overwrite_cache else cache.lookup(key)
    if hit is not None:
        report = DatasetReport(**cache.read_report(hit))
        report.split, report.cached = split, True
        return datasets.load_from_disk(str(hit / cache.DATA_DIR)), report

    records = read_records(spec, **(hub or {}))
    first_row = records.rows(range(1))[0] if len(records) else None
    spec = detect_format(spec, records.column_names, first_row)
    check_columns(spec, records.column_names)
    if settings.stage in PREFERENCE_STAGES:
        check_preference_spec(spec, settings.stage)
    indices = select_indices(len(records), spec.num_samples, data_args.max_samples, seed)
    report = DatasetReport(name=spec.name, split=split, files=records.files(), records=len(indices))
    outputs = run_chunks(
        records,
        indices,
        spec,
        tokenizer,
        template,
        settings,
        data_args.preprocessing_batch_size,
        data_args.preprocessing_num_workers,
        media,
    )
    report.stage = settings.stage
    build = assemble_preference if settings.stage in PREFERENCE_STAGES else assemble
    dataset = build(outputs, report, fingerprint=key)
    if report.samples == 0:
        raise DataError(
            f"{spec.describe()}: no sample is left of {report.records} records: {_drop_text(report)}"
        )
    path = cache.write_entry(cache.entry_dir(key), dataset, {**report.__dict__, "cached": False})
    return datasets.load_from_disk(str(path / cache.DATA_DIR)), report


def run_chunks(
    records: Records,
    indices: list[int] | range,
    spec: DatasetSpec,
    tokenizer: Any,
    template: Any,
    settings: EncodeSettings,
    batch_size: int,
    num_workers: int | None,
    media: Any = None,
) -> list[ChunkOutput]:
    """Encode ``indices`` of ``records`` chunk by chunk, in this process or in worker processes."""
    convert = make_converter(spec)
    size = max(1, batch_size)
    chunks = [indices[i : i + size] for i in range(0, len(indices), size)]

    encode = encode_preference_chunk if settings.stage in PREFERENCE_STAGES else encode_chunk

    def work(chunk: list[int] | range) -> ChunkOutput:
        return encode(
            records.rows(chunk),
            chunk,
            convert=convert,
            template=template,
            tokenizer=tokenizer,
            settings=settings,
            locate=records.locate,
            dataset=spec.name,
            media=media,
        )

    workers = min(num_workers or 1, len(chunks), os.cpu_count() or 1)
    if workers <= 1:
        return [work(chunk) for chunk in chunks]
    from lmforge.data.parallel import map_in_processes

    return map_in_processes(work, chunks, workers)


def assemble(outputs: list[ChunkOutput], report: DatasetReport, fingerprint: str = "") -> datasets.Dataset:
    """Flat chunk arrays -> one in-memory ``datasets.Dataset`` with int32 list columns."""
    import datasets
    import pyarrow as pa

    for out in outputs:
        report.truncated += out.truncated
        report.merge_drops(out.dropped, out.first_dropped)
        report.add_special_text(sum(out.special_text), out.first_special_text)
    lengths = np.concatenate([o.lengths for o in outputs]) if outputs else np.empty(0, np.int32)
    ids = np.concatenate([o.ids for o in outputs]) if outputs else np.empty(0, np.int32)
    labels = np.concatenate([o.labels for o in outputs]) if outputs else np.empty(0, np.int32)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    report.samples = len(lengths)
    report.tokens = int(len(ids))
    report.trained_tokens = int(np.count_nonzero(labels != IGNORE_INDEX))
    pa_offsets = pa.array(offsets)
    columns = {
        "input_ids": pa.ListArray.from_arrays(pa_offsets, pa.array(ids)),
        "labels": pa.ListArray.from_arrays(pa_offsets, pa.array(labels)),
    }
    schema = {
        "input_ids": datasets.List(datasets.Value("int32")),
        "labels": datasets.List(datasets.Value("int32")),
    }
    if any(o.media is not None for o in outputs):  # a multimodal model: each sample's media references
        columns[MEDIA_COLUMN] = pa.array(
            [refs for o in outputs for refs in (o.media or [[]] * len(o.lengths))], type=pa.list_(pa.string())
        )
        schema[MEDIA_COLUMN] = datasets.List(datasets.Value("string"))
    table = pa.table(columns)
    features = datasets.Features(schema)
    # An explicit fingerprint: datasets would otherwise hash the whole table (seconds for large sets).
    fingerprint = fingerprint or f"lmforge-{report.name}-{report.samples}-{report.tokens}"
    return datasets.Dataset(
        table.cast(features.arrow_schema),
        info=datasets.DatasetInfo(features=features),
        fingerprint=fingerprint,
    )


# ---------------------------------------------------------------- tokenized_path


def is_saved_bundle(path: Path) -> bool:
    return (path / cache.REPORT_FILE).is_file()


def save_bundle(bundle: DatasetBundle, path: Path) -> None:
    """Save the encoded train/eval sets to ``tokenized_path`` (temp folder, then rename)."""
    import datasets

    splits = {}
    if bundle.train is not None:
        splits["train"] = bundle.train.flatten_indices()
    if bundle.eval is not None:
        splits["validation"] = bundle.eval.flatten_indices()
    path.parent.mkdir(parents=True, exist_ok=True)
    cache.write_entry(path, datasets.DatasetDict(splits), bundle.report.to_dict())
    logger.info("saved the encoded datasets to %s (tokenized_path); later runs load them from there", path)


def load_saved_bundle(path: Path) -> DatasetBundle:
    import datasets

    logger.warning(
        "loading encoded datasets from tokenized_path %s; the dataset settings are not applied again", path
    )
    try:
        saved = datasets.load_from_disk(str(path / cache.DATA_DIR))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(
            f"tokenized_path {path}: cannot load the saved datasets ({exc}); delete the folder"
        ) from None
    report = DataReport.from_dict(cache.read_report(path))
    return DatasetBundle(saved.get("train"), saved.get("validation"), report)
