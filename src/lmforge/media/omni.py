"""Qwen2.5-Omni's thinker: pictures and video as Qwen2-VL, sound as Qwen2-Audio, in one processing.

Pictures and video go through :class:`~lmforge.media.vision.VisionProcessing` and sound through
:class:`~lmforge.media.audio.AudioProcessing`; this module only adds what Omni does differently:
its tensor names (``video_second_per_grid``), its rotary positions (the thinker's own
``get_rope_index``, which places audio tokens too), and ``use_audio_in_video``.

With ``use_audio_in_video`` each video takes the sound clip written right after it
(LLaMA-Factory's ``<video><audio>``): the two placeholder groups become one,
``<|vision_bos|><|audio_bos|>`` + video and audio tokens in alternating time chunks +
``<|audio_eos|><|vision_eos|>``, laid out as Qwen2_5OmniProcessor lays them out. Chunks are
``seconds_per_chunk`` long; a video token's time is its temporal patch times
``video_second_per_grid`` times ``position_id_per_seconds``, an audio token's time its index.

The talker (speech output) is out of scope: lmforge trains and serves the thinker only.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch

from lmforge.media.audio import AudioProcessing
from lmforge.media.inputs import SECONDS_PER_GRID, MediaInputError, MediaInputs, MediaProcessing, repeat_each
from lmforge.media.vision import VisionProcessing

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from lmforge.config.model import ModelArguments

OMNI_MODELS = {"qwen2_5_omni", "qwen2_5_omni_thinker"}
VIDEO_SECONDS = "video_second_per_grid"  # Omni's name for Qwen2.5-VL's second_per_grid_ts


def thinker_config(model_config: PretrainedConfig) -> PretrainedConfig:
    """The thinker's config of a full Omni folder (thinker and talker), or the config itself."""
    return getattr(model_config, "thinker_config", None) or model_config


