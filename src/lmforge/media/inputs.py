"""Media for multimodal models, in one interface: which kinds a model takes and how to prepare them.

The chat template writes one placeholder token per medium (Qwen2-VL:
``<|vision_start|><|image_pad|><|vision_end|>``; Qwen2-Audio: ``<|audio_bos|><|AUDIO|><|audio_eos|>``);
the model needs that token repeated once per feature. The number depends on the picture's
size or the clip's length, so it is known only once the medium is processed:
:meth:`MediaProcessing.expand` repeats each placeholder in the encoded prompt, and
prompt-length limits and ``usage`` then count the tokens the model sees.

Pictures and video frames: ``media/vision.py``; sound: ``media/audio.py``; which model
takes which: ``media/models.py``; training samples' media: ``media/samples.py``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads only when tensors are made, not when data code imports this
    import torch
    from PIL import Image

IGNORE_INDEX = -100  # the label the loss skips (templates.results.IGNORE_INDEX, a layer above)
NOUNS = {"image": "image", "video": "video", "audio": "audio clip"}
# Seconds per temporal video patch: an input to Qwen2.5-VL's rotary positions, not to every model.
SECONDS_PER_GRID = "second_per_grid_ts"


class MediaInputError(ValueError):
    """A medium that cannot be used (undecodable, absurd size, wrong count); answered as HTTP 400."""


@dataclass
class MediaInputs:
    """Model-ready tensors for the media of one request, and each item's placeholder and token count."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    items: list[tuple[int, int]] = field(default_factory=list)  # (placeholder token id, tokens), in order
    # item index -> the token run that replaces its placeholder, for models whose media tokens are
    # structured (Llama 4: image start, tile patches and separators, image end); other items repeat
    # their placeholder. An item with a run counts len(run) tokens.
    runs: dict[int, list[int]] = field(default_factory=dict)
    # Each item as decoded and bounded before its tensors were made (a PIL picture; a video's
    # frames with the seconds between two; a mono float clip at the extractor's rate): for an
    # engine that runs the model's processor itself (vLLM), so it sees what the counts came from.
    decoded: list[Any] = field(default_factory=list)

    @property
    def tokens_per_item(self) -> list[int]:
        return [count for _, count in self.items]


