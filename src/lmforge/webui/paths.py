"""Checks for paths typed into the page: they exist, are of the expected kind, and hold no pickles.

Nothing the page names is loaded until it passes here. Model and adapter folders must carry
safetensors weights, so no user-given path ever reaches ``torch.load``.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.errors import ConfigError


def _folder(path: str, what: str) -> Path:
    if not path or not path.strip():
        raise ConfigError(f"{what}: enter a folder")
    folder = Path(path.strip()).expanduser()
    if not folder.exists():
        raise ConfigError(f"{what} {str(folder)!r}: no such folder")
    if not folder.is_dir():
        raise ConfigError(f"{what} {str(folder)!r} is a file; it must be a folder")
    return folder


def _safetensors_only(folder: Path, what: str) -> None:
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        found = f" (it has {', '.join(pickled[:3])}, pickle files the web UI never loads)" if pickled else ""
        raise ConfigError(
            f"{what} {str(folder)!r} holds no .safetensors weights{found}; "
            "convert it to safetensors or use `lmforge` from the command line"
        )


def _folder_with(path: str, what: str, marker: str, hint: str) -> Path:
    folder = _folder(path, what)
    if not (folder / marker).is_file():
        raise ConfigError(f"{what} {str(folder)!r} has no {marker}; {hint}")
    return folder


def _weights_folder(path: str, what: str, marker: str, hint: str) -> Path:
    folder = _folder_with(path, what, marker, hint)
    _safetensors_only(folder, what)
    return folder


def model_folder(path: str, what: str = "model folder") -> Path:
    """A Hugging Face model folder: config.json and safetensors weights."""
    return _weights_folder(path, what, "config.json", "pick a Hugging Face model folder")


def tokenizer_folder(path: str, what: str = "model folder") -> Path:
    """A folder a tokenizer loads from (the model folder; weights are not needed for that)."""
    folder = _folder(path, what)
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise ConfigError(
            f"{what} {str(folder)!r} has no tokenizer (tokenizer.json or tokenizer_config.json)"
        )
    return folder


def adapter_folder(path: str, what: str = "adapter folder") -> Path:
    """A PEFT adapter folder: adapter_config.json and safetensors weights."""
    return _weights_folder(path, what, "adapter_config.json", "pick a LoRA output folder")


def dataset_folder(path: str, what: str = "dataset folder") -> Path:
    """A folder with a dataset_info.json (LLaMA-Factory's dataset registry)."""
    return _folder_with(path, what, "dataset_info.json", "pick the folder that holds your datasets")


def config_file(path: str, what: str = "config file") -> Path:
    """An existing YAML or JSON config file."""
    if not path or not path.strip():
        raise ConfigError(f"{what}: enter a file path")
    file = Path(path.strip()).expanduser()
    if not file.is_file():
        raise ConfigError(f"{what} {str(file)!r}: no such file")
    if file.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ConfigError(f"{what} {str(file)!r}: expected a .yaml, .yml or .json file")
    return file


def output_folder(path: str, what: str = "output folder") -> Path:
    """A folder to write to: it may not exist yet, but it may not be a file."""
    if not path or not path.strip():
        raise ConfigError(f"{what}: enter a folder to write to")
    folder = Path(path.strip()).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {str(folder)!r} is a file; it must be a folder")
    return folder
