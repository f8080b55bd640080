#!/usr/bin/env bash
# Create (or reuse) the isolated LLaMA-Factory 0.9.2 environment used by bench/compare.py.
# Its pins (numpy<2, older transformers) clash with lmforge's, so it lives in its own venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${LLAMAFACTORY_VENV:-$here/.venvs/llamafactory}"
if [ -x "$venv/bin/llamafactory-cli" ] && "$venv/bin/python" -c "import llamafactory, datasets" 2>/dev/null; then
    echo "reusing $venv"
    exit 0
fi
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
"$venv/bin/pip" install --quiet torch==2.13.0
"$venv/bin/pip" install --quiet llamafactory==0.9.2
# pyarrow 26 needs numpy 2 while llamafactory pins numpy<2; without this every command fails at `import datasets`.
"$venv/bin/pip" install --quiet pyarrow==19.0.1
"$venv/bin/llamafactory-cli" version
