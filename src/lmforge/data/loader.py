"""Step 4 of a sample's path: ``load_sft_datasets`` runs steps 1-3 per dataset, caches, mixes, splits.

Per dataset: resolve its registration (``data/registry.py``), hash its files with the tokenizer,
template and settings into a cache key; on a hit, memory-map the cached arrow data. Otherwise
read the records and convert them (``data/records.py``), keep the ones ``num_samples`` and
``max_samples`` select, encode them in chunks (``data/encoding.py``; across
``preprocessing_num_workers`` forked processes when set), and save the entry. Then mix the
datasets and split off ``val_size``. ``data/batching.py`` takes it from there.

Selection follows LLaMA-Factory: ``num_samples`` (from ``dataset_info.json``) draws a seeded random
subset of a dataset (with repeats when it asks for more than there are), then ``max_samples``
keeps the first N of what is left, then the datasets are mixed, then ``val_size`` splits off the
evaluation set.

The cache key hashes everything that changes the encoded result: the data files' bytes, the
dataset's registration, the tokenizer (its files, or its serialised form), the template, the
encoding settings and the source of the code that encodes. Entries are written to a temporary
folder and renamed into place, so a killed run never leaves a half-written entry behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

import lmforge.templates as templates_package
from lmforge.config.environment import cache_dir
from lmforge.data.encoding import (
    ChunkOutput,
    DataReport,
    DatasetBundle,
    DatasetReport,
    EncodeSettings,
    encode_chunk,
    required_template,
)
from lmforge.data.preference import (
    PREFERENCE_STAGES,
    assemble_preference,
    check_preference_spec,
    encode_preference_chunk,
)
from lmforge.data.records import Records, make_converter, open_dataset
from lmforge.data.registry import DatasetSpec, data_files, hub_options, media_columns, resolve_datasets
from lmforge.errors import ConfigError, DataError
from lmforge.media.samples import MEDIA_COLUMN
from lmforge.templates.results import IGNORE_INDEX

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from lmforge.config import Config, DataArguments
    from lmforge.media.inputs import MediaProcessing
    from lmforge.templates import ChatTemplate

logger = logging.getLogger(__name__)

STAGES = ("sft", "pt", *PREFERENCE_STAGES)
DatasetType = TypeVar("DatasetType", "datasets.Dataset", "datasets.IterableDataset")
CACHE_FORMAT = 1  # bump when the layout of an entry changes
REPORT_FILE = "report.json"
DATA_DIR = "data"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)


def encode_settings(data_args: DataArguments, stage: str) -> EncodeSettings:
    """The encoding settings of ``stage`` (cross-key rules such as train_on_prompt x mask_history are
    checked once, in ``config/rules.py``, when the config is built)."""
    if stage not in STAGES:
        raise ConfigError(f"stage '{stage}': datasets can be prepared for {' or '.join(STAGES)}")
    return EncodeSettings(
        stage=stage,
        cutoff_len=data_args.cutoff_len,
        train_on_prompt=data_args.train_on_prompt,
        mask_history=data_args.mask_history,
        enable_thinking=True if data_args.enable_thinking is None else bool(data_args.enable_thinking),
        strict=data_args.strict,
    )


def training_seed(config: Config) -> int:
    return int(config.training_kwargs.get("seed", 42) or 42)


def load_sft_datasets(
    config: Config,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate | None,
    stage: str = "sft",
    media: MediaProcessing | None = None,
    *,
    packing: bool | None = None,
) -> DatasetBundle:
    """Train and eval sets for ``stage`` (``sft``: chat samples; ``pt``: plain text, every token trained;
    ``dpo``/``rm``: preference pairs, ``kto``: tagged answers, see :mod:`lmforge.data.preference`).

    See docs/data.md for every key this reads. Raises DataError/ConfigError (one line) for
    anything the user can fix. ``media`` (a multimodal model's ``MediaProcessing``) expands
    media placeholders and keeps each sample's media in a ``media`` column. A training run
    passes ``packing`` (whether it packs): datasets whose media would not reach the model are
    then refused (None, for estimates and loss prediction, skips that check).
    """
    data = config.data
    settings = encode_settings(data, stage)
    if stage != "pt":
        required_template(template, stage)
    if data.tokenized_path and is_saved_bundle(Path(data.tokenized_path)):
        return load_saved_bundle(Path(data.tokenized_path))
    seed = training_seed(config)
    train_specs = resolve_datasets(data.dataset, data.dataset_dir, data.media_dir)
    eval_specs = resolve_datasets(data.eval_dataset, data.dataset_dir, data.media_dir)
    if not train_specs and not eval_specs:
        raise ConfigError(
            "config key 'dataset' is required: dataset names from dataset_info.json, or file paths"
        )
    if packing is not None:
        refuse_lost_media(train_specs, eval_specs, media, packing)
    if data.streaming:
        with_media = [spec.name for spec in train_specs + eval_specs if media_columns(spec)]
        if media is not None and with_media:
            raise ConfigError(
                f"streaming: true reads text only, and dataset '{with_media[0]}' has media; "
                "set streaming: false to train on its media"
            )
        # why: the line-by-line readers and lazy encoding load only for streaming: true runs
        from lmforge.data.streaming import stream_datasets

        train_streams, eval_streams, report = stream_datasets(
            config, tokenizer, template, settings, train_specs, eval_specs
        )
        train_stream = (
            mix(train_streams, data.mix_strategy, data.interleave_probs, seed) if train_streams else None
        )
        eval_stream = mix(eval_streams, "concat", None, seed) if eval_streams else None
        if train_stream is not None and data.val_size:  # a count: the first N samples become the eval set
            n_eval = int(data.val_size)
            train_stream, eval_stream = train_stream.skip(n_eval), train_stream.take(n_eval)
        return DatasetBundle(train_stream, eval_stream, report)

    report = DataReport()
    hub = hub_options(config)
    train_parts: list[datasets.Dataset] = []
    eval_parts: list[datasets.Dataset] = []
    for split, specs, parts in (("train", train_specs, train_parts), ("eval", eval_specs, eval_parts)):
        for spec in specs:
            dataset, part_report = encode_dataset(
                spec, tokenizer, template, settings, data, seed, split, hub, media
            )
            parts.append(dataset)
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


def refuse_lost_media(
    train_specs: list[DatasetSpec],
    eval_specs: list[DatasetSpec],
    media: MediaProcessing | None,
    packing: bool,
) -> None:
    """Datasets with media columns train only where their media reach the model: never with the
    pictures, videos or sounds silently left out (the model would learn answers about media it
    never saw), so a text model, a model that does not take one of their kinds, or packing refuses them."""
    for key, specs in (("dataset", train_specs), ("eval_dataset", eval_specs)):
        for spec in specs:
            kinds = media_columns(spec)
            if kinds and media is None:
                raise ConfigError(
                    f"{key} '{spec.name}' has {' and '.join(kinds)} columns, but the model takes text only "
                    f"and its media would be silently ignored; choose a multimodal model (Qwen2-VL, Qwen2.5-VL, Qwen2.5-Omni, "
                    f"Qwen2-Audio, LLaVA-1.5, Llama 3.2 Vision, Llama 4) or a text dataset, or remove "
                    f"{', '.join(repr(k) for k in kinds)} from its columns in dataset_info.json to train on the text alone"
                )
            taken = sorted(media.kinds) if media is not None else []
            lost = [kind for kind in kinds if taken and kind.removesuffix("s") not in taken]
            if lost:
                columns = " and ".join(f"the {kind} column {getattr(spec.columns, kind)!r}" for kind in lost)
                raise ConfigError(
                    f"{key} '{spec.name}' has {columns}, but the model takes {', '.join(taken)} only; "
                    f"choose a model that takes {' and '.join(lost)}, or remove "
                    f"{', '.join(repr(k) for k in lost)} from its columns in dataset_info.json"
                )
            if kinds and packing:
                raise ConfigError(
                    f"packing cannot hold media samples yet ({key} '{spec.name}' has {' and '.join(kinds)}); "
                    "set packing: false to train on media"
                )


def _drop_text(part: DatasetReport) -> str:
    reasons = ", ".join(f"{n} {reason}" for reason, n in part.dropped.items())
    first = "; ".join(part.drop_details())
    return (
        f"{part.dropped_total} records ({reasons}); {first}; set strict: true to stop at such records instead"
    )


# ---------------------------------------------------------------- one dataset


def dataset_cache_key(
    spec: DatasetSpec,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate | None,
    settings: EncodeSettings,
    data_args: DataArguments,
    seed: int,
    media: MediaProcessing | None = None,
) -> str:
    """The cache key of ``spec`` encoded with these settings (hashes the data files' bytes)."""
    files: list[tuple[str | None, ...]]
    if spec.source == "file":
        files = [(str(p), file_digest(p)) for p in data_files(spec)]
    else:
        files = [(spec.hub_id, spec.split, spec.subset, spec.folder)]
    return make_key(
        {
            "spec": spec.fingerprint(),
            "files": files,
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "template": repr(template) if settings.stage != "pt" else None,
            "settings": settings.__dict__,
            "max_samples": data_args.max_samples,
            "seed": seed if spec.num_samples is not None else None,
            "media": media.fingerprint() if media is not None else None,
        }
    )


def encode_dataset(
    spec: DatasetSpec,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate | None,
    settings: EncodeSettings,
    data_args: DataArguments,
    seed: int,
    split: str = "train",
    hub: dict[str, str | None] | None = None,
    media: MediaProcessing | None = None,
) -> tuple[datasets.Dataset, DatasetReport]:
    """One dataset, encoded: from the cache when its key matches, else built and cached."""
    # why: datasets and pyarrow load only when data is read or built, not on import
    import datasets

    key = dataset_cache_key(spec, tokenizer, template, settings, data_args, seed, media)
    hit = None if data_args.overwrite_cache else lookup(key)
    if hit is not None:
        report = DatasetReport(**read_report(hit))
        report.split, report.cached = split, True
        return datasets.load_from_disk(str(hit / DATA_DIR)), report

    records, spec = open_dataset(spec, **(hub or {}))
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
    path = write_entry(entry_dir(key), dataset, {**report.__dict__, "cached": False})
    return datasets.load_from_disk(str(path / DATA_DIR)), report


def run_chunks(
    records: Records,
    indices: list[int] | range,
    spec: DatasetSpec,
    tokenizer: PreTrainedTokenizerBase,
    template: ChatTemplate | None,
    settings: EncodeSettings,
    batch_size: int,
    num_workers: int | None,
    media: MediaProcessing | None = None,
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
    from lmforge.data.parallel import map_in_processes  # why: forked workers only when asked for

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


# ---------------------------------------------------------------- which samples


def select_indices(
    total: int, num_samples: int | None, max_samples: int | None, seed: int
) -> list[int] | range:
    """Record indices to encode, in order."""
    indices: list[int] | range = range(total)
    if num_samples is not None:
        rng = np.random.default_rng(seed)
        chosen = rng.permutation(total)[:num_samples]
        if num_samples > total:
            chosen = np.concatenate([chosen, rng.choice(total, num_samples - total)])
        indices = chosen.tolist()
    if max_samples is not None:
        indices = indices[:max_samples]
    return indices


def mix(parts: list[DatasetType], strategy: str, probs: list[float] | None, seed: int) -> DatasetType:
    """One dataset from several: ``concat``, or interleaved until the first (``_under``) or last (``_over``) runs out."""
    if len(parts) == 1:
        return parts[0]
    import datasets

    if strategy == "concat":
        return datasets.concatenate_datasets(parts)
    if probs is not None:
        if len(probs) != len(parts):
            raise ConfigError(
                f"config key 'interleave_probs' has {len(probs)} values for {len(parts)} datasets; give one per dataset"
            )
        if not math.isclose(sum(probs), 1.0, rel_tol=1e-6):
            raise ConfigError(f"config key 'interleave_probs' must sum to 1, got {sum(probs):g}")
    stopping = "first_exhausted" if strategy == "interleave_under" else "all_exhausted"
    return datasets.interleave_datasets(parts, probabilities=probs, seed=seed, stopping_strategy=stopping)


def eval_count(total: int, val_size: float) -> int:
    """How many samples ``val_size`` (a fraction below 1, or a count) asks for."""
    count = math.ceil(val_size * total) if val_size < 1 else int(val_size)
    if count >= total:
        raise ConfigError(
            f"config key 'val_size' ({val_size:g}) leaves no training samples out of {total}; lower it"
        )
    return count


def split_eval(
    dataset: datasets.Dataset, val_size: float, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """``(train, eval)``: a seeded random ``val_size`` of the samples goes to eval."""
    n_eval = eval_count(len(dataset), val_size)
    if n_eval == 0:
        return dataset, None
    order = np.random.default_rng(seed).permutation(len(dataset))
    eval_indices = np.sort(order[:n_eval])
    train_indices = np.sort(order[n_eval:])
    return dataset.select(train_indices), dataset.select(eval_indices)


# ---------------------------------------------------------------- the cache


def datasets_cache_root() -> Path:
    return cache_dir() / "datasets"


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of the tokenizer: its files (or serialised form), plus what can change after loading."""
    base = getattr(tokenizer, "_lmforge_base_fingerprint", None)
    if not base:
        base = _tokenizer_base(tokenizer)
        with suppress(AttributeError):  # a tokenizer that refuses attributes is hashed again next time
            tokenizer._lmforge_base_fingerprint = base
    extras = {
        "base": base,
        "len": len(tokenizer),
        "special": [str(t) for t in getattr(tokenizer, "all_special_tokens", [])],
        "added": sorted(str(t) for t in getattr(tokenizer, "added_tokens_encoder", {})),
        "bos": getattr(tokenizer, "bos_token", None),
        "eos": getattr(tokenizer, "eos_token", None),
        "chat_template": getattr(tokenizer, "chat_template", None),
        "split_special_tokens": bool(getattr(tokenizer, "split_special_tokens", False)),
    }
    return hashlib.sha256(json.dumps(extras, sort_keys=True, default=str).encode()).hexdigest()


def _tokenizer_base(tokenizer: PreTrainedTokenizerBase) -> str:
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    folder = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    files = (
        [folder / name for name in _TOKENIZER_FILES if (folder / name).is_file()] if folder.is_dir() else []
    )
    if files:
        for path in files:
            h.update(path.name.encode())
            h.update(file_digest(path).encode())
    elif hasattr(tokenizer, "backend_tokenizer"):
        h.update(tokenizer.backend_tokenizer.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return h.hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """The source of the data and templates packages: an encoding change invalidates old entries."""
    h = hashlib.sha256()
    for root in (Path(__file__).parent, Path(templates_package.__file__ or "").parent):
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def make_key(parts: dict[str, Any]) -> str:
    payload = json.dumps(
        {"format": CACHE_FORMAT, "code": code_fingerprint(), **parts}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def entry_dir(key: str) -> Path:
    return datasets_cache_root() / key


def lookup(key: str) -> Path | None:
    """The entry's folder when complete."""
    path = entry_dir(key)
    return path if (path / REPORT_FILE).is_file() and (path / DATA_DIR).is_dir() else None


def write_entry(
    target: Path, dataset: datasets.Dataset | datasets.DatasetDict, report: dict[str, Any]
) -> Path:
    """Save ``dataset`` and its report under ``target``, atomically (temp folder, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with quiet_datasets():
            dataset.save_to_disk(str(tmp / DATA_DIR))
        (tmp / REPORT_FILE).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            with suppress(FileNotFoundError):  # another process may have just moved it
                os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process (another rank of the same run) wrote the same key first: keep its entry.
            if not (target / REPORT_FILE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """No ``datasets`` progress bars for our fast internal saves."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def read_report(path: Path) -> dict[str, Any]:
    return json.loads((path / REPORT_FILE).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- tokenized_path


def is_saved_bundle(path: Path) -> bool:
    return (path / REPORT_FILE).is_file()


def save_bundle(bundle: DatasetBundle, path: Path) -> None:
    """Save the encoded train/eval sets to ``tokenized_path`` (temp folder, then rename)."""
    import datasets

    splits = {}
    if bundle.train is not None:
        splits["train"] = bundle.train.flatten_indices()
    if bundle.eval is not None:
        splits["validation"] = bundle.eval.flatten_indices()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_entry(path, datasets.DatasetDict(splits), bundle.report.to_dict())
    logger.info("saved the encoded datasets to %s (tokenized_path); later runs load them from there", path)


def load_saved_bundle(path: Path) -> DatasetBundle:
    import datasets

    logger.warning(
        "loading encoded datasets from tokenized_path %s; the dataset settings are not applied again", path
    )
    try:
        saved = datasets.load_from_disk(str(path / DATA_DIR))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(
            f"tokenized_path {path}: cannot load the saved datasets ({exc}); delete the folder"
        ) from None
    report = DataReport.from_dict(read_report(path))
    return DatasetBundle(saved.get("train"), saved.get("validation"), report)
