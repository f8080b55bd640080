"""``lmforge estimate cfg.yaml [key=value ...]``: a training run's peak memory and step time, no weights loaded."""

from __future__ import annotations

from lmforge.config import load_config
from lmforge.data import load_sft_datasets
from lmforge.model.loader import load_tokenizer
from lmforge.templates import resolve_template
from lmforge.train.estimate import estimate_run
from lmforge.train.workflow import packing_enabled, training_arguments, training_dtype


def main(argv: list[str]) -> int:
    """Print the estimate table; exit 0 when the run fits, 1 when it does not."""
    config = load_config(argv)
    config.training_kwargs.setdefault("output_dir", "estimate-only")  # nothing is written
    args = training_arguments(config)
    tokenizer = load_tokenizer(config.model)
    template = resolve_template(config.data.template, tokenizer)
    data = load_sft_datasets(config, tokenizer, template, config.finetuning.stage)
    estimate = estimate_run(
        config,
        data.train,
        dtype=training_dtype(config, args),
        packing=packing_enabled(config),
        log_table=False,
    )
    if estimate is None:
        print("lmforge estimate: the model's config.json could not be read (see the log above)")
        return 1
    print(estimate.table())
    return 0 if estimate.fits else 1
