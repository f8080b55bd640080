"""Step 1 of a sample's path: a dataset name (or path) -> :class:`DatasetSpec`, its files and format.

``dataset_info.json`` is read in LLaMA-Factory's format (see ``../shared/data/README.md``):
every key it documents is read with its documented default, so an existing registration works
unchanged. A ``dataset:`` value that is a path to a file or folder gets its formatting and
columns read off the data (:func:`detect_format`); every column a spec names is checked against
the data's columns before a record is converted (:func:`check_columns`). A hub dataset is
fetched here as one arrow table (:func:`read_hub`); local files are read in ``data/records.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmforge.errors import DataError, did_you_mean

if TYPE_CHECKING:
    import pyarrow as pa

    from lmforge.config import Config

logger = logging.getLogger(__name__)

EXTENSIONS = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt")

Formatting = Literal["alpaca", "sharegpt", "openai"]
FORMATTINGS: tuple[str, ...] = ("alpaca", "sharegpt", "openai")


@dataclass(frozen=True)
class Columns:
    """Which record keys hold which part of a sample. ``None`` means "not used"."""

    prompt: str | None = "instruction"
    query: str | None = "input"
    response: str | None = "output"
    history: str | None = None
    messages: str | None = "conversations"
    system: str | None = None
    tools: str | None = None
    images: str | None = None
    videos: str | None = None
    audios: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    kto_tag: str | None = None


@dataclass(frozen=True)
class Tags:
    """Keys and role values of a sharegpt message list."""

    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"


OPENAI_TAGS = Tags(
    role_tag="role",
    content_tag="content",
    user_tag="user",
    assistant_tag="assistant",
    observation_tag="tool",
    function_tag="function_call",
    system_tag="system",
)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to read one dataset and turn its records into Conversations.

    ``source`` is ``file`` (``path`` is a file or a folder of same-extension files),
    ``hf_hub`` or ``ms_hub`` (``hub_id`` names the repository). ``explicit_columns`` lists
    the column roles the registration named itself: only those must exist in the data.
    """

    name: str
    source: Literal["file", "hf_hub", "ms_hub"] = "file"
    path: Path | None = None
    hub_id: str | None = None
    formatting: Formatting = "alpaca"
    ranking: bool = False
    columns: Columns = field(default_factory=Columns)
    explicit_columns: tuple[str, ...] = ()
    tags: Tags = field(default_factory=Tags)
    split: str = "train"
    subset: str | None = None
    folder: str | None = None
    num_samples: int | None = None
    media_dir: Path | None = None
    auto_format: bool = False  # a bare path: formatting and columns are read off the data

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change what this dataset produces (for the cache key)."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path) if self.path else None
        out["media_dir"] = str(self.media_dir) if self.media_dir else None
        return out

    def describe(self) -> str:
        """``'name' (path)`` for messages."""
        where = str(self.path) if self.path else self.hub_id
        return (
            f"dataset '{self.name}' ({where})" if where and where != self.name else f"dataset '{self.name}'"
        )


# ---------------------------------------------------------------- dataset_info.json


INFO_FILE = "dataset_info.json"
COLUMN_ROLES = tuple(f.name for f in dataclasses.fields(Columns))
TAG_KEYS = tuple(f.name for f in dataclasses.fields(Tags))
KNOWN_KEYS = {
    "file_name",
    "hf_hub_url",
    "ms_hub_url",
    "om_hub_url",
    "script_url",
    "cloud_file_name",
    "formatting",
    "ranking",
    "subset",
    "split",
    "folder",
    "num_samples",
    "columns",
    "tags",
}


def load_dataset_info(dataset_dir: str | Path) -> dict[str, Any]:
    """The parsed ``dataset_info.json`` of ``dataset_dir`` ({} when the folder has none)."""
    path = Path(dataset_dir).expanduser() / INFO_FILE
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; fix the file"
        ) from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object mapping dataset names to their descriptions")
    return info


def resolve_datasets(
    names: list[str] | None, dataset_dir: str | Path, media_dir: str | Path | None = None
) -> list[DatasetSpec]:
    """One spec per name: a registered name, else an existing file or folder path."""
    if not names:
        return []
    info: dict[str, Any] | None = None
    specs = []
    for raw_name in names:
        name = raw_name.strip()
        if not name:
            continue
        if info is None:
            info = load_dataset_info(dataset_dir)
        specs.append(resolve_dataset(name, info, dataset_dir, media_dir))
    return specs


def resolve_dataset(
    name: str, info: dict[str, Any], dataset_dir: str | Path, media_dir: str | Path | None = None
) -> DatasetSpec:
    """The spec for ``name``: its ``dataset_info.json`` entry, or a path that exists."""
    base = Path(dataset_dir).expanduser()
    media = Path(media_dir).expanduser() if media_dir else base
    if name in info:
        return spec_from_entry(name, info[name], base, media)
    for candidate in (Path(name).expanduser(), base / name):
        if candidate.exists():
            return DatasetSpec(name=name, path=candidate, media_dir=media, auto_format=True)
    where = base / INFO_FILE
    if not info:
        raise DataError(
            f"dataset '{name}': not a file or folder, and {where} does not exist; set dataset_dir to the folder "
            "holding dataset_info.json, or give a path to a data file"
        )
    raise DataError(
        f"dataset '{name}' is not registered in {where} and is not a file or folder{did_you_mean(name, set(info))}; "
        f"registered names: {', '.join(sorted(info)[:20])}{', ...' if len(info) > 20 else ''}"
    )


