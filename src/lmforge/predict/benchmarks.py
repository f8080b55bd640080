"""Multiple-choice benchmarks on disk, in the layout LLaMA-Factory's ``evaluation/`` folder uses.

``task_dir/<name>/mapping.json`` maps each subject to its display name and category
(``{"abstract_algebra": {"name": "abstract algebra", "category": "STEM"}, ...}``); the
questions are CSV files, one per subject and split, either extracted in that folder or
inside ``<name>.zip`` there. Three file layouts are read, those of the three benchmarks:

- MMLU: ``data/<split>/<subject>_<split>.csv``, no header, columns question, A, B, C, D, answer;
- C-Eval: ``<split>/<subject>_<split>.csv``, a header (id, question, A-D, answer, explanation);
- CMMLU: ``<split>/<subject>.csv``, a header (an index column, Question, A-D, Answer).

A task is ``<name>_<split>`` (``mmlu_test``, ``ceval_validation``, ``cmmlu_test``); the
few-shot examples come from the ``dev`` split.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import ConfigError, DataError

CHOICES = ("A", "B", "C", "D")
SPLIT_FILES = {"test": "test", "validation": "val", "val": "val", "dev": "dev", "train": "dev"}


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, str, str, str]
    answer: str  # one of CHOICES


@dataclass(frozen=True)
class Subject:
    key: str  # the file name stem
    name: str  # shown in the prompt ("abstract algebra")
    category: str


class Benchmark:
    """One benchmark folder (or its zip): its subjects and their questions per split."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self._zip: zipfile.ZipFile | None = None
        archive = root / f"{name}.zip"
        if archive.is_file() and not any(p.is_dir() for p in root.iterdir()):
            self._zip = zipfile.ZipFile(archive)
        mapping = root / "mapping.json"
        try:
            entries = json.loads(mapping.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{mapping}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        try:
            self.subjects = [Subject(key, e["name"], e["category"]) for key, e in entries.items()]
        except (AttributeError, KeyError, TypeError):
            raise DataError(f'{mapping}: each subject must map to {{"name": ..., "category": ...}}') from None

    def questions(self, subject: Subject, split: str) -> list[Question]:
        part = SPLIT_FILES.get(split)
        if part is None:
            raise ConfigError(f"split '{split}' of task '{self.name}': use test, validation or dev")
        candidates = (
            f"data/{part}/{subject.key}_{part}.csv",
            f"{part}/{subject.key}_{part}.csv",
            f"{part}/{subject.key}.csv",
        )
        for relative in candidates:
            text = self._read(relative)
            if text is not None:
                return parse_questions(text, f"{self.root / relative}")
        raise DataError(
            f"task '{self.name}': no {part} file for subject '{subject.key}' in {self.root} "
            f"(looked for {', '.join(candidates)})"
        )

    def _read(self, relative: str) -> str | None:
        if self._zip is None:
            path = self.root / relative
            return path.read_text(encoding="utf-8-sig") if path.is_file() else None
        for member in self._zip.namelist():  # the archive may hold everything under one folder
            if member == relative or member.endswith("/" + relative):
                return self._zip.read(member).decode("utf-8-sig")
        return None


def open_benchmark(task_dir: str, name: str) -> Benchmark:
    root = Path(task_dir).expanduser() / name
    if not (root / "mapping.json").is_file():
        raise ConfigError(
            f"task '{name}' not found: put its mapping.json and CSV files (LLaMA-Factory's evaluation/{name} "
            f"layout, e.g. data/test/<subject>_test.csv) in {root}, or point task_dir at their parent folder"
        )
    return Benchmark(name, root)


def parse_questions(text: str, where: str) -> list[Question]:
    """Rows of question, four choices and the answer letter; a header row is used when present."""
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    if "question" in header and "answer" in header:
        at = {name: header.index(name) for name in ("question", "a", "b", "c", "d", "answer")}
        rows = rows[1:]
    else:
        at = {"question": 0, "a": 1, "b": 2, "c": 3, "d": 4, "answer": 5}
    out = []
    for number, row in enumerate(rows, 1):
        try:
            answer = row[at["answer"]].strip().upper()
            choices = tuple(row[at[letter.lower()]] for letter in CHOICES)
            question = row[at["question"]]
        except IndexError:
            raise DataError(f"{where}, row {number}: expected question, A, B, C, D and answer") from None
        if answer not in CHOICES:
            raise DataError(f"{where}, row {number}: answer {answer!r} is not one of A, B, C, D")
        out.append(Question(question, choices, answer))  # type: ignore[arg-type]
    return out
