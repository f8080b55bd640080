"""Tokenizer and model loading, adapters, and the memory-saving loss."""
