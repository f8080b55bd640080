"""``dataset_info.json``: turn dataset names (or paths) into :class:`DatasetSpec`s.

The file's format is LLaMA-Factory's (see ``../shared/data/README.md``): every key it
documents is read with its documented default, so an existing registration works unchanged.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
from pathlib import Path
from typing import Any

from lmforge.data.spec import FORMATTINGS, OPENAI_TAGS, Columns, DatasetSpec, Tags
from lmforge.errors import DataError

logger = logging.getLogger(__name__)

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


def did_you_mean(name: str, choices: list[str] | set[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    match = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


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
