"""``lmforge webui``: train, watch, chat and export from a browser (Gradio), safe by default.

- ``cli``: the command; 127.0.0.1 unless auth is given.
- ``paths``: checks every path typed into the page before anything loads it.
- ``settings``: the Train form's values <-> the YAML ``lmforge train`` runs.
- ``jobs``: training runs as child processes, kept server-side so any tab reattaches, and
  recorded in their folders so a restarted server lists them again.
- ``chat``: one loaded model answering with our engine and ``Template.encode``.
- ``labels``: the English and Chinese labels.
- ``app``: the page itself.
"""
