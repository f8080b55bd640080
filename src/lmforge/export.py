"""``lmforge export cfg.yaml export_dir=DIR``: merge LoRA adapters into the base and save a plain HF folder.

The folder (safetensors shards of ``export_size`` GB, config, generation_config, tokenizer)
loads with plain transformers or vLLM, no lmforge needed. When the config names a template,
the saved tokenizer carries that template as its jinja ``chat_template`` and the template's
end-of-turn tokens join ``generation_config.eos_token_id``, so ``apply_chat_template`` and
``generate`` behave as the model was trained. The folder is written under a temporary
name and renamed into place, so a failed export never leaves a half-written model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.config import Config, load_config
from lmforge.config.model import ModelArguments
from lmforge.config.requirements import GPTQMODEL, require
from lmforge.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lmforge.templates import Template

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

    _check_quantization(model_args)
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
        if model_args.export_quantization_bit is not None:
            del model
            _quantize_gptq(staging, tokenizer, model_args)
        if model_args.export_legacy_format:
            _to_legacy_bin(staging)
        _replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if model_args.export_hub_model_id:
        _push_to_hub(target, model_args)
    return target


def _check_quantization(model_args: ModelArguments) -> None:
    """GPTQ needs its calibration data, a CUDA GPU and gptqmodel: checked before the slow merge."""
    bits = model_args.export_quantization_bit
    if bits is None:
        return
    if bits not in (2, 3, 4, 8):
        raise ConfigError(f"config key 'export_quantization_bit' must be 2, 3, 4 or 8 (GPTQ), got {bits}")
    if not model_args.export_quantization_dataset:
        raise ConfigError(
            "config key 'export_quantization_bit' needs export_quantization_dataset (calibration texts)"
        )
    require(GPTQMODEL, "export_quantization_bit", bits)


def _quantize_gptq(folder: Path, tokenizer: PreTrainedTokenizerBase, model_args: ModelArguments) -> None:
    """Quantize the merged folder in place with GPTQ (transformers' GPTQConfig, run by gptqmodel)."""
    from transformers import AutoModelForCausalLM, GPTQConfig

    texts = _calibration_texts(model_args)
    config = GPTQConfig(
        bits=model_args.export_quantization_bit,
        dataset=texts,
        tokenizer=tokenizer,
        model_seqlen=model_args.export_quantization_maxlen,
    )
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=config, device_map="auto")
    for old in folder.glob("model*.safetensors*"):
        old.unlink()
    model.save_pretrained(folder, max_shard_size=f"{model_args.export_size}GB")


def _calibration_texts(model_args: ModelArguments) -> list[str]:
    """The first ``export_quantization_nsamples`` texts of a JSON/JSONL file (a ``text`` field, or the record)."""
    path = Path(str(model_args.export_quantization_dataset)).expanduser()
    if not path.is_file():
        raise ConfigError(f"config key 'export_quantization_dataset': file not found: {path}")
    raw = path.read_text(encoding="utf-8")
    try:
        records = (
            json.loads(raw)
            if raw.lstrip().startswith("[")
            else [json.loads(x) for x in raw.splitlines() if x.strip()]
        )
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"export_quantization_dataset {path}: invalid JSON at line {exc.lineno}: {exc.msg}"
        ) from None
    texts = [
        r["text"] if isinstance(r, dict) and "text" in r else json.dumps(r, ensure_ascii=False)
        for r in records
    ]
    return texts[: model_args.export_quantization_nsamples]


def _to_legacy_bin(folder: Path) -> None:
    """``export_legacy_format``: the safetensors shards rewritten as ``pytorch_model*.bin`` (plain tensors,
    so transformers loads them with ``weights_only=True``), with the index renamed to match."""
    import torch
    from safetensors.torch import load_file

    renames = {}
    for shard in sorted(folder.glob("model*.safetensors")):
        legacy = "pytorch_" + shard.name.removesuffix(".safetensors") + ".bin"
        torch.save(load_file(shard), folder / legacy)
        shard.unlink()
        renames[shard.name] = legacy
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text(encoding="utf-8"))
        data["weight_map"] = {k: renames.get(v, v) for k, v in data["weight_map"].items()}
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
        index.unlink()


def _push_to_hub(folder: Path, model_args: ModelArguments) -> None:
    """Upload the finished folder; offline (or unreachable) it says so in one line, the local export kept."""
    repo = model_args.export_hub_model_id
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ConfigError(
            f"wrote {folder}, but export_hub_model_id {repo!r} was not uploaded: HF_HUB_OFFLINE is set (offline)"
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api = HfApi(token=model_args.hf_hub_token)
        api.create_repo(repo, exist_ok=True, private=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder))
    except (HfHubHTTPError, OSError) as exc:
        raise ConfigError(
            f"wrote {folder}, but export_hub_model_id {repo!r} was not uploaded: {str(exc).splitlines()[0]}"
        ) from None
    logger.info("uploaded %s to the hub as %s", folder, repo)


# What a multimodal model's processors read (image sizes, normalisation, feature extractors).
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json")


def _copy_processor_files(source: Path, staging: Path) -> None:
    """Carry the base model's processor configs over, so an exported vision model takes images."""
    for name in PROCESSOR_FILES:
        if (source / name).is_file() and not (staging / name).exists():
            shutil.copy2(source / name, staging / name)


def _named_template(config: Config, tokenizer: PreTrainedTokenizerBase) -> Template | None:
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
