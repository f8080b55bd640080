"""Ray Train on a local CPU cluster: 2 workers with the same global batch follow the 1-process run.

The Ray run goes through `lmforge train` with LLaMA-Factory's ray keys, the way users start it;
the reference is the torchrun path's own reference (tests/train/test_distributed.py): one process
with the global batch. Data-parallel training averages the workers' gradients, so the losses agree
to float rounding and the adapters to a few ulps, not bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lmforge.config import build_config
from lmforge.config import requirements as requirements_module
from lmforge.config.requirements import RAY_TRAIN, OptionalPackage, check_ray_requirements
from lmforge.errors import ConfigError
from tests.helpers.cli import base_config, lmforge, write_dataset


def _losses(output_dir: Path) -> list[float]:
    lines = (output_dir / "trainer_log.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]


@pytest.mark.slow
@pytest.mark.skipif(not RAY_TRAIN.installed(), reason="ray is not installed (pip install 'lmforge[ray]')")
def test_two_ray_workers_match_one_process(tiny_model: Any, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    write_dataset(tmp_path / "data", count=48)
    config = base_config(str(tiny_model("llama")), tmp_path, max_steps=4, train_sampling_strategy="random")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    single = lmforge(["train", "cfg.yaml", "output_dir=single", "per_device_train_batch_size=4"], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    ray_run = lmforge(
        [
            "train",
            "cfg.yaml",
            "output_dir=saves/tiny_ray",
            "per_device_train_batch_size=2",
            "ray_run_name=tiny_lora",
            "ray_storage_path=ray_runs",
            "ray_num_workers=2",
            'resources_per_worker={"CPU": 1}',
        ],
        tmp_path,
        {"OMP_NUM_THREADS": "1"},
    )
    assert ray_run.returncode == 0, ray_run.stderr[-3000:]
    assert "trained through Ray" in ray_run.stdout, ray_run.stdout[-2000:]

    out = tmp_path / "saves" / "tiny_ray"  # output_dir, relative to where the user ran the command
    for name in ("adapter_model.safetensors", "trainer_log.jsonl", "all_results.json", "checkpoint-4"):
        assert (out / name).exists(), name
    assert (tmp_path / "ray_runs" / "tiny_lora").is_dir()  # Ray's own run folder
    results = json.loads((out / "all_results.json").read_text())
    assert results["trained_samples"] == 16  # counted over both workers: 4 steps x global batch 4

    one, two = _losses(tmp_path / "single"), _losses(out)
    assert len(one) == len(two) == 4
    for a, b in zip(one, two, strict=True):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (one, two)
    reference = load_file(tmp_path / "single" / "adapter_model.safetensors")
    trained = load_file(out / "adapter_model.safetensors")
    assert reference.keys() == trained.keys()
    for name, tensor in reference.items():
        assert (tensor - trained[name]).abs().max().item() <= 1e-5, name
        assert tensor.abs().max().item() > 0  # a trained adapter, not zeros on both sides


def test_ray_keys_ask_for_ray_and_are_typed() -> None:
    config = build_config(
        {"ray_num_workers": 4, "resources_per_worker": '{"CPU": 2}', "placement_strategy": "SPREAD"}
    )
    assert config.uses_ray and config.ray_keys[0] == "ray_num_workers"
    assert config.ray.resources_per_worker == {"CPU": 2}
    assert not build_config({}).uses_ray
    with pytest.raises(ConfigError, match="placement_strategy"):
        build_config({"placement_strategy": "EVERYWHERE"})
    with pytest.raises(ConfigError, match="ray_num_workers"):
        build_config({"ray_num_workers": 0})


def test_use_ray_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USE_RAY", "1")
    assert build_config({}).uses_ray


def test_without_ray_a_ray_key_is_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model: Any
) -> None:
    """The package is looked up under a name no machine has, as on one without ray."""
    from lmforge.cli import main

    absent = OptionalPackage("ray-absent-for-this-test", "ray_absent_for_this_test", "ray")
    monkeypatch.setattr(requirements_module, "RAY_TRAIN", absent)
    with pytest.raises(ConfigError, match=r"USE_RAY=1 .*lmforge\[ray\]"):
        check_ray_requirements(())
    write_dataset(tmp_path / "data")
    config = base_config(str(tiny_model("llama")), tmp_path, ray_num_workers=2)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["train", str(tmp_path / "cfg.yaml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("lmforge train: error:")]
    assert "'ray_num_workers'" in line and "pip install 'lmforge[ray]'" in line
    assert not (tmp_path / "out").exists()


def test_a_gpu_per_worker_without_a_gpu_is_one_line() -> None:
    """LLaMA-Factory's example asks for {GPU: 1}; on a CPU-only machine Ray would wait forever."""
    from lmforge.config.requirements import cuda_available
    from lmforge.train.ray_launch import worker_resources

    config = build_config({"ray_num_workers": 2, "resources_per_worker": {"GPU": 1}})
    if cuda_available():
        assert worker_resources(config) == ({"GPU": 1.0}, True)
        return
    with pytest.raises(ConfigError, match=r"resources_per_worker.*no CUDA GPU.*CPU: 1"):
        worker_resources(config)
    assert worker_resources(build_config({"ray_num_workers": 2})) == ({"CPU": 1.0}, False)
