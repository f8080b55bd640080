"""Export keys from LLaMA-Factory: export_legacy_format (.bin shards), export_quantization_bit (GPTQ,
GPU only: one line on a CPU), export_hub_model_id (offline: one line, the local export kept)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmforge.config import build_config
from lmforge.config.requirements import GPTQMODEL
from lmforge.errors import ConfigError
from lmforge.export import export_model


def test_legacy_format_writes_bin_shards_that_transformers_loads(tmp_path, tiny_model):
    source = str(tiny_model("llama"))
    target = tmp_path / "exported"
    export_model(
        build_config(
            {
                "model_name_or_path": source,
                "export_dir": str(target),
                "export_legacy_format": True,
                "export_size": 1,
            }
        )
    )
    assert not list(target.glob("*.safetensors")) and list(target.glob("pytorch_model*.bin"))
    ids = torch.tensor([[1, 20, 300, 4000]])
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(source)(input_ids=ids).logits
        got = AutoModelForCausalLM.from_pretrained(target)(input_ids=ids).logits
    torch.testing.assert_close(got, expected)


@pytest.mark.skipif(torch.cuda.is_available() and GPTQMODEL.installed(), reason="GPTQ can run here")
def test_gptq_export_without_gpu_or_gptqmodel_is_one_line(tmp_path, tiny_model):
    data = tmp_path / "c4.json"
    data.write_text('[{"text": "hello world"}]', encoding="utf-8")
    config = build_config(
        {
            "model_name_or_path": str(tiny_model("llama")),
            "export_dir": str(tmp_path / "q"),
            "export_quantization_bit": 4,
            "export_quantization_dataset": str(data),
        }
    )
    with pytest.raises(ConfigError, match="export_quantization_bit") as error:
        export_model(config)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "q").exists()


def test_hub_upload_offline_says_so_and_keeps_the_export(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    target = tmp_path / "exported"
    config = build_config(
        {
            "model_name_or_path": str(tiny_model("llama")),
            "export_dir": str(target),
            "export_hub_model_id": "me/m",
        }
    )
    with pytest.raises(ConfigError, match="offline"):
        export_model(config)
    assert (target / "model.safetensors").is_file()
