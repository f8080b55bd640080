"""The output folder: checked before any work, resumed from, and written atomically at the end.

Rules (LLaMA-Factory's): ``resume_from_checkpoint: true`` means the latest ``checkpoint-N`` in
``output_dir``; a path means that checkpoint. Without it, a non-empty ``output_dir`` that holds a
checkpoint is resumed from its latest one; a non-empty one without checkpoints stops the run
unless ``overwrite_output_dir: true``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError

logger = logging.getLogger(__name__)

_LATEST_WORDS = {"true", "latest", "yes", "1"}
_OFF_WORDS = {"false", "no", "0", "none", "null", ""}
_IGNORED_ENTRIES = {".staging", "trainer_log.jsonl"}


def resolve_resume(output_dir: str, resume: str | bool | None, *, overwrite: bool) -> str | None:
    """The checkpoint to resume from, or None to start fresh; a clear error where neither is safe."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(output_dir)
    word = str(resume).strip().lower() if resume is not None else None
    if word in _LATEST_WORDS:
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if last is None:
            raise ConfigError(
                f"resume_from_checkpoint: true, but output_dir {str(out)!r} holds no checkpoint-N folder; "
                "remove the key to start a new run"
            )
        logger.info("resuming from the latest checkpoint %s", last)
        return last
    if word is not None and word not in _OFF_WORDS:
        path = Path(str(resume)).expanduser()
        if not (path / "trainer_state.json").is_file():
            raise ConfigError(
                f"resume_from_checkpoint {str(resume)!r} is not a checkpoint folder (no trainer_state.json); "
                "give a checkpoint-N folder or true for the latest"
            )
        return str(path)
    if out.is_dir() and any(entry.name not in _IGNORED_ENTRIES for entry in out.iterdir()):
        if overwrite:
            logger.warning(
                "output_dir %s is not empty; overwrite_output_dir: true, so files there are replaced", out
            )
            return None
        last = get_last_checkpoint(str(out))
        if last is not None:
            logger.info(
                "output_dir %s holds %s: resuming from it (set overwrite_output_dir: true to start over)",
                out,
                last,
            )
            return last
        raise ConfigError(
            f"output_dir {str(out)!r} already exists and is not empty; choose another output_dir, "
            "set overwrite_output_dir: true, or resume_from_checkpoint: <checkpoint folder>"
        )
    return None


def write_json(path: Path, data: Any) -> None:
    """Write JSON to a temporary name beside ``path``, then rename it into place."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def move_contents(source: Path, dest: Path) -> None:
    """Rename every entry of ``source`` into ``dest`` (each rename is atomic), then remove ``source``."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        target = dest / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    source.rmdir()


def plot_losses(log_history: Iterable[dict[str, Any]], output_dir: Path) -> list[Path]:
    """``training_loss.png`` (and ``training_eval_loss.png`` when evaluated, ``training_rewards_accuracies.png``
    for preference stages) from the trainer's log history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = list(log_history)
    written = []
    plots = (
        ("loss", "training_loss.png"),
        ("eval_loss", "training_eval_loss.png"),
        ("rewards/accuracies", "training_rewards_accuracies.png"),  # preference stages
    )
    for key, name in plots:
        points = [(r["step"], r[key]) for r in history if key in r and "step" in r]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        figure, axis = plt.subplots(figsize=(6.4, 4.0))
        axis.plot(steps, values, alpha=0.4 if len(values) > 10 else 1.0, label="raw")
        if len(values) > 10:
            axis.plot(steps, _smooth(list(values)), label="smoothed")
            axis.legend()
        axis.set_xlabel("step")
        axis.set_ylabel(key)
        axis.set_title(f"{key} of {output_dir.name}")
        target = output_dir / name
        tmp = output_dir / f".{name}.tmp.png"
        figure.savefig(tmp, dpi=100, format="png")
        plt.close(figure)
        os.replace(tmp, target)
        written.append(target)
    return written


def _smooth(values: list[float], weight: float = 0.9) -> list[float]:
    out, last = [], values[0]
    for value in values:
        last = last * weight + (1 - weight) * value
        out.append(last)
    return out
