"""Pictures for Llama 4: tiles of the best-fitting canvas plus a global view, as structured tokens.

transformers' ``Llama4ImageProcessor`` has only a torchvision backend, and torchvision cannot be
installed beside this project's torch, so :class:`Llama4Tiler` implements its documented steps
with torch alone: pick the canvas of at most ``max_patches`` square tiles that needs the least
resizing, resize the picture into it keeping its aspect ratio (bilinear, antialiased, on uint8
pixels as torchvision does on a CPU), pad right and bottom with black, rescale and normalize in
bfloat16, cut the tiles and, when there are several, add the whole picture resized to one tile.

Each ``<|image|>`` the template writes becomes the run Llama4Processor builds: ``<|image_start|>``,
per tile row its tiles' ``<|patch|>`` tokens split by ``<|tile_x_separator|>`` and ended by
``<|tile_y_separator|>``, then ``<|image|>`` and the global view's patches, then ``<|image_end|>``.
The model fills the ``<|patch|>`` tokens with the tiles' features.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lmforge.errors import ConfigError
from lmforge.media.inputs import MediaInputs
from lmforge.media.vision import VisionProcessing

if TYPE_CHECKING:
    from PIL import Image
    from transformers import PretrainedConfig

    from lmforge.config.model import ModelArguments

RUN_TOKENS = ("<|image_start|>", "<|image_end|>", "<|patch|>", "<|tile_x_separator|>", "<|tile_y_separator|>")


def tile_grids(max_tiles: int) -> list[tuple[int, int]]:
    """Every (rows, columns) of at most ``max_tiles`` tiles, grouped by aspect ratio in the order
    the official processor lists them (its tie-break between equally good canvases)."""
    by_ratio: dict[float, list[tuple[int, int]]] = {}
    for tiles in range(max_tiles, 0, -1):
        for rows in (n for n in range(1, tiles + 1) if tiles % n == 0):
            by_ratio.setdefault(rows / (tiles // rows), []).append((rows, tiles // rows))
    return [grid for grids in by_ratio.values() for grid in grids]


def best_canvas(height: int, width: int, tile: int, max_tiles: int, largest: bool = False) -> tuple[int, int]:
    """The canvas (height, width) that fits the picture with the least change of scale: the
    smallest upscale if any canvas allows one (the largest when ``largest``), else the mildest
    downscale; among equal scales the smallest area."""
    canvases = [(rows * tile, cols * tile) for rows, cols in tile_grids(max_tiles)]
    scales = [min(h / height, w / width) for h, w in canvases]
    ups = [s for s in scales if s >= 1]
    chosen = (max(ups) if largest else min(ups)) if ups else max(scales)
    fits = [canvas for canvas, scale in zip(canvases, scales, strict=True) if scale == chosen]
    return min(fits, key=lambda c: c[0] * c[1])  # min keeps the first of equal areas


def fit_inside(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """The largest (height, width) of the picture's aspect ratio inside ``target``."""
    target_h, target_w = target
    by_width, by_height = target_w / width, target_h / height
    if by_width < by_height:
        return max(1, min(math.floor(height * by_width), target_h)), max(1, target_w)
    return max(1, target_h), max(1, min(math.floor(width * by_height), target_w))


