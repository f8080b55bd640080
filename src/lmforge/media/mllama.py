"""Pictures for Llama 3.2 Vision (``mllama``): tiles the text reads through cross-attention layers.

Mllama keeps one ``<|image|>`` token per picture in the text (never repeated): its features are
not spliced into the sequence but attended to by the cross-attention layers. A picture is
decoded and bounded as for Qwen2-VL (``image_max_pixels``), then the model's image processor
fits it onto a canvas of at most ``max_image_tiles`` tiles: ``pixel_values`` (1, pictures,
tiles, C, H, W), ``aspect_ratio_ids`` (1, pictures) and ``aspect_ratio_mask`` (1, pictures, tiles).

Which text tokens see which picture is the ``cross_attention_mask`` (batch, seq, pictures,
tiles), built for each padded batch from where the ``<|image|>`` tokens stand: a picture is
seen from its own token up to the next picture's token (adjacent picture tokens are all seen to
the end), over its real tiles only. Training builds it for the right-padded batch, the server
for the left-padded prefill; each decoding step then passes every row's last mask row again
(what transformers' ``generate`` does), so generated tokens keep seeing the last picture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from lmforge.media.inputs import MediaInputError, MediaInputs
from lmforge.media.vision import VisionProcessing

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from lmforge.config.model import ModelArguments


class MllamaProcessing(VisionProcessing):
    """Llama 3.2 Vision's tiling image processor and its one ``<|image|>`` token per picture."""

    mrope = False
    cross_attention = True

    def __init__(
        self,
        image_processor: Any,
        *,
        image_token_id: int,
        max_pixels: int = 768 * 768,
        min_pixels: int = 32 * 32,
    ) -> None:
        super().__init__(
            image_processor, image_token_id=image_token_id, max_pixels=max_pixels, min_pixels=min_pixels
        )
        self.max_tiles = int(image_processor.max_image_tiles)

    @classmethod
    def for_model(
        cls, model_config: PretrainedConfig, path: str, model_args: ModelArguments
    ) -> MllamaProcessing:
        from transformers import AutoImageProcessor

        return cls(
            AutoImageProcessor.from_pretrained(path),  # the PIL backend when torchvision is absent
            image_token_id=int(model_config.image_token_index),
            max_pixels=model_args.image_max_pixels,
            min_pixels=model_args.image_min_pixels,
        )

    def _process(self, blobs: list[bytes], where: list[str], kinds: list[str]) -> MediaInputs:
        if not blobs:
            return MediaInputs()
        for name, kind in zip(where, kinds, strict=True):
            if kind != "image":
                raise MediaInputError(f"{name}: Llama 3.2 Vision takes pictures only, not {kind}")
        pictures = [self._decode(data, name) for data, name in zip(blobs, where, strict=True)]
        try:
            out = self.image_processor(images=[pictures], return_tensors="pt")
        except ValueError as exc:
            raise MediaInputError(f"{where[0]}: the image cannot be processed ({exc})") from None
        tensors = {key: out[key] for key in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")}
        return MediaInputs(tensors, [(self.placeholders["image"], 1)] * len(pictures))

    def batch_inputs(
        self, rows: list[MediaInputs | None], input_ids: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Each row's pictures padded to the batch's most (zero pixels, aspect ratio id 0, first
        tile unmasked: the image processor's own padding), and the cross-attention mask."""
        pictured = [row for row in rows if row is not None and row.items]
        if not pictured:
            return {}
        count = max(len(row.items) for row in pictured)
        sample = pictured[0].tensors["pixel_values"]
        pixels = sample.new_zeros((len(rows), count, *sample.shape[2:]))
        ratio_ids = torch.zeros((len(rows), count), dtype=torch.long)
        ratio_mask = torch.zeros((len(rows), count, self.max_tiles), dtype=torch.long)
        ratio_mask[:, :, 0] = 1
        for i, row in enumerate(rows):
            if row is not None and row.items:
                n = len(row.items)
                pixels[i, :n] = row.tensors["pixel_values"][0]
                ratio_ids[i, :n] = row.tensors["aspect_ratio_ids"][0]
                ratio_mask[i, :n] = row.tensors["aspect_ratio_mask"][0]
        tiles = [[int(t) for t in ratio_mask[i].sum(-1).tolist()] for i in range(len(rows))]
        return {
            "pixel_values": pixels,
            "aspect_ratio_ids": ratio_ids,
            "aspect_ratio_mask": ratio_mask,
            "cross_attention_mask": cross_attention_mask(
                input_ids, self.placeholders["image"], tiles, count, self.max_tiles
            ),
        }

    def step_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = inputs.get("cross_attention_mask")
        return {} if mask is None else {"cross_attention_mask": mask[:, -1:]}


def picture_spans(ids: list[int], image_token_id: int) -> list[tuple[int, int]]:
    """(first, end) of the tokens that see each picture, in order: from its ``<|image|>`` token to
    the next one, the last to the end of ``ids``; a run of adjacent picture tokens all see the text
    after the run."""
    places = [i for i, token in enumerate(ids) if token == image_token_id]
    ends = [*places[1:], len(ids)] if places else []
    for k in range(len(places) - 2, -1, -1):
        if ends[k] == places[k] + 1:  # the next token is a picture too: see what that one sees
            ends[k] = ends[k + 1]
    return list(zip(places, ends, strict=True))


def cross_attention_mask(
    input_ids: torch.Tensor, image_token_id: int, tiles: list[list[int]], pictures: int, max_tiles: int
) -> torch.Tensor:
    """(batch, seq, pictures, max_tiles): 1 where a token sees a real tile of a picture."""
    batch, length = input_ids.shape
    mask = torch.zeros((batch, length, pictures, max_tiles), dtype=torch.long)
    for row, ids in enumerate(input_ids.tolist()):
        for k, (first, end) in enumerate(picture_spans(ids, image_token_id)[:pictures]):
            mask[row, first:end, k, : tiles[row][k]] = 1
    return mask
