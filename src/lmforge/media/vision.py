"""Pictures and video for Qwen2-VL-style models: decoded safely, bounded in size, cut into patches.

Images are bounded twice, as in training: ``image_max_pixels`` / ``image_min_pixels``
(LLaMA-Factory's keys) resize the picture keeping its aspect ratio, then the model's own image
processor (its PIL backend: no torchvision needed) snaps it to the patch grid. A picture whose
header claims more than :data:`MAX_DECODED_PIXELS` is refused before it is decoded.

Video (with PyAV, ``pip install 'lmforge[video]'``) is sampled at ``video_fps`` frames per
second, at most ``video_maxlen`` frames spread over the whole clip, each bounded by
``video_max_pixels`` / ``video_min_pixels``. Frames go through the same image processor one by
one, then consecutive pairs are joined into the model's 2-frame temporal patches, so a video
costs ``frames / 2 * h * w / merge_size**2`` tokens.
"""

from __future__ import annotations

import io
import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lmforge.media.inputs import SECONDS_PER_GRID, MediaInputError, MediaInputs, MediaProcessing, bounded

if TYPE_CHECKING:
    from PIL import Image
    from transformers import PretrainedConfig

    from lmforge.config.model import ModelArguments

logger = logging.getLogger(__name__)

MAX_DECODED_PIXELS = 64 * 1024 * 1024
MAX_VIDEO_FRAMES = 20_000  # frames a clip may hold at all (about 11 minutes at 30 fps)


def video_support() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


