"""What happened to each dataset on its way to token ids: counts a run prints and ``data stats`` shows."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DatasetReport:
    """One dataset's counts. ``records`` were selected from the file(s); ``samples`` came out encoded.

    ``dropped`` maps a reason to how many records it removed; ``first_dropped`` names the first
    such record per reason (file and index) so the user can look at it. ``truncated`` counts
    samples cut to ``cutoff_len`` (pre-training: documents split into several windows).
    """

    name: str
    split: str = "train"  # train or eval: which list the dataset was given in
    files: list[str] = field(default_factory=list)
    records: int = 0
    samples: int = 0
    truncated: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    first_dropped: dict[str, str] = field(default_factory=dict)
    cached: bool = False
    # preference stages: samples are pairs (dpo, rm) or KTO samples, ``desirable`` of them tagged true
    stage: str = "sft"
    desirable: int = 0
    # Samples whose text holds a special-token string (split only with split_special_tokens: true).
    special_text: int = 0
    first_special_text: str = ""

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def add_drop(self, reason: str, where: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.first_dropped.setdefault(reason, where)

    def merge_drops(self, counts: Counter[str] | dict[str, int], first: dict[str, str]) -> None:
        for reason, n in counts.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        for reason, where in first.items():
            self.first_dropped.setdefault(reason, where)

    def add_special_text(self, count: int, first: str) -> None:
        self.special_text += count
        self.first_special_text = self.first_special_text or first

    def summary(self) -> str:
        unit = "pairs" if self.stage in ("dpo", "rm") else "samples"
        kto = f" ({self.desirable} desirable)" if self.stage == "kto" else ""
        line = (
            f"{self.split} dataset '{self.name}': {self.samples} {unit}{kto} from {self.records} records, "
            f"{self.tokens} tokens ({self.trained_tokens} trained), {self.truncated} truncated"
        )
        if self.dropped:
            reasons = ", ".join(
                f"{n} {reason}" for reason, n in sorted(self.dropped.items(), key=lambda x: -x[1])
            )
            line += f", {self.dropped_total} dropped ({reasons})"
        if self.special_text:
            line += f", {self.special_text} with special-token text (first: {self.first_special_text})"
        return line

    def drop_details(self) -> list[str]:
        return [f"first '{reason}' record: {where}" for reason, where in self.first_dropped.items()]


@dataclass
class DataReport:
    """Per-dataset reports, plus the sizes of the final train and eval sets after mixing and splitting."""

    datasets: list[DatasetReport] = field(default_factory=list)
    train_samples: int | None = None
    eval_samples: int | None = None
    streaming: bool = False

    def for_split(self, split: str) -> list[DatasetReport]:
        return [d for d in self.datasets if d.split == split]

    @property
    def dropped(self) -> dict[str, dict[str, int]]:
        return {d.name: dict(d.dropped) for d in self.datasets if d.dropped}

    @property
    def truncated(self) -> int:
        return sum(d.truncated for d in self.datasets)

    @property
    def samples(self) -> int:
        return sum(d.samples for d in self.datasets)

    def lines(self) -> list[str]:
        if self.streaming:
            return [
                f"streaming {d.split} dataset '{d.name}' (counts are not known ahead)" for d in self.datasets
            ]
        out = [d.summary() for d in self.datasets]
        if self.train_samples is not None:
            out.append(f"train set: {self.train_samples} samples; eval set: {self.eval_samples or 0} samples")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataReport:
        reports = [DatasetReport(**d) for d in data.get("datasets", [])]
        return cls(
            datasets=reports,
            train_samples=data.get("train_samples"),
            eval_samples=data.get("eval_samples"),
            streaming=data.get("streaming", False),
        )
