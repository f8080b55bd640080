"""The OpenAI-compatible HTTP server (`lmforge api`)."""