class VisionProcessing(MediaProcessing):
    """A vision-language model's image processor, its placeholder tokens and the size bounds."""

    mrope = True

    def __init__(
        self,
        image_processor: Any,
        *,
        image_token_id: int,
        video_token_id: int | None = None,
        merge_size: int = 2,
        max_pixels: int = 768 * 768,
        min_pixels: int = 32 * 32,
        video_max_pixels: int = 256 * 256,
        video_min_pixels: int = 16 * 16,
        video_fps: float = 2.0,
        video_maxlen: int = 128,
    ) -> None:
        self.image_processor = image_processor
        self.placeholders = {"image": image_token_id}
        if video_token_id is not None and video_support():
            self.placeholders["video"] = int(video_token_id)
        elif video_token_id is not None:
            logger.warning("video input needs PyAV (pip install 'lmforge[video]'); videos will be refused")
        self.merge_size = merge_size
        self.max_pixels, self.min_pixels = max_pixels, min_pixels
        self.video_max_pixels, self.video_min_pixels = video_max_pixels, video_min_pixels
        self.video_fps, self.video_maxlen = video_fps, max(2, video_maxlen)

    @classmethod
    def for_model(
        cls, model_config: PretrainedConfig, path: str, model_args: ModelArguments
    ) -> VisionProcessing:
        from transformers import AutoImageProcessor

        processing = cls(
            AutoImageProcessor.from_pretrained(path),  # the PIL backend when torchvision is absent
            image_token_id=int(model_config.image_token_id),
            video_token_id=getattr(model_config, "video_token_id", None),
            merge_size=int(getattr(model_config.vision_config, "spatial_merge_size", 2)),
            max_pixels=model_args.image_max_pixels,
            min_pixels=model_args.image_min_pixels,
            video_max_pixels=model_args.video_max_pixels,
            video_min_pixels=model_args.video_min_pixels,
            video_fps=model_args.video_fps,
            video_maxlen=model_args.video_maxlen,
        )
        processing.time_positions = getattr(model_config, "model_type", None) == "qwen2_5_vl"
        return processing

    def _process(self, blobs: list[bytes], where: list[str], kinds: list[str]) -> MediaInputs:
        pictures, picture_names, videos = [], [], []
        decoded: list[Any] = []
        for data, name, kind in zip(blobs, where, kinds, strict=True):
            if kind == "video":
                videos.append(self._video_patches(data, name))
                decoded.append(videos[-1][3])
            else:
                pictures.append(self._decode(data, name))
                picture_names.append(name)
                decoded.append(pictures[-1])
        inputs = MediaInputs(decoded=decoded)
        image_counts: list[int] = []
        if pictures:
            try:
                out = self.image_processor(images=pictures, return_tensors="pt")
            except ValueError as exc:  # e.g. an aspect ratio the patch grid cannot take
                raise MediaInputError(f"{picture_names[0]}: the image cannot be processed ({exc})") from None
            inputs.tensors["pixel_values"] = out["pixel_values"]
            inputs.tensors["image_grid_thw"] = out["image_grid_thw"]
            image_counts = self._token_counts(out["image_grid_thw"])
        video_counts: list[int] = []
        if videos:
            inputs.tensors["pixel_values_videos"] = torch.cat([patches for patches, _, _, _ in videos])
            grid = torch.cat([g for _, g, _, _ in videos])
            # seconds each temporal patch spans (Qwen2.5-VL spaces its time positions by it)
            inputs.tensors[SECONDS_PER_GRID] = torch.tensor([seconds for _, _, seconds, _ in videos])
            inputs.tensors["video_grid_thw"] = grid
            video_counts = self._token_counts(grid)
        images_left, videos_left = iter(image_counts), iter(video_counts)
        for kind in kinds:
            count = next(videos_left) if kind == "video" else next(images_left)
            inputs.items.append((self.placeholders[kind], count))
        return inputs

    def _token_counts(self, grid: torch.Tensor) -> list[int]:
        return [int(n) for n in (grid.prod(-1) // self.merge_size**2).tolist()]

    def _decode(self, data: bytes, name: str) -> Image.Image:
        from PIL import Image, UnidentifiedImageError

        try:
            picture: Image.Image = Image.open(io.BytesIO(data))  # reads the header only
        except Image.DecompressionBombError:
            raise MediaInputError(
                f"{name}: the image is larger than the {MAX_DECODED_PIXELS} pixel limit"
            ) from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise MediaInputError(
                f"{name}: not an image that can be decoded (PNG, JPEG, WebP, GIF, ...)"
            ) from None
        width, height = picture.size
        if width * height > MAX_DECODED_PIXELS:
            raise MediaInputError(
                f"{name}: the image is {width}x{height} pixels, more than the {MAX_DECODED_PIXELS} pixel limit"
            )
        try:
            picture = picture.convert("RGB")
        except (OSError, ValueError, SyntaxError):
            raise MediaInputError(f"{name}: the image data is damaged or truncated") from None
        return bounded(picture, self.max_pixels, self.min_pixels)

    def _video_patches(
        self, data: bytes, name: str
    ) -> tuple[torch.Tensor, torch.Tensor, float, tuple[list[Image.Image], float]]:
        """The clip's sampled frames as (patches, grid) in the model's temporal-patch layout, the
        seconds one temporal patch spans, and the frames themselves with the seconds between two."""
        frames, seconds_per_frame = self._frames(data, name)
        size = frames[0].size  # a stream may change resolution midway; patches need one grid
        frames = [
            bounded(f if f.size == size else f.resize(size), self.video_max_pixels, self.video_min_pixels)
            for f in frames
        ]
        step = int(getattr(self.image_processor, "temporal_patch_size", 2))
        while len(frames) % step:
            frames.append(frames[-1])  # the last temporal patch is filled by repeating the last frame
        try:
            out = self.image_processor(images=frames, return_tensors="pt")
        except ValueError as exc:
            raise MediaInputError(f"{name}: the video frames cannot be processed ({exc})") from None
        patch_size = int(getattr(self.image_processor, "patch_size", 14))
        patches, grid = join_temporal_patches(out["pixel_values"], out["image_grid_thw"], step, patch_size)
        return patches, grid, step * seconds_per_frame, (frames, seconds_per_frame)

    def _frames(self, data: bytes, name: str) -> tuple[list[Image.Image], float]:
        """Frames sampled evenly over the clip, and the seconds between two of them."""
        import av

        try:
            total, duration = _count_frames(av, data, name)
            wanted = max(1, min(total, self.video_maxlen, math.floor(duration * self.video_fps) or 1))
            keep = set(np.linspace(0, total - 1, wanted).round().astype(int).tolist())
            frames = []
            with av.open(io.BytesIO(data), mode="r") as container:
                for index, frame in enumerate(container.decode(video=0)):
                    if index in keep:
                        frames.append(frame.to_image())
                    if index >= max(keep):
                        break
        except MediaInputError:
            raise
        except (av.FFmpegError, ValueError, OSError, IndexError, StopIteration):
            raise MediaInputError(f"{name}: not a video that can be decoded (MP4, WebM, MKV, ...)") from None
        if not frames:
            raise MediaInputError(f"{name}: the video has no frames")
        return frames, (duration / len(frames) if duration > 0 else 1.0 / self.video_fps)


def _count_frames(av: Any, data: bytes, name: str) -> tuple[int, float]:
    """Frames and seconds in the clip's first video stream, counted from packets (nothing decoded)."""
    with av.open(io.BytesIO(data)) as container:
        if not container.streams.video:
            raise MediaInputError(f"{name}: the file has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > MAX_DECODED_PIXELS:
            raise MediaInputError(f"{name}: video frames of {width}x{height} pixels are over the limit")
        total, last = 0, 0.0
        for packet in container.demux(stream):
            if packet.size:
                total += 1
                if total > MAX_VIDEO_FRAMES:
                    raise MediaInputError(f"{name}: the video has more than {MAX_VIDEO_FRAMES} frames")
                if packet.pts is not None and packet.time_base is not None:
                    end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                    last = max(last, end)
    if total == 0:
        raise MediaInputError(f"{name}: the video has no frames")
    return total, last


def join_temporal_patches(
    pixels: torch.Tensor, grid: torch.Tensor, step: int, patch_size: int, channels: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame patches (each frame repeated ``step`` times in its temporal slot) to video patches.

    ``pixels`` is (frames * n, channels * step * p * p) with ``grid`` rows (1, h, w); the result
    takes frame ``k * step + j`` as temporal slot ``j`` of patch group ``k``: (frames / step * n,
    channels * step * p * p), with one grid row (frames / step, h, w).
    """
    frames, n = grid.shape[0], int(grid[0].prod())
    side = patch_size
    per_frame = pixels.view(frames, n, channels, step, side, side)[:, :, :, 0]  # the frame itself
    groups = per_frame.view(frames // step, step, n, channels, side, side).permute(0, 2, 3, 1, 4, 5)
    video = groups.reshape(frames // step * n, channels * step * side * side)
    video_grid = torch.tensor([[frames // step, int(grid[0][1]), int(grid[0][2])]], dtype=grid.dtype)
    return video, video_grid