def spec_from_entry(name: str, entry: Any, dataset_dir: Path, media_dir: Path) -> DatasetSpec:
    """Validate one ``dataset_info.json`` entry and fill in LLaMA-Factory's defaults."""
    where = f"{dataset_dir / INFO_FILE}, dataset '{name}'"
    if not isinstance(entry, dict):
        raise DataError(
            f"{where}: expected an object with file_name or hf_hub_url, got {type(entry).__name__}"
        )
    for key in entry:
        if key not in KNOWN_KEYS:
            raise DataError(f"{where}: unknown key '{key}'{did_you_mean(key, KNOWN_KEYS)}")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise DataError(f"{where}: formatting '{formatting}' is not one of {', '.join(FORMATTINGS)}")

    columns_raw = _mapping(entry.get("columns"), where, "columns")
    for role, column in columns_raw.items():
        if role not in COLUMN_ROLES:
            raise DataError(f"{where}: unknown columns key '{role}'{did_you_mean(role, COLUMN_ROLES)}")
        if column is not None and not isinstance(column, str):
            raise DataError(f"{where}: columns.{role} must be a column name (a string)")
    tags_raw = _mapping(entry.get("tags"), where, "tags")
    for key, value in tags_raw.items():
        if key not in TAG_KEYS:
            raise DataError(f"{where}: unknown tags key '{key}'{did_you_mean(key, TAG_KEYS)}")
        if not isinstance(value, str):
            raise DataError(f"{where}: tags.{key} must be a string")

    columns = _columns_for(formatting, columns_raw)
    base_tags = OPENAI_TAGS if formatting == "openai" else Tags()
    tags = dataclasses.replace(base_tags, **tags_raw)

    num_samples = entry.get("num_samples")
    if num_samples is not None and (
        not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0
    ):
        raise DataError(f"{where}: num_samples must be a positive whole number, got {num_samples!r}")
    common: dict[str, Any] = {
        "name": name,
        "formatting": formatting,
        "ranking": bool(entry.get("ranking", False)),
        "columns": columns,
        "explicit_columns": tuple(role for role, column in columns_raw.items() if column),
        "tags": tags,
        "split": entry.get("split") or "train",
        "subset": entry.get("subset"),
        "folder": entry.get("folder"),
        "num_samples": num_samples,
        "media_dir": media_dir,
    }
    if entry.get("hf_hub_url"):
        return DatasetSpec(source="hf_hub", hub_id=str(entry["hf_hub_url"]), **common)
    if entry.get("ms_hub_url"):
        return DatasetSpec(source="ms_hub", hub_id=str(entry["ms_hub_url"]), **common)
    for unsupported in ("script_url", "cloud_file_name", "om_hub_url"):
        if entry.get(unsupported):
            raise DataError(
                f"{where}: '{unsupported}' datasets are not supported; download the data and set file_name instead"
            )
    file_name = entry.get("file_name")
    if not file_name or not isinstance(file_name, str):
        raise DataError(f"{where}: needs 'file_name' (a file or folder in {dataset_dir}) or 'hf_hub_url'")
    return DatasetSpec(source="file", path=dataset_dir / file_name, **common)


