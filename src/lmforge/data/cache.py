"""The on-disk cache of encoded datasets.

An entry's key hashes everything that changes the encoded result: the data files' bytes,
the dataset's registration, the tokenizer (its files, or its serialised form), the
template, the encoding settings and the source of the code that encodes. Entries are
written to a temporary folder and renamed into place, so a killed run never leaves a
half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import Any

from lmforge.config.environment import cache_dir

logger = logging.getLogger(__name__)

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


def datasets_cache_root() -> Path:
    return cache_dir() / "datasets"


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
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


def _tokenizer_base(tokenizer: Any) -> str:
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


@cache
def code_fingerprint() -> str:
    """The source of the data and templates packages: an encoding change invalidates old entries."""
    import lmforge.data
    import lmforge.templates

    h = hashlib.sha256()
    for package in (lmforge.data, lmforge.templates):
        root = Path(package.__file__).parent
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


def write_entry(target: Path, dataset: Any, report: dict[str, Any]) -> Path:
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
