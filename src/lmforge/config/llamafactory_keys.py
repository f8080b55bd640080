"""LLaMA-Factory 0.9.2 options that lmforge does not implement yet, with LLaMA-Factory's defaults.

A config that sets one of these to its default is accepted (the option is off anyway);
any other value stops the run with a message that names the option, rather than being ignored.
"""

from typing import Any

NO_DEFAULT = object()

UNSUPPORTED_LLAMAFACTORY_KEYS: dict[str, Any] = {
    "ppo_buffer_size": 1,
    "ppo_epochs": 4,
    "ppo_score_norm": False,
    "ppo_target": 6.0,
    "ppo_whiten_rewards": False,
    "reward_model": None,
    "reward_model_adapters": None,
    "reward_model_quantization_bit": None,
    "reward_model_type": "lora",
    "use_swanlab": False,
    "swanlab_project": "llamafactory",
    "swanlab_workspace": None,
    "swanlab_run_name": None,
    "swanlab_mode": "cloud",
    "swanlab_api_key": None,
    "swanlab_logdir": None,
    "adapter_folder": None,
    "rope_scaling": None,
    "shift_attn": False,
    "mixture_of_depths": None,
    "use_unsloth": False,
    "use_unsloth_gc": False,
    "moe_aux_loss_coef": None,
    "offload_folder": "offload",
    "ms_hub_token": None,
    "om_hub_token": None,
    "ray_run_name": None,
    "ray_storage_path": "./saves",
    "ray_num_workers": 1,
    "resources_per_worker": NO_DEFAULT,
    "placement_strategy": "PACK",
}

# Why an option above is refused, where the reason lies outside lmforge (issue 18).
UNSUPPORTED_REASONS: dict[str, str] = {
    "mixture_of_depths": (
        "'mixture_of_depths' is not supported: its package (mixture-of-depth 1.2.0, the one LLaMA-Factory uses) "
        "does not import with transformers 5 (it needs transformers.TRANSFORMERS_CACHE, removed in 5.0); remove it"
    ),
    **{
        key: f"'{key}' (training through Ray) is not supported yet; remove it, and use torchrun "
        "(FORCE_TORCHRUN=1 NPROC_PER_NODE=N) for several processes"
        for key in (
            "ray_run_name",
            "ray_storage_path",
            "ray_num_workers",
            "resources_per_worker",
            "placement_strategy",
        )
    },
}