def resize_uint8(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) uint8 resized bilinearly with antialiasing: natively on uint8 where the CPU has
    AVX2 (torchvision's choice), else in float32 and rounded back."""
    if tuple(pixels.shape[-2:]) == size:
        return pixels
    native = "AVX2" in torch.backends.cpu.get_cpu_capability()
    batch = pixels[None] if native else pixels[None].float()
    out = torch.nn.functional.interpolate(
        batch, size=list(size), mode="bilinear", align_corners=False, antialias=True
    )
    return out[0] if native else out[0].round_().to(torch.uint8)


class Llama4Tiler:
    """Llama4ImageProcessor's preprocessing (``preprocessor_config.json`` settings) without torchvision."""

    def __init__(self, settings: dict[str, Any]) -> None:
        size = settings.get("size") or {"height": 336, "width": 336}
        if size.get("height") != size.get("width"):
            raise ValueError(f"Llama 4 tiles must be square, the preprocessor config says {size}")
        self.tile = int(size["height"])
        self.max_patches = int(settings.get("max_patches", 16))
        self.resize_to_max_canvas = bool(settings.get("resize_to_max_canvas", False))
        self.rescale_factor = float(settings.get("rescale_factor", 1 / 255))
        self.image_mean = [float(v) for v in settings.get("image_mean", [0.5, 0.5, 0.5])]
        self.image_std = [float(v) for v in settings.get("image_std", [0.5, 0.5, 0.5])]

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def __call__(self, images: list[Image.Image], return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        """``pixel_values`` (all tiles, each picture's global view after its tiles; bfloat16 values)
        and ``aspect_ratios`` (tile rows and columns per picture), as the official processor gives."""
        tiles, grids = [], []
        for picture in images:
            picture_tiles, grid = self.tiles(picture)
            tiles.append(picture_tiles)
            grids.append(grid)
        return {"pixel_values": torch.cat(tiles), "aspect_ratios": torch.tensor(grids)}

    def tiles(self, picture: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
        pixels = torch.from_numpy(np.array(picture.convert("RGB"))).permute(2, 0, 1).contiguous()
        height, width = pixels.shape[-2:]
        canvas = best_canvas(height, width, self.tile, self.max_patches, self.resize_to_max_canvas)
        target = canvas
        if not self.resize_to_max_canvas:  # upscale no further than one tile's side
            target = (min(max(height, self.tile), canvas[0]), min(max(width, self.tile), canvas[1]))
        resized = resize_uint8(pixels, fit_inside(height, width, target))
        padded = torch.zeros((3, *canvas), dtype=torch.uint8)
        padded[:, : resized.shape[1], : resized.shape[2]] = resized
        rows, cols = canvas[0] // self.tile, canvas[1] // self.tile
        grid = self._normalize(padded).view(3, rows, self.tile, cols, self.tile).permute(1, 3, 0, 2, 4)
        tiles = grid.reshape(rows * cols, 3, self.tile, self.tile)
        if rows * cols > 1:
            whole = self._normalize(resize_uint8(pixels, (self.tile, self.tile)))
            tiles = torch.cat([tiles, whole[None]])
        return tiles, (rows, cols)

    def _normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Rescaled and normalized in bfloat16 (as the original model's preprocessing)."""
        scaled = pixels.to(torch.bfloat16) * self.rescale_factor
        mean = torch.tensor(self.image_mean, dtype=torch.bfloat16).view(-1, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.bfloat16).view(-1, 1, 1)
        return scaled.sub(mean).div(std)


class Llama4Processing(VisionProcessing):
    """Llama 4's pictures: tiled by :class:`Llama4Tiler`, each placeholder replaced by its token run."""

    mrope = False

    def __init__(
        self,
        tiler: Llama4Tiler,
        *,
        image_token_id: int,
        run_token_ids: dict[str, int],
        tokens_per_tile: int,
        max_pixels: int,
        min_pixels: int,
    ) -> None:
        super().__init__(tiler, image_token_id=image_token_id, max_pixels=max_pixels, min_pixels=min_pixels)
        self.run_token_ids = run_token_ids
        self.tokens_per_tile = tokens_per_tile

    @classmethod
    def for_model(  # type: ignore[override]
        cls, model_config: PretrainedConfig, path: str, model_args: ModelArguments, settings: dict[str, Any]
    ) -> Llama4Processing:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        found = {token: tokenizer.convert_tokens_to_ids(token) for token in (*RUN_TOKENS, "<|image|>")}
        ids = {token: i for token, i in found.items() if isinstance(i, int) and i != tokenizer.unk_token_id}
        missing = sorted(set(found) - set(ids))
        if missing:
            raise ConfigError(f"{path}: the tokenizer lacks Llama 4's image tokens {', '.join(missing)}")
        vision = model_config.vision_config
        try:
            tiler = Llama4Tiler(settings)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"{path}/preprocessor_config.json: {exc}") from None
        patches = (tiler.tile // int(vision.patch_size)) ** 2
        return cls(
            tiler,
            image_token_id=ids.pop("<|image|>"),
            run_token_ids=ids,
            tokens_per_tile=int(patches * float(vision.pixel_shuffle_ratio) ** 2),
            max_pixels=model_args.image_max_pixels,
            min_pixels=model_args.image_min_pixels,
        )

    def _process(self, blobs: list[bytes], where: list[str], kinds: list[str]) -> MediaInputs:
        pictures = [self._decode(data, name) for data, name in zip(blobs, where, strict=True)]
        if not pictures:
            return MediaInputs()
        out = self.image_processor(pictures)
        inputs = MediaInputs(tensors={"pixel_values": out["pixel_values"].float()})  # bf16 values, exactly
        for index, (rows, cols) in enumerate(out["aspect_ratios"].tolist()):
            run = self.token_run(rows, cols)
            inputs.items.append((self.placeholders["image"], len(run)))
            inputs.runs[index] = run
        return inputs

    def token_run(self, rows: int, cols: int) -> list[int]:
        """The tokens one picture of ``rows`` x ``cols`` tiles stands for in the prompt."""
        t = self.run_token_ids
        patches = [t["<|patch|>"]] * self.tokens_per_tile
        run = [t["<|image_start|>"]]
        if rows * cols > 1:
            for _ in range(rows):
                for col in range(cols):
                    run += patches + ([t["<|tile_x_separator|>"]] if col < cols - 1 else [])
                run.append(t["<|tile_y_separator|>"])
        return [*run, self.placeholders["image"], *patches, t["<|image_end|>"]]
