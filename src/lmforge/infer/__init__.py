"""Inference engines behind one interface (``Engine``), and the terminal chat."""