def _mapping(value: Any, where: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DataError(f"{where}: '{key}' must be an object")
    return value


def _columns_for(formatting: str, given: dict[str, Any]) -> Columns:
    """LLaMA-Factory's defaults; sharegpt/openai have no prompt/query/response columns."""
    if formatting == "alpaca":
        base = Columns()
    else:
        messages = "messages" if formatting == "openai" else "conversations"
        base = Columns(prompt=None, query=None, response=None, messages=messages)
    return dataclasses.replace(base, **{k: v for k, v in given.items()})


# ---------------------------------------------------------------- files and format


def media_columns(spec: DatasetSpec) -> list[str]:
    """The image, video and audio columns a dataset's entry names."""
    return [kind for kind in ("images", "videos", "audios") if getattr(spec.columns, kind, None)]


def hub_options(config: Config) -> dict[str, str | None]:
    """Where hub datasets are cached and the token that reads them: the model's hub settings."""
    return {"cache_dir": config.model.cache_dir, "token": config.model.hf_hub_token}


def data_files(spec: DatasetSpec) -> list[Path]:
    """The files behind a file-based spec: the file, or a folder's same-extension files."""
    assert spec.path is not None
    path = spec.path
    if not path.exists():
        raise DataError(f"{spec.describe()}: file not found: {path}; check file_name and dataset_dir")
    if path.is_file():
        _check_extension(path, spec)
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{spec.describe()}: folder {path} holds no data files")
    suffixes = {p.suffix.lower() for p in files}
    if len(suffixes) > 1:
        raise DataError(
            f"{spec.describe()}: folder {path} mixes file types ({', '.join(sorted(suffixes))}); "
            "keep one type per dataset folder"
        )
    _check_extension(files[0], spec)
    return files


def _check_extension(path: Path, spec: DatasetSpec) -> None:
    if path.suffix.lower() not in EXTENSIONS:
        raise DataError(
            f"{spec.describe()}: unsupported file type '{path.suffix or path.name}' ({path}); "
            f"use one of {', '.join(EXTENSIONS)}"
        )


def detect_format(
    spec: DatasetSpec, column_names: list[str], first_row: dict[str, Any] | None
) -> DatasetSpec:
    """For a dataset given as a bare path: read formatting and columns off its data."""
    if not spec.auto_format:
        return spec
    cols = set(column_names)
    optional: dict[str, str] = {
        role: role for role in ("system", "tools", "images", "videos", "audios") if role in cols
    }
    if "chosen" in cols and "rejected" in cols:  # preference pairs: both reply columns by their usual names
        optional.update(chosen="chosen", rejected="rejected")
        spec = dataclasses.replace(spec, ranking=True)
    for messages_column in ("messages", "conversations"):
        if messages_column in cols:
            sample = (first_row or {}).get(messages_column) or [{}]
            keys = (
                set(sample[0])
                if isinstance(sample, list) and sample and isinstance(sample[0], dict)
                else set()
            )
            openai_style = "role" in keys or messages_column == "messages" and "from" not in keys
            formatting: Formatting = "openai" if openai_style else "sharegpt"
            columns = Columns(prompt=None, query=None, response=None, messages=messages_column, **optional)
            tags = OPENAI_TAGS if openai_style else Tags()
            return dataclasses.replace(spec, formatting=formatting, columns=columns, tags=tags)
    if "instruction" in cols:
        history = "history" if "history" in cols else None
        columns = Columns(history=history, **optional)
        return dataclasses.replace(spec, formatting="alpaca", columns=columns)
    if "text" in cols:
        return dataclasses.replace(
            spec, formatting="alpaca", columns=Columns(prompt="text", query=None, response=None)
        )
    raise DataError(
        f"{spec.describe()}: cannot tell its format from its columns ({', '.join(column_names) or 'none'}); "
        "expected instruction/output (alpaca), conversations (sharegpt), messages (openai) or text; "
        "or register it in dataset_info.json with formatting and columns"
    )


def check_columns(spec: DatasetSpec, column_names: list[str]) -> None:
    """Every column the registration names must exist; the main one must exist by default too."""
    present = set(column_names)
    needed = list(spec.explicit_columns)
    main = "prompt" if spec.formatting == "alpaca" else "messages"
    if main not in needed:
        needed.append(main)
    for role in needed:
        column = getattr(spec.columns, role)
        if column and column not in present:
            hint = did_you_mean(column, present)
            raise DataError(
                f"{spec.describe()}: columns.{role} names column '{column}', which the data does not have{hint}; "
                f"its columns are: {', '.join(column_names) or 'none'}"
            )


# ---------------------------------------------------------------- hubs


def read_hub(
    spec: DatasetSpec, *, cache_dir: str | None = None, token: str | None = None
) -> tuple[str, pa.Table]:
    """A hub dataset's name and table, through ``datasets.load_dataset``; offline, an error that says so."""
    from huggingface_hub import constants

    hub = "Hugging Face hub" if spec.source == "hf_hub" else "ModelScope hub"
    key = "hf_hub_url" if spec.source == "hf_hub" else "ms_hub_url"
    if spec.source == "hf_hub" and constants.HF_HUB_OFFLINE:
        raise DataError(
            f"{spec.describe()} comes from the {hub} ({key} '{spec.hub_id}') and HF_HUB_OFFLINE is set; "
            "download it and register the local copy with file_name"
        )
    if spec.source == "ms_hub":
        try:
            from modelscope import MsDataset
        except ImportError:
            raise DataError(
                f"{spec.describe()} comes from the {hub} ({key} '{spec.hub_id}'), which needs the `modelscope` "
                "package; install it, or download the data and register it with file_name"
            ) from None
        try:
            loaded = MsDataset.load(
                spec.hub_id,
                subset_name=spec.subset,
                data_dir=spec.folder,
                split=spec.split,
                cache_dir=cache_dir,
            ).to_hf_dataset()
        except Exception as exc:  # the hub client raises many kinds
            raise DataError(f"{spec.describe()}: cannot load from the {hub}: {_first_line(exc)}") from None
        return f"{hub}:{spec.hub_id}", loaded.data.table

    # why: datasets and pyarrow load only when data is read or built, not on import
    import datasets

    try:
        loaded = datasets.load_dataset(
            spec.hub_id,
            name=spec.subset,
            data_dir=spec.folder,
            split=spec.split,
            cache_dir=cache_dir,
            token=token,
        )
    except Exception as exc:  # network, auth, missing split: one line either way
        raise DataError(
            f"{spec.describe()}: cannot load '{spec.hub_id}' from the {hub} ({_first_line(exc)}); "
            "when offline, download it and register the local copy with file_name"
        ) from None
    return f"{hub}:{spec.hub_id}", loaded.data.table


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
