"""Tiny random-weight models of real architectures, saved with a real tokenizer.

Training, export and serving tests need a model that has the real layer layout and the real
vocabulary but runs in milliseconds. Each one is built once with a fixed seed into
``<cache>/tiny/<arch>/`` (atomically) and rebuilt when ``TINY_VERSION`` or its recipe changes.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.assets.registry import unknown_name_error
from lmforge.assets.store import MARKER, file_lock, get_asset, install_folder
from lmforge.config.environment import cache_dir
from lmforge.model.loader import auto_model_class

TINY_VERSION = 1
SEED = 1234
TINY_SIZES: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


# Qwen2.5-VL's vision tower (Qwen2.5-VL, Qwen2.5-Omni): windowed attention, one full-attention
# block here, and a merger projecting to the language model's width.
QWEN2_5_VISION: dict[str, Any] = {
    "depth": 1,
    "hidden_size": 32,
    "out_hidden_size": TINY_SIZES["hidden_size"],
    "num_heads": 2,
    "intermediate_size": 64,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 56,
    "fullatt_block_indexes": [0],
}
# A Whisper-style audio encoder over 128 log-mel bins (Qwen2-Audio, Qwen2.5-Omni).
WHISPER_TOWER: dict[str, Any] = {
    "d_model": 32,
    "encoder_layers": 1,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "num_mel_bins": 128,
    "max_source_positions": 1500,
}


@dataclass(frozen=True)
class TinyRecipe:
    """A config class from transformers, the asset whose tokenizer it uses, and per-arch settings."""

    config_class: str
    tokenizer: str
    extra: dict[str, Any] = field(default_factory=dict)
    end_of_turn: tuple[str, ...] = ()  # tokens that also stop generation (the template's turn end)
    # A multimodal model: the config key and settings of its vision or audio tower, config keys
    # naming media token ids, special tokens its real tokenizer adds to the base vocabulary, and
    # the transformers class (with settings) of its image processor or feature extractor.
    tower: tuple[str, dict[str, Any]] | None = None
    media_token_ids: dict[str, str] = field(default_factory=dict)
    added_tokens: tuple[str, ...] = ()
    preprocessor: dict[str, Any] | None = None
    # Redraw matrix weights with this std, so that greedy output depends on the input (with the
    # default 0.02 a tiny random model answers every prompt, picture or not, with the same token).
    weight_std: float | None = None
    # Set tanh gates (Mllama's cross-attention ``*_gate``, zero at initialisation) to 1, so that
    # the pictures reach the text as in a trained model.
    open_gates: bool = False
    # The family's official chat template where the base tokenizer asset carries another one
    # ("module:attribute" in transformers), and its end-of-sequence token when that differs too.
    chat_template: str = ""
    eos_token: str = ""
    # A model with several towers (Qwen2.5-Omni: vision and audio): the other towers' config keys
    # and settings, and the other processors whose settings share preprocessor_config.json.
    extra_towers: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_preprocessors: tuple[dict[str, Any], ...] = ()


def _qwen_vl(config_class: str, vision: dict[str, Any]) -> TinyRecipe:
    """A Qwen2-VL-family recipe: Qwen2.5's vocabulary and vision tokens, M-RoPE over (time, height,
    width) with head_dim / 2 = sum(mrope_section), and an image processor that keeps a picture to a
    few dozen tokens (fast tests)."""
    return TinyRecipe(
        config_class,
        "qwen2_5",
        {
            "head_dim": 16,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        },
        end_of_turn=("<|im_end|>", "<|endoftext|>"),
        tower=("vision_config", vision),
        media_token_ids={
            "image_token_id": "<|image_pad|>",
            "video_token_id": "<|video_pad|>",
            "vision_start_token_id": "<|vision_start|>",
            "vision_end_token_id": "<|vision_end|>",
        },
        preprocessor={"class": "Qwen2VLImageProcessorPil", "min_pixels": 56 * 56, "max_pixels": 224 * 224},
        weight_std=0.15,
    )


# Llama 4: a mixture-of-experts text model (2 experts, every second layer MoE) and a vision tower
# over 56x56 tiles of 14x14 patches (4 tokens a tile after its 2x2 pixel shuffle). No Llama 4
# tokenizer is available offline: Llama 3's vocabulary with Llama 4's special tokens added, and the
# official template from transformers' Llama4Processor. Its image processor needs torchvision,
# so its settings are written as JSON (lmforge's media/llama4.py implements the preprocessing).
LLAMA4_RECIPE = TinyRecipe(
    "Llama4Config",
    "llama3",
    {
        "head_dim": 16,
        "intermediate_size_mlp": 128,
        "num_local_experts": 2,
        "interleave_moe_layer_step": 2,
        "attention_chunk_size": 2048,
    },
    end_of_turn=("<|eot|>", "<|eom|>"),
    tower=(
        "vision_config",
        {
            "hidden_size": 32,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 56,
            "patch_size": 14,
            "pixel_shuffle_ratio": 0.5,
            "projector_input_dim": 64,
            "projector_output_dim": 64,
            "vision_output_dim": 64,
        },
    ),
    media_token_ids={
        "image_token_index": "<|patch|>",
        "boi_token_index": "<|image_start|>",
        "eoi_token_index": "<|image_end|>",
    },
    added_tokens=(
        "<|header_start|>",
        "<|header_end|>",
        "<|eom|>",
        "<|eot|>",
        "<|python_start|>",
        "<|python_end|>",
        "<|finetune_right_pad|>",
        "<|image_start|>",
        "<|image_end|>",
        "<|tile_x_separator|>",
        "<|tile_y_separator|>",
        "<|image|>",
        "<|patch|>",
    ),
    preprocessor={
        "image_processor_type": "Llama4ImageProcessor",
        "processor_class": "Llama4Processor",
        "size": {"height": 56, "width": 56},
        "max_patches": 4,
        "resize_to_max_canvas": False,
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
        "resample": 2,
    },
    weight_std=0.15,
    chat_template="transformers.models.llama4.processing_llama4:chat_template",
    eos_token="<|eot|>",
)


def _qwen2_audio(**text: Any) -> TinyRecipe:
    """A Qwen2-Audio recipe (``text``: language-model settings over :data:`TINY_SIZES`)."""
    return TinyRecipe(
        "Qwen2AudioConfig",
        "qwen2_5",
        text,
        end_of_turn=("<|im_end|>", "<|endoftext|>"),
        tower=(
            "audio_config",
            WHISPER_TOWER,
        ),
        media_token_ids={"audio_token_index": "<|AUDIO|>"},
        added_tokens=("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"),
        preprocessor={"class": "WhisperFeatureExtractor", "feature_size": 128},
        weight_std=0.15,
    )


TINY_ARCHES: dict[str, TinyRecipe] = {
    "qwen2": TinyRecipe("Qwen2Config", "qwen2_5", end_of_turn=("<|im_end|>", "<|endoftext|>")),
    "qwen3": TinyRecipe(
        "Qwen3Config", "qwen3", {"head_dim": 16}, end_of_turn=("<|im_end|>", "<|endoftext|>")
    ),
    "llama": TinyRecipe("LlamaConfig", "smollm2", end_of_turn=("<|im_end|>",)),
    "llama3": TinyRecipe("LlamaConfig", "llama3", end_of_turn=("<|end_of_text|>", "<|eot_id|>")),
    # Qwen2-VL: the merger projects patches into the language model's hidden size.
    "qwen2_vl": _qwen_vl(
        "Qwen2VLConfig",
        {
            "hidden_size": TINY_SIZES["hidden_size"],
            "depth": 1,
            "embed_dim": 32,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
    ),
    # Qwen2.5-VL: windowed attention in the vision tower (one full-attention block here) and a
    # merger projecting to out_hidden_size.
    "qwen2_5_vl": _qwen_vl(
        "Qwen2_5_VLConfig",
        QWEN2_5_VISION,
    ),
    # Qwen2-Audio: a Whisper-style encoder over 128 log-mel bins; its tokenizer (Qwen2.5's
    # vocabulary) adds the three audio tokens.
    "qwen2_audio": _qwen2_audio(),
    # Qwen2-Audio with 32-wide language-model heads (2 heads of 64), which vLLM's CPU attention
    # takes: the multimodal model the vllm backend's media tests run here.
    "qwen2_audio_h32": _qwen2_audio(num_attention_heads=2, num_key_value_heads=1),
    # Llama 3.2 Vision: Llama 3's vocabulary with <|image|> added (id 128256, as in the real model),
    # a tiled vision tower (56 px tiles of 14 px patches, at most 2 tiles) and the text model's
    # second layer a cross-attention layer. Its embeddings hold 8 rows more than the output head,
    # so the two are not tied.
    "mllama": TinyRecipe(
        "MllamaConfig",
        "llama3_2",
        {"tie_word_embeddings": False, "cross_attention_layers": [1]},
        end_of_turn=("<|end_of_text|>", "<|eot_id|>", "<|eom_id|>"),
        tower=(
            "vision_config",
            {
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_global_layers": 1,
                "attention_heads": 2,
                "intermediate_size": 64,
                "intermediate_layers_indices": [0],
                "vision_output_dim": 64,
                "image_size": 56,
                "patch_size": 14,
                "max_num_tiles": 2,
                "supported_aspect_ratios": [[1, 1], [1, 2], [2, 1]],
            },
        ),
        media_token_ids={"image_token_index": "<|image|>"},
        added_tokens=("<|image|>",),
        preprocessor={
            "class": "MllamaImageProcessorPil",
            "size": {"height": 56, "width": 56},
            "max_image_tiles": 2,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],  # the real processor's (CLIP's) statistics
            "image_std": [0.26862954, 0.26130258, 0.27577711],
        },
        weight_std=0.15,
        open_gates=True,
    ),
    # LLaVA-1.5: a CLIP vision tower (2 layers: features come from the second to last), a two-layer
    # projector and a Llama decoder with a Llama-2-style sentencepiece vocabulary plus <image>.
    # 56 px pictures in 14 px patches: 16 image tokens (the CLS token dropped, "default" strategy).
    "llava": TinyRecipe(
        "LlavaConfig",
        "mistral_v1",
        end_of_turn=("</s>",),
        tower=(
            "vision_config",
            {
                "model_type": "clip_vision_model",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 56,
                "patch_size": 14,
                "projection_dim": 32,
            },
        ),
        media_token_ids={"image_token_index": "<image>"},
        added_tokens=("<image>",),
        preprocessor={
            "class": "CLIPImageProcessorPil",
            "size": {"shortest_edge": 56},
            "crop_size": {"height": 56, "width": 56},
            # saved with the tokenizer as the family's processor (processor_config.json)
            "processor": {
                "class": "LlavaProcessor",
                "patch_size": 14,
                "vision_feature_select_strategy": "default",
                "num_additional_image_tokens": 1,
            },
        },
        weight_std=0.15,
    ),
    "llama4": LLAMA4_RECIPE,
    # Qwen2.5-Omni's thinker (what lmforge trains and serves; the talker is out of scope): a
    # Qwen2.5-VL-style vision tower and a Whisper-style audio tower, both projecting into the
    # language model; the Qwen2.5 vocabulary with the Omni media tokens added.
    "qwen2_5_omni": TinyRecipe(
        "Qwen2_5OmniThinkerConfig",
        "qwen2_5",
        {
            "head_dim": 16,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        },
        end_of_turn=("<|im_end|>", "<|endoftext|>"),
        tower=(
            "vision_config",
            QWEN2_5_VISION,
        ),
        extra_towers={
            "audio_config": {**WHISPER_TOWER, "n_window": 100, "output_dim": TINY_SIZES["hidden_size"]}
        },
        media_token_ids={
            "image_token_index": "<|IMAGE|>",
            "video_token_index": "<|VIDEO|>",
            "audio_token_index": "<|AUDIO|>",
            "vision_start_token_id": "<|vision_bos|>",
            "vision_end_token_id": "<|vision_eos|>",
            "audio_start_token_id": "<|audio_bos|>",
            "audio_end_token_id": "<|audio_eos|>",
        },
        added_tokens=(
            "<|AUDIO|>",
            "<|audio_bos|>",
            "<|audio_eos|>",
            "<|vision_bos|>",
            "<|vision_eos|>",
            "<|IMAGE|>",
            "<|VIDEO|>",
        ),
        preprocessor={"class": "Qwen2VLImageProcessorPil", "min_pixels": 56 * 56, "max_pixels": 224 * 224},
        extra_preprocessors=({"class": "WhisperFeatureExtractor", "feature_size": 128},),
        weight_std=0.15,
    ),
}


def _recipe(arch: str) -> TinyRecipe:
    if arch not in TINY_ARCHES:
        raise unknown_name_error("tiny model architecture", arch, list(TINY_ARCHES))
    return TINY_ARCHES[arch]


def _fingerprint(arch: str) -> str:
    recipe = asdict(_recipe(arch))
    for key in ("extra_towers", "extra_preprocessors"):  # fields added later: older recipes keep their key
        if not recipe[key]:
            del recipe[key]
    data = {"version": TINY_VERSION, "seed": SEED, "sizes": TINY_SIZES, "recipe": recipe}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def tiny_model_path(arch: str, root: Path | None = None) -> Path:
    _recipe(arch)
    return (root or cache_dir()) / "tiny" / arch


def tiny_is_current(arch: str, root: Path | None = None) -> bool:
    try:
        marker = json.loads((tiny_model_path(arch, root) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("fingerprint") == _fingerprint(arch)


def _build(arch: str, folder: Path) -> None:
    # why here: torch and transformers load only when a tiny model is built, not when it is cached
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    recipe = _recipe(arch)
    tokenizer = AutoTokenizer.from_pretrained(str(get_asset(recipe.tokenizer)))
    if recipe.added_tokens:
        tokenizer.add_tokens(list(recipe.added_tokens), special_tokens=True)
    if recipe.chat_template:
        module, _, name = recipe.chat_template.partition(":")
        tokenizer.chat_template = getattr(importlib.import_module(module), name)
    if recipe.eos_token:
        tokenizer.eos_token = recipe.eos_token
    vocab_size = -(-len(tokenizer) // 64) * 64  # round up, as real checkpoints pad their embeddings
    eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in recipe.end_of_turn]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.insert(0, tokenizer.eos_token_id)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    config_class = getattr(transformers, recipe.config_class)
    text_settings = {
        "vocab_size": vocab_size,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": eos_ids[0],
        "pad_token_id": pad_id,
        **TINY_SIZES,
        **recipe.extra,
    }
    torch.manual_seed(SEED)
    if recipe.tower is None:
        config = config_class(**text_settings)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    else:
        tie = text_settings.pop("tie_word_embeddings")
        tower_key, tower = recipe.tower
        media_ids = {key: tokenizer.convert_tokens_to_ids(tok) for key, tok in recipe.media_token_ids.items()}
        config = config_class(
            text_config=text_settings,
            **{tower_key: tower},
            **recipe.extra_towers,
            tie_word_embeddings=tie,
            **media_ids,
        )
        model = auto_model_class(config).from_config(config, dtype=torch.float32)
    if recipe.weight_std is not None:
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() >= 2:
                    parameter.normal_(0.0, recipe.weight_std)
    if recipe.open_gates:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith("_gate"):
                    parameter.fill_(1.0)
    if recipe.preprocessor is not None and "class" not in recipe.preprocessor:
        # a processor class that cannot be built here (Llama 4's needs torchvision): its saved settings
        text = json.dumps(recipe.preprocessor, indent=2)
        (folder / "preprocessor_config.json").write_text(text + "\n", encoding="utf-8")
    elif recipe.preprocessor is not None:
        settings = dict(recipe.preprocessor)
        family = dict(settings.pop("processor", None) or {})
        preprocessor = getattr(transformers, settings.pop("class"))(**settings)
        if family:  # the family's processor (tokenizer + image processor) writes its own config too
            family_class = getattr(transformers, family.pop("class"))
            family_class(image_processor=preprocessor, tokenizer=tokenizer, **family).save_pretrained(
                str(folder)
            )
        preprocessor.save_pretrained(str(folder))  # preprocessor_config.json, as released checkpoints have
        _merge_preprocessors(folder, recipe.extra_preprocessors)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids if len(eos_ids) > 1 else eos_ids[0],
        pad_token_id=pad_id,
    )
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def _merge_preprocessors(folder: Path, extra: tuple[dict[str, Any], ...]) -> None:
    """Add further processors' settings to preprocessor_config.json, as a real Omni folder holds
    its image processor's and its feature extractor's settings in that one file."""
    import transformers

    target = folder / "preprocessor_config.json"
    merged = json.loads(target.read_text(encoding="utf-8"))
    for settings in extra:
        settings = dict(settings)
        processor = getattr(transformers, settings.pop("class"))(**settings)
        merged = {**processor.to_dict(), **merged}
    target.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def tiny_model(arch: str, root: Path | None = None) -> Path:
    """A folder with a tiny random-weight ``arch`` model and its real tokenizer, built once."""
    final = tiny_model_path(arch, root)
    if tiny_is_current(arch, root):
        return final
    root = root or cache_dir()
    with file_lock(root / "locks" / f"tiny-{arch}.lock"):
        if tiny_is_current(arch, root):
            return final
        marker = {"arch": arch, "version": TINY_VERSION, "fingerprint": _fingerprint(arch)}
        return install_folder(final, lambda tmp: _build(arch, tmp), marker)
