"""A progress bar for samples: done/total, samples per second and the time left (tqdm's own
rate and ETA), with generated tokens per second beside them; on stderr, so results on stdout
stay clean to pipe."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm


class SampleProgress:
    def __init__(self, total: int, initial: int = 0, desc: str = "predict") -> None:
        self.bar: Any = tqdm(
            total=total, initial=initial, desc=desc, unit="sample", dynamic_ncols=True, file=sys.stderr
        )
        self.tokens = 0
        self.started = time.perf_counter()

    def advance(self, tokens: int = 0, samples: int = 1) -> None:
        self.tokens += tokens
        elapsed = time.perf_counter() - self.started
        if tokens and elapsed > 0:
            self.bar.set_postfix_str(f"{self.tokens / elapsed:.1f} tok/s", refresh=False)
        self.bar.update(samples)

    def __enter__(self) -> SampleProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
