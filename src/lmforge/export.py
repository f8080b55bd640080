"""``lmforge export cfg.yaml export_dir=DIR``: merge LoRA adapters into the base and save a plain HF folder.

The folder (safetensors shards of ``export_size`` GB, config, generation_config, tokenizer)
loads with plain transformers or vLLM, no lmforge needed. When the config names a template,
the saved tokenizer carries that template as its jinja ``chat_template`` and the template's
end-of-turn tokens join ``generation_config.eos_token_id``, so ``apply_chat_template`` and
``generate`` behave as the model was trained. The folder is written under a temporary
name and renamed into place, so a failed export never leaves a half-written model.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from lmforge.config import Config, load_config
from lmforge.errors import ConfigError

logger = logging.getLogger(__name__)


def export_model(config: Config) -> Path:
    from lmforge.model.loader import load_model, load_tokenizer, model_path, resolve_dtype

    model_args = config.model
    if not model_args.export_dir:
        raise ConfigError("config key 'export_dir' is required: the folder to write the merged model to")
    if model_args.quantization_bit is not None:
        raise ConfigError(
            "cannot export a quantized (QLoRA) load; remove quantization_bit to merge in full precision"
        )
    if model_args.export_size <= 0:
        raise ConfigError("config key 'export_size' must be a positive number of GB per shard")
    target = Path(model_args.export_dir).expanduser()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"export_dir {str(target)!r} exists and is not a folder")

    tokenizer = load_tokenizer(model_args)
    dtype = resolve_dtype(model_args.infer_dtype)
    # adapters are merged during the load; export_device "auto" changes nothing: merging is cheap on CPU
    model = load_model(model_args, config.finetuning, trainable=False, dtype=dtype)

    template = _named_template(config, tokenizer)
    if template is not None:
        tokenizer.chat_template = template.jinja_chat_template()
        _add_stop_tokens(model, tokenizer, template.stop_words)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(staging, max_shard_size=f"{model_args.export_size}GB")
        tokenizer.save_pretrained(staging)
        _copy_processor_files(Path(model_path(model_args)), staging)
        _replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


# What a multimodal model's processors read (image sizes, normalisation, feature extractors).
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json")


def _copy_processor_files(source: Path, staging: Path) -> None:
    """Carry the base model's processor configs over, so an exported vision model takes images."""
    for name in PROCESSOR_FILES:
        if (source / name).is_file() and not (staging / name).exists():
            shutil.copy2(source / name, staging / name)


def _named_template(config: Config, tokenizer: Any) -> Any:
    name = config.data.template
    if name in (None, "", "auto"):
        return None  # the tokenizer keeps its own chat_template
    from lmforge.templates import get_template

    return get_template(name)


def _add_stop_tokens(model: Any, tokenizer: Any, stop_words: tuple[str, ...]) -> None:
    """Make ``generate`` stop at the template's end-of-turn tokens as well as at EOS."""
    config = model.generation_config
    ids = config.eos_token_id
    ids = [] if ids is None else list(ids) if isinstance(ids, list | tuple) else [ids]
    for word in stop_words:
        token_id = tokenizer.convert_tokens_to_ids(word)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    if ids:
        config.eos_token_id = ids if len(ids) > 1 else ids[0]
    if config.pad_token_id is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id


def _replace(staging: Path, target: Path) -> None:
    """Swap the finished folder into place; an older export there is removed only afterwards."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str]) -> int:
    config = load_config(argv)
    target = export_model(config)
    print(f"lmforge export: wrote {target}")
    return 0
