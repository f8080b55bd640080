"""LLaMA-Factory options lmforge does not implement (yet), with LLaMA-Factory's defaults.

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
    # accepted by lmforge once but never read (issue 13): refused unless they ask for what lmforge does
    "tool_format": None,
    "buffer_size": 16384,
    "eval_num_beams": None,
    "ignore_pad_token_for_loss": True,
    "resize_vocab": False,
    "upcast_layernorm": False,
    "upcast_lmhead_output": False,
    "print_param_status": False,
    "quantization_device_map": None,
    "freeze_language_model": False,
    "include_effective_tokens_per_second": False,
    "compute_accuracy": False,
    "num_beams": 1,
    "length_penalty": 1.0,
    "max_length": 1024,
}

# Why an option above is refused, where a reason helps more than "not supported yet".
UNSUPPORTED_REASONS: dict[str, str] = {
    "tool_format": "'tool_format' is not supported: each template has its own tool-call format; remove it "
    "and choose the template whose format you need (`lmforge template list`)",
    "buffer_size": "'buffer_size' (a shuffle buffer) is not supported: lmforge reads a stream in file order; "
    "remove it",
    "eval_num_beams": "'eval_num_beams' is not supported: lmforge generates without beam search; remove it",
    "num_beams": "'num_beams' above 1 is not supported: lmforge generates without beam search "
    "(do_sample chooses sampling or greedy); remove it",
    "length_penalty": "'length_penalty' (a beam-search setting) is not supported: lmforge generates without "
    "beam search; remove it",
    "max_length": "'max_length' is not supported: replies are bounded by max_new_tokens; set that instead",
    "ignore_pad_token_for_loss": "'ignore_pad_token_for_loss: false' is not supported: lmforge never trains "
    "on padding; remove the key",
    "compute_accuracy": "'compute_accuracy' is not supported yet; remove it (eval_loss is reported)",
    "mixture_of_depths": (
        "'mixture_of_depths' is not supported: its package (mixture-of-depth 1.2.0, the one LLaMA-Factory uses) "
        "does not import with transformers 5 (it needs transformers.TRANSFORMERS_CACHE, removed in 5.0); remove it"
    ),
}
