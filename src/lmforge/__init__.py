"""lmforge: fine-tune open large language models and serve them."""

__version__ = "0.1.0"
