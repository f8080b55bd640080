"""Read a dataset's files into :class:`Records`: rows as dicts, with where each came from.

JSON and JSON lines are parsed with Python's ``json`` so that a malformed file is reported
by line and column; csv, parquet and arrow go through pyarrow; ``.txt`` is one text per
line (pre-training). A folder is read as all its files, which must share one extension.
Hub datasets go through ``datasets.load_dataset``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.data.spec import DatasetSpec
from lmforge.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

EXTENSIONS = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt")


@dataclass
class Part:
    """The rows of one file: a list of dicts (json, txt) or an arrow table (csv, parquet, arrow, hub)."""

    path: str
    rows: list[dict[str, Any]] | pa.Table
    lines: list[int] | None = None  # the line each row starts on (json lines), for messages

    def __len__(self) -> int:
        return len(self.rows) if isinstance(self.rows, list) else self.rows.num_rows

    def column_names(self) -> list[str]:
        if not isinstance(self.rows, list):
            return list(self.rows.column_names)
        seen: dict[str, None] = {}
        for row in self.rows:
            for key in row:
                if key not in seen:
                    seen[key] = None
        return list(seen)

    def take(self, local: list[int] | range) -> list[dict[str, Any]]:
        if isinstance(self.rows, list):
            if isinstance(local, range) and local.step == 1:
                return self.rows[local.start : local.stop]
            return [self.rows[i] for i in local]
        if isinstance(local, range) and local.step == 1:
            return self.rows.slice(local.start, len(local)).to_pylist()
        return self.rows.take(list(local)).to_pylist()


@dataclass
class Records:
    """All rows of one dataset, in file order, addressable by a global index."""

    parts: list[Part]
    _columns: list[str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    @property
    def column_names(self) -> list[str]:
        if self._columns is None:
            seen: dict[str, None] = {}
            for part in self.parts:
                for name in part.column_names():
                    seen.setdefault(name, None)
            self._columns = list(seen)
        return self._columns

    def rows(self, indices: list[int] | range) -> list[dict[str, Any]]:
        """The rows at ``indices`` (global), in that order."""
        if isinstance(indices, range) and indices.step == 1 and len(self.parts) == 1:
            return self.parts[0].take(indices)
        out: list[dict[str, Any]] = []
        offsets = self._offsets()
        run_part, run_local = -1, []
        for i in indices:
            p = _part_of(offsets, i)
            if p != run_part and run_local:
                out.extend(self.parts[run_part].take(run_local))
                run_local = []
            run_part = p
            run_local.append(i - offsets[p])
        if run_local:
            out.extend(self.parts[run_part].take(run_local))
        return out

    def locate(self, index: int) -> str:
        """``file F, record N (line L)`` for messages; N counts from 0 within the file."""
        offsets = self._offsets()
        p = _part_of(offsets, index)
        part = self.parts[p]
        local = index - offsets[p]
        line = f" (line {part.lines[local]})" if part.lines else ""
        return f"{part.path}, record {local}{line}"

    def files(self) -> list[str]:
        return [p.path for p in self.parts]

    def _offsets(self) -> list[int]:
        offsets, total = [], 0
        for part in self.parts:
            offsets.append(total)
            total += len(part)
        return offsets


def _part_of(offsets: list[int], index: int) -> int:
    import bisect

    return bisect.bisect_right(offsets, index) - 1


# ---------------------------------------------------------------- files


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


def read_records(spec: DatasetSpec, *, cache_dir: str | None = None, token: str | None = None) -> Records:
    """Every row of the dataset, read into memory (arrow tables stay columnar)."""
    if spec.source != "file":
        return Records([read_hub(spec, cache_dir=cache_dir, token=token)])
    parts = [read_file(path, spec) for path in data_files(spec)]
    records = Records(parts)
    if len(records) == 0:
        raise DataError(f"{spec.describe()}: has no records; add data or remove it from 'dataset'")
    return records


def read_file(path: Path, spec: DatasetSpec | None = None) -> Part:
    """One file's rows, by extension."""
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; use one of {', '.join(EXTENSIONS)}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    return reader(path)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None


def _read_json(path: Path) -> Part:
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return _json_lines(path, text)  # a .json file holding JSON lines, as datasets accepts
        raise DataError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of records (objects), got {type(data).__name__}")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(
                f"{path}, record {i}: expected an object with named fields, got {type(row).__name__}"
            )
    return Part(str(path), data)


def _read_jsonl(path: Path) -> Part:
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    return _json_lines(path, text)


def _json_lines(path: Path, text: str) -> Part:
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    decode = json.loads
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = decode(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON at line {number}, column {exc.colno}: {exc.msg}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
        lines.append(number)
    return Part(str(path), rows, lines)


def _read_txt(path: Path) -> Part:
    text = _read_text(path)
    rows = [{"text": line} for line in text.splitlines() if line.strip()]
    if not rows:
        raise DataError(f"{path}: the file is empty")
    return Part(str(path), rows)


def _read_csv(path: Path) -> Part:
    import pyarrow as pa
    from pyarrow import csv

    try:
        table = csv.read_csv(path)
    except (pa.ArrowInvalid, pa.ArrowException) as exc:
        message = str(exc).splitlines()[0]
        if "Empty CSV file" in message:
            raise DataError(f"{path}: the file is empty") from None
        raise DataError(f"{path}: cannot read CSV: {message}") from None
    return Part(str(path), table)


def _read_parquet(path: Path) -> Part:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read parquet: {str(exc).splitlines()[0]}") from None
    return Part(str(path), table)


def _read_arrow(path: Path) -> Part:
    """Arrow IPC stream (what ``datasets`` writes) or IPC file."""
    import pyarrow as pa

    errors = []
    for opener in (pa.ipc.open_stream, pa.ipc.open_file):
        try:
            with pa.memory_map(str(path)) as source:
                table = opener(source).read_all()
            return Part(str(path), table)
        except (pa.ArrowException, OSError) as exc:
            errors.append(str(exc).splitlines()[0])
    raise DataError(f"{path}: cannot read arrow data: {errors[-1]}")


_READERS: dict[str, Callable[[Path], Part]] = {
    ".json": _read_json,
    ".jsonl": _read_jsonl,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
    ".arrow": _read_arrow,
    ".txt": _read_txt,
}


# ---------------------------------------------------------------- streaming


def stream_rows(spec: DatasetSpec, **hub_kwargs: Any) -> Iterator[tuple[str, dict[str, Any]]]:
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


# ---------------------------------------------------------------- hubs


def read_hub(spec: DatasetSpec, *, cache_dir: str | None = None, token: str | None = None) -> Part:
    """A hub dataset through ``datasets.load_dataset``; offline, an error that says so."""
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
            from modelscope import MsDataset  # type: ignore[import-not-found]
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
        return Part(f"{hub}:{spec.hub_id}", loaded.data.table)

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
    return Part(f"{hub}:{spec.hub_id}", loaded.data.table)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
