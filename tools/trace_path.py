"""List the lmforge source files whose functions a training run calls, in the order each is first entered.

    python tools/trace_path.py examples/train_lora/tiny_cpu_lora_sft.yaml model_name_or_path=... max_steps=1

Used to count the files on a training sample's path (docs/architecture.md). The dataset cache
is switched off so that reading and encoding run; the run is in this process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lmforge

ROOT = Path(lmforge.__file__).resolve().parent


def main(argv: list[str]) -> int:
    from lmforge.cli.train import main as train

    order: dict[str, int] = {}

    def profile(frame, event, arg):  # noqa: ANN001 - sys.setprofile's signature
        if event == "call" and frame.f_code.co_name != "<module>":  # functions run, not modules imported
            name = frame.f_code.co_filename
            if name not in order and name.startswith(str(ROOT)):
                order[name] = len(order)

    sys.setprofile(profile)
    try:
        code = train([*argv, "overwrite_cache=true", "preprocessing_num_workers=1"])
    finally:
        sys.setprofile(None)
    for name in order:
        print(Path(name).relative_to(ROOT.parent))
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
