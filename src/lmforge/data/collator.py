"""Turn encoded samples (or packed rows) into padded training batches.

Plain samples are right-padded with an attention mask. Packed rows (from ``data/packing.py``)
get position ids restarting at each sample and no attention mask, so transformers keeps
attention inside each sample; padding at a row's end forms a sequence of its own with
labels -100. With ``flatten`` (flash-attention) a batch becomes one row with no padding at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmforge.data.packing import LENGTHS_COLUMN, position_ids_for
from lmforge.media.samples import MEDIA_COLUMN, batch_media
from lmforge.templates.results import IGNORE_INDEX


@dataclass
class TrainingCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None
    flatten: bool = False
    media: Any = None  # a multimodal model's MediaProcessing: samples' media become pixel/audio features

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        packed = LENGTHS_COLUMN in features[0]
        if self.flatten:
            return self._flattened(features, packed)
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids, labels, masks, positions = [], [], [], []
        for feature in features:
            ids = list(feature["input_ids"])
            pad = longest - len(ids)
            input_ids.append(ids + [self.pad_token_id] * pad)
            labels.append(list(_labels_of(feature)) + [IGNORE_INDEX] * pad)
            if packed:
                positions.append(position_ids_for(feature[LENGTHS_COLUMN]) + list(range(pad)))
            else:
                masks.append([1] * len(ids) + [0] * pad)
        batch = {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
        if packed:
            batch["position_ids"] = torch.tensor(positions, dtype=torch.long)
        else:
            batch["attention_mask"] = torch.tensor(masks, dtype=torch.long)
        if self.media is not None and MEDIA_COLUMN in features[0]:
            batch.update(
                batch_media([list(f[MEDIA_COLUMN]) for f in features], batch["input_ids"], self.media)
            )
        return batch

    def _flattened(self, features: list[dict[str, Any]], packed: bool) -> dict[str, torch.Tensor]:
        input_ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for feature in features:
            lengths = feature[LENGTHS_COLUMN] if packed else [len(feature["input_ids"])]
            sample_labels = list(_labels_of(feature))
            start = 0
            for length in lengths:
                if sample_labels[start : start + length]:
                    sample_labels[start] = IGNORE_INDEX  # never predicted across a sample boundary
                start += length
            input_ids.extend(feature["input_ids"])
            labels.extend(sample_labels)
            positions.extend(position_ids_for(lengths))
        return {
            "input_ids": torch.tensor([input_ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([positions], dtype=torch.long),
        }


def _labels_of(feature: dict[str, Any]) -> list[int]:
    labels = feature.get("labels")
    return list(feature["input_ids"]) if labels is None else list(labels)


def trained_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens the loss is computed on (labels other than -100, after the causal shift)."""
    return int((batch["labels"][..., 1:] != IGNORE_INDEX).sum())
