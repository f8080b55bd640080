"""Start-up cost: ``lmforge version`` against ``llamafactory-cli version``, wall time and peak RSS.

A user pays the start-up on every command, so it is measured as a user sees it: a fresh process
each time, runs alternating between the two tools, medians printed.

    python bench/startup.py [--repeats 7] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import run_measured  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LMFORGE = REPO / ".venv" / "bin" / "lmforge"
LLAMAFACTORY_VENV = Path(os.environ.get("LLAMAFACTORY_VENV", REPO / "bench" / ".venvs" / "llamafactory"))


def commands() -> dict[str, list[str]]:
    """The two commands compared; each tool runs from its own environment."""
    return {
        "lmforge": [str(LMFORGE), "version"],
        "llamafactory": [str(LLAMAFACTORY_VENV / "bin" / "llamafactory-cli"), "version"],
    }


def measure(repeats: int) -> dict[str, dict[str, float | list[float]]]:
    """Alternate the tools ``repeats`` times after one unmeasured warm-up each (page cache)."""
    cmds = commands()
    env = dict(os.environ, HF_HUB_OFFLINE="1", DISABLE_VERSION_CHECK="1")
    for name, cmd in cmds.items():
        run_measured(cmd, env=env, timeout_s=300).check(f"{name} warm-up")
    runs: dict[str, dict[str, list[float]]] = {name: {"wall_s": [], "peak_rss_mib": []} for name in cmds}
    for _ in range(repeats):
        for name, cmd in cmds.items():
            m = run_measured(cmd, env=env, timeout_s=300).check(name)
            runs[name]["wall_s"].append(m.wall_s)
            runs[name]["peak_rss_mib"].append(m.peak_rss_mib)
    result: dict[str, dict[str, float | list[float]]] = {}
    for name, series in runs.items():
        result[name] = {
            "wall_s": statistics.median(series["wall_s"]),
            "peak_rss_mib": statistics.median(series["peak_rss_mib"]),
            "wall_s_runs": series["wall_s"],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = measure(args.repeats)
    for name, fig in result.items():
        print(
            f"{name:13s} wall {fig['wall_s']:.3f} s  peak RSS {fig['peak_rss_mib']:.1f} MiB (median of {args.repeats})"
        )
    lm, lf = result["lmforge"], result["llamafactory"]
    print(
        f"ratio (llamafactory / lmforge): wall {lf['wall_s'] / lm['wall_s']:.1f}x, "
        f"RSS {lf['peak_rss_mib'] / lm['peak_rss_mib']:.1f}x"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
