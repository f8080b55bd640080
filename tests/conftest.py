"""Shared pytest fixtures: offline real assets, tiny models and the shared demo data.

Assets come from `lmforge assets fetch` (run by `make test` before pytest); a fixture fetches
what is missing on first use, so a single test file also runs on its own.
"""

from __future__ import annotations

import os

# Set before transformers is imported anywhere: tests never reach the Hugging Face hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.helpers.serving import qwen_server  # noqa: E402, F401 - a session fixture: shared by every test file

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def asset() -> Callable[[str], Path]:
    """Factory: ``asset("qwen2_5")`` -> folder that ``AutoTokenizer.from_pretrained`` loads."""
    from lmforge.assets import get_asset

    return get_asset


@pytest.fixture(scope="session")
def tiny_model() -> Callable[[str], Path]:
    """Factory: ``tiny_model("llama")`` -> folder with a tiny random-weight model and its real tokenizer.

    Arches: ``llama`` (SmolLM2 tokenizer, 49k vocab: the fast default), ``qwen2`` (Qwen2.5
    tokenizer), ``qwen3``, ``llama3``, ``qwen2_vl`` (Qwen2-VL with a tiny vision tower and a PIL image processor),
    ``mllama`` (Llama 3.2 Vision: a tiled vision tower, one cross-attention layer),
    ``llava`` (LLaVA-1.5: CLIP tower, Llama decoder, mistral v1 sentencepiece with ``<image>``, 16 tokens a picture).
    """
    from lmforge.assets import tiny_model as build

    return build


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """LLaMA-Factory's demo datasets with their dataset_info.json (``<repo>/../shared/data``)."""
    path = (REPO_ROOT.parent / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip(f"shared demo data not found at {path} (CI clones the repository beside shared/)")
    return path


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., object]:
    """Factory: ``with api_server(cfg_dict, env={...}, python=...) as server:`` runs ``lmforge api``
    as a real process on 127.0.0.1 (a free port); ``server.url`` is its ``/v1`` base URL."""
    from tests.helpers.serving import ApiServer

    def start(
        settings: dict[str, object], env: dict[str, str] | None = None, python: str | None = None, **kw
    ):
        folder = tmp_path_factory.mktemp("api")
        return ApiServer(settings, folder, env=env or {}, python=python, **kw)

    return start