class OmniProcessing(MediaProcessing):
    """Qwen2.5-Omni's thinker: images and video (grid patches) and sound (Whisper features)."""

    mrope = True

    def __init__(
        self,
        vision: VisionProcessing,
        audio: AudioProcessing,
        *,
        bounds: dict[str, int],
        use_audio_in_video: bool = False,
        position_id_per_seconds: float = 25,
        seconds_per_chunk: float = 2,
    ) -> None:
        self.vision, self.audio = vision, audio
        self.placeholders = {**vision.placeholders, **audio.placeholders}
        # <|vision_bos|> <|vision_eos|> <|audio_bos|> <|audio_eos|>: what surrounds each medium
        self.bounds = bounds
        self.use_audio_in_video = use_audio_in_video
        self.position_id_per_seconds = position_id_per_seconds
        self.seconds_per_chunk = seconds_per_chunk

    @classmethod
    def for_model(
        cls, model_config: PretrainedConfig, path: str, model_args: ModelArguments
    ) -> OmniProcessing:
        config = thinker_config(model_config)
        bounds = {
            key: int(getattr(config, key))
            for key in (
                "vision_start_token_id",
                "vision_end_token_id",
                "audio_start_token_id",
                "audio_end_token_id",
            )
        }
        return cls(
            VisionProcessing.for_model(config, path, model_args),
            AudioProcessing.for_model(config, path),
            bounds=bounds,
            use_audio_in_video=bool(getattr(model_args, "use_audio_in_video", False)),
            position_id_per_seconds=float(getattr(config, "position_id_per_seconds", 25)),
            seconds_per_chunk=float(getattr(config, "seconds_per_chunk", 2)),
        )

    def fingerprint(self) -> str:
        own = [self.use_audio_in_video, self.position_id_per_seconds, self.seconds_per_chunk, self.bounds]
        return json.dumps([type(self).__name__, self.vision.fingerprint(), self.audio.fingerprint(), own])

    def _process(self, blobs: list[bytes], where: list[str], kinds: list[str]) -> MediaInputs:
        seen = [i for i, kind in enumerate(kinds) if kind != "audio"]
        heard = [i for i, kind in enumerate(kinds) if kind == "audio"]
        pick = lambda idx, items: [items[i] for i in idx]  # noqa: E731
        sight = self.vision.process(pick(seen, blobs), pick(seen, where), pick(seen, kinds)) if seen else None
        sound = (
            self.audio.process(pick(heard, blobs), pick(heard, where), pick(heard, kinds)) if heard else None
        )
        inputs = MediaInputs()
        items: dict[int, tuple[int, int]] = {}
        for part, idx in ((sight, seen), (sound, heard)):
            if part is None:
                continue
            for key, value in part.tensors.items():
                inputs.tensors[VIDEO_SECONDS if key == SECONDS_PER_GRID else key] = value
            items.update(zip(idx, part.items, strict=True))
        inputs.items = [items[i] for i in range(len(kinds))]
        return inputs

    def training_extras(self, input_ids: torch.Tensor) -> dict[str, Any]:
        """The thinker builds its positions from the grids and audio lengths: no token types, only
        whether videos carry their sound."""
        return {"use_audio_in_video": True} if self.use_audio_in_video else {}

    # ---------------------------------------------------------------- placeholder expansion

    def expand(self, prompt_ids: list[int], inputs: MediaInputs) -> list[int]:
        return self.expand_labeled(prompt_ids, prompt_ids, inputs)[0]

    def expand_labeled(
        self, ids: list[int], labels: list[int], inputs: MediaInputs
    ) -> tuple[list[int], list[int]]:
        times = self.repeats(ids, inputs)
        if not (self.use_audio_in_video and "video" in self.placeholders and self._videos(inputs)):
            return repeat_each(ids, times), repeat_each(labels, times)
        return self._interleave(ids, labels, inputs)

    def _videos(self, inputs: MediaInputs) -> int:
        return sum(1 for token, _ in inputs.items if token == self.placeholders["video"])

    def _interleave(
        self, ids: list[int], labels: list[int], inputs: MediaInputs
    ) -> tuple[list[int], list[int]]:
        """Each ``<|vision_bos|><|VIDEO|><|vision_eos|>`` merged with the next
        ``<|audio_bos|><|AUDIO|><|audio_eos|>`` into one group of alternating time chunks."""
        video, audio = self.placeholders["video"], self.placeholders["audio"]
        b = self.bounds
        counts: dict[int, list[int]] = {video: [], audio: []}
        for token, count in inputs.items:
            counts.setdefault(token, []).append(count)
        if len(counts[video]) != len(counts[audio]):
            raise MediaInputError(
                f"use_audio_in_video pairs each video with a sound clip, but there are {len(counts[video])} "
                f"videos and {len(counts[audio])} audio clips (write <audio> right after each <video>)"
            )
        grids = inputs.tensors["video_grid_thw"].tolist()
        seconds = inputs.tensors[VIDEO_SECONDS].tolist()
        merge = self.vision.merge_size**2
        queues = {token: iter(values) for token, values in counts.items()}
        out_ids: list[int] = []
        out_labels: list[int] = []
        videos_done = 0
        i = 0
        while i < len(ids):
            token = ids[i]
            if token == video:
                group = ids[i - 1 : i + 2] if i else []
                audio_at = _find(ids, [b["audio_start_token_id"], audio, b["audio_end_token_id"]], i + 2)
                if group != [b["vision_start_token_id"], video, b["vision_end_token_id"]] or audio_at < 0:
                    raise MediaInputError(
                        "use_audio_in_video: each video placeholder needs its sound clip after it "
                        "(<video><audio> in the text)"
                    )
                t, h, w = grids[videos_done]
                per_step = h * w // merge
                video_times = [
                    int(step * seconds[videos_done] * self.position_id_per_seconds)
                    for step in range(t)
                    for _ in range(per_step)
                ]
                next(queues[video])
                audio_times = list(range(next(queues[audio])))
                body = _chunked(
                    video_times, audio_times, int(self.position_id_per_seconds * self.seconds_per_chunk)
                )
                label = labels[i]
                del out_ids[-1], out_labels[-1]  # <|vision_bos|> is written again below
                merged = [
                    b["vision_start_token_id"],
                    b["audio_start_token_id"],
                    *[video if kind == "v" else audio for kind in body],
                    b["audio_end_token_id"],
                    b["vision_end_token_id"],
                ]
                out_ids.extend(merged)
                out_labels.extend([label] * len(merged))
                # drop this video's <|vision_eos|> and the paired audio group from the rest
                ids = ids[: i + 1] + ids[i + 2 : audio_at] + ids[audio_at + 3 :]
                labels = labels[: i + 1] + labels[i + 2 : audio_at] + labels[audio_at + 3 :]
                videos_done += 1
                i += 1
                continue
            if token in counts and token != video:
                n = next(queues[token])
                out_ids.extend([token] * n)
                out_labels.extend([labels[i]] * n)
            else:
                out_ids.append(token)
                out_labels.append(labels[i])
            i += 1
        return out_ids, out_labels

    # ---------------------------------------------------------------- rotary positions

    def rope_positions(
        self, model: Any, input_ids: torch.Tensor, attention: torch.Tensor, media: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Position ids (3, rows, width) and each row's offset, from the thinker's ``get_rope_index``."""
        thinker = getattr(model, "thinker", model)
        mask = media.get("feature_attention_mask")
        return thinker.get_rope_index(
            input_ids,
            image_grid_thw=media.get("image_grid_thw"),
            video_grid_thw=media.get("video_grid_thw"),
            attention_mask=attention,
            use_audio_in_video=self.use_audio_in_video,
            audio_seqlens=mask.sum(-1) if mask is not None else None,
            second_per_grids=media.get(VIDEO_SECONDS),
        )


def _find(ids: list[int], pattern: list[int], start: int) -> int:
    """Index of the first occurrence of ``pattern`` in ``ids`` at or after ``start``; -1 if none."""
    for i in range(start, len(ids) - len(pattern) + 1):
        if ids[i : i + len(pattern)] == pattern:
            return i
    return -1


def _chunk_sizes(times: list[int], size: int) -> list[int]:
    """Lengths of consecutive runs of ``times`` (non-decreasing), a run ending each time a value
    reaches the next multiple of ``size`` (one boundary per crossing, as the official processor counts)."""
    sizes, start, boundary = [], 0, size
    for i, value in enumerate(times):
        if value >= boundary:
            sizes.append(i - start)
            start, boundary = i, boundary + size
    sizes.append(len(times) - start)
    return sizes


def _chunked(video_times: list[int], audio_times: list[int], size: int) -> list[str]:
    """The interleaved order of a video's and its sound's tokens: ``v`` and ``a`` per token."""
    video_runs, audio_runs = _chunk_sizes(video_times, size), _chunk_sizes(audio_times, size)
    order: list[str] = []
    for j in range(max(len(video_runs), len(audio_runs))):
        order += ["v"] * (video_runs[j] if j < len(video_runs) else 0)
        order += ["a"] * (audio_runs[j] if j < len(audio_runs) else 0)
    return order