class MediaProcessing:
    """What a multimodal model needs from the server: which media it takes and how to prepare them."""

    #: media kinds this model takes ("image", "video", "audio"), each with its placeholder token id
    placeholders: dict[str, int]
    #: position ids come from the model's ``get_rope_index`` (M-RoPE), not from the row length
    mrope = False
    #: the model's forward takes ``second_per_grid_ts`` (Qwen2.5-VL's video time spacing)
    time_positions = False
    #: the text reads media through cross-attention layers (Llama 3.2 Vision): a row's KV cache
    #: holds its pictures, so a running batch takes no new rows and each step repeats :meth:`step_inputs`
    cross_attention = False

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.placeholders)

    def fingerprint(self) -> str:
        """Everything that changes token counts or features (a cache key for encoded datasets)."""
        plain = (int, float, str, bool, dict, list, type(None))
        settings = {k: v for k, v in vars(self).items() if isinstance(v, plain)}
        for name in ("image_processor", "feature_extractor"):
            processor = getattr(self, name, None)
            if processor is not None and hasattr(processor, "to_dict"):
                settings[name] = processor.to_dict()
        return json.dumps([type(self).__name__, settings], sort_keys=True, default=str)

    def process(
        self, blobs: list[bytes], where: list[str] | None = None, kinds: list[str] | None = None
    ) -> MediaInputs:
        """Decode and prepare ``blobs`` (raw file bytes) of the given kinds (default: the first kind
        this model takes); ``where`` names each for errors (default "image 1", ...)."""
        kinds = kinds or [next(iter(self.placeholders))] * len(blobs)
        where = where or [f"{kind} {i + 1}" for i, kind in enumerate(kinds)]
        return self._process(blobs, where, kinds)

    def _process(self, blobs: list[bytes], where: list[str], kinds: list[str]) -> MediaInputs:
        raise NotImplementedError

    def batch_inputs(
        self, rows: list[MediaInputs | None], input_ids: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The model's media inputs for a padded batch (``rows`` in order, None for a row without
        media): by default each tensor of the rows joined along its first dimension. ``input_ids``
        is for models whose inputs depend on where the placeholders stand (training and serving
        both batch through here)."""
        import torch  # why here: data code imports this module without torch

        parts = [row for row in rows if row is not None and row.tensors]
        keys = dict.fromkeys(key for part in parts for key in part.tensors)
        return {key: torch.cat([part.tensors[key] for part in parts if key in part.tensors]) for key in keys}

    def step_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inputs every decoding step passes again (one row per batch row), from the prefill's
        :meth:`batch_inputs`; none by default."""
        return {}

    def token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Per token: 0 text, 1 image, 2 video (what M-RoPE position ids are built from)."""
        types = (input_ids * 0).int()
        for code, kind in ((1, "image"), (2, "video")):
            if kind in self.placeholders:
                types += code * (input_ids == self.placeholders[kind]).int()
        return types

    def training_extras(self, input_ids: torch.Tensor) -> dict[str, Any]:
        """Model inputs besides the media tensors that a training batch needs (M-RoPE token types)."""
        return {"mm_token_type_ids": self.token_types(input_ids)} if self.mrope else {}

    def expand_labeled(
        self, ids: list[int], labels: list[int], inputs: MediaInputs
    ) -> tuple[list[int], list[int]]:
        """``ids`` and ``labels`` (a training sample) with each placeholder expanded for its medium;
        the labels of a token run are ignored (they are media, not text to learn)."""
        times = self.repeats(ids, inputs)
        if not inputs.runs:
            return repeat_each(ids, times), repeat_each(labels, times)
        runs = self.runs_at(ids, inputs)
        labels = [IGNORE_INDEX if position in runs else label for position, label in enumerate(labels)]
        return self.expand(ids, inputs), repeat_each(labels, times)

    def expand(self, prompt_ids: list[int], inputs: MediaInputs) -> list[int]:
        """``prompt_ids`` with each placeholder repeated once per feature of its medium (or
        replaced by the medium's token run, where it has one)."""
        times = self.repeats(prompt_ids, inputs)
        if not inputs.runs:
            return repeat_each(prompt_ids, times)
        runs = self.runs_at(prompt_ids, inputs)
        out: list[int] = []
        for position, (token, n) in enumerate(zip(prompt_ids, times, strict=True)):
            out.extend(runs[position] if position in runs else [token] * n)
        return out

    def runs_at(self, prompt_ids: list[int], inputs: MediaInputs) -> dict[int, list[int]]:
        """Prompt position -> the token run that replaces the placeholder there (items with one)."""
        if not inputs.runs:
            return {}
        queues: dict[int, list[int]] = defaultdict(list)
        for index, (token, _) in enumerate(inputs.items):
            queues[token].append(index)
        iters = {token: iter(indexes) for token, indexes in queues.items()}
        found = {position: next(iters[t]) for position, t in enumerate(prompt_ids) if t in iters}
        return {position: inputs.runs[i] for position, i in found.items() if i in inputs.runs}

    def repeats(self, prompt_ids: list[int], inputs: MediaInputs) -> list[int]:
        """How many times each token of ``prompt_ids`` stands in the model's input (1, or a
        medium's feature count for its placeholder); a placeholder count that does not match
        the media is a :class:`MediaInputError`. Training repeats labels by the same counts."""
        queues: dict[int, list[int]] = defaultdict(list)
        for index, (token, count) in enumerate(inputs.items):
            queues[token].append(len(inputs.runs[index]) if index in inputs.runs else count)
        for kind, token in self.placeholders.items():
            places = sum(1 for t in prompt_ids if t == token)
            if places != len(queues[token]):
                noun = NOUNS[kind]
                raise MediaInputError(
                    f"the messages hold {len(queues[token])} {noun}s but the prompt has {places} {noun} "
                    f"placeholders (is the {noun} token written in the text?)"
                )
        iters = {token: iter(counts) for token, counts in queues.items()}
        return [next(iters[t]) if t in iters else 1 for t in prompt_ids]


def repeat_each(values: list[int], times: list[int]) -> list[int]:
    """``values[i]`` repeated ``times[i]`` times, in order."""
    out: list[int] = []
    for value, n in zip(values, times, strict=True):
        out.extend([value] * n)
    return out


def bounded(picture: Image.Image, max_pixels: int, min_pixels: int) -> Image.Image:
    """``picture`` resized (aspect ratio kept) so its area lies within [min_pixels, max_pixels]."""
    width, height = picture.size
    area = width * height
    if area > max_pixels:
        scale = math.sqrt(max_pixels / area)
    elif area < min_pixels:
        scale = math.sqrt(min_pixels / area)
    else:
        return picture
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return picture.resize(size)
