"""Every field of Hugging Face's TrainingArguments and Seq2SeqTrainingArguments, with the default
HF's dataclass gives it, written as JSON: the reference the argument tests check loom's table
against (docs/semantics/trainer.md#every-hf-argument).

Taken from transformers' training_args.py on main at commit 00349ae8 (the v5 line), from the
v4.57 file for the fields v5 removed, and from earlier releases for fields deprecated and
removed before (noted by version). Where HF's default depends on the installed torch (optim:
adamw_torch_fused from torch 2.8) the torch < 2.8 value is given."""

HF_DEFAULTS = {
    # v5 (main at 00349ae8)
    "output_dir": None,
    "per_device_train_batch_size": 8,
    "num_train_epochs": 3.0,
    "max_steps": -1,
    "learning_rate": 5e-05,
    "lr_scheduler_type": "linear",
    "lr_scheduler_kwargs": {},  # v4.57; v5: None
    "warmup_steps": 0,
    "optim": "adamw_torch",
    "optim_args": None,
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-08,
    "optim_target_modules": None,
    "gradient_accumulation_steps": 1,
    "average_tokens_across_devices": True,
    "max_grad_norm": 1.0,
    "label_smoothing_factor": 0.0,
    "bf16": False,
    "fp16": False,
    "bf16_full_eval": False,
    "fp16_full_eval": False,
    "tf32": None,
    "gradient_checkpointing": False,
    "gradient_checkpointing_kwargs": None,
    "torch_compile": False,
    "torch_compile_backend": None,
    "torch_compile_mode": None,
    "use_liger_kernel": False,
    "liger_kernel_config": None,
    "use_cache": False,
    "neftune_noise_alpha": None,
    "torch_empty_cache_steps": None,
    "auto_find_batch_size": False,
    "logging_strategy": "steps",
    "logging_steps": 500,
    "logging_first_step": False,
    "log_on_each_node": True,
    "logging_nan_inf_filter": True,
    "include_num_input_tokens_seen": "no",  # v4.57: False (loom reads it as "no" too)
    "log_level": "passive",
    "log_level_replica": "warning",
    "disable_tqdm": None,
    "report_to": "none",
    "run_name": None,
    "project": "huggingface",
    "trackio_space_id": "trackio",
    "eval_strategy": "no",
    "eval_steps": None,
    "eval_delay": 0,
    "per_device_eval_batch_size": 8,
    "prediction_loss_only": False,
    "eval_on_start": False,
    "eval_do_concat_batches": True,
    "eval_use_gather_object": False,
    "eval_accumulation_steps": None,
    "include_for_metrics": [],
    "batch_eval_metrics": False,
    "save_only_model": False,
    "save_strategy": "steps",
    "save_steps": 500,
    "save_on_each_node": False,
    "save_total_limit": None,
    "enable_jit_checkpoint": False,
    "push_to_hub": False,
    "hub_token": None,
    "hub_private_repo": None,
    "hub_model_id": None,
    "hub_strategy": "every_save",
    "hub_always_push": False,
    "hub_revision": None,
    "load_best_model_at_end": False,
    "metric_for_best_model": None,
    "greater_is_better": None,
    "ignore_data_skip": False,
    "restore_callback_states_from_checkpoint": False,
    "full_determinism": False,
    "seed": 42,
    "data_seed": None,
    "use_cpu": False,
    "accelerator_config": None,
    "parallelism_config": None,
    "dataloader_drop_last": False,
    "dataloader_num_workers": 0,
    "dataloader_pin_memory": True,
    "dataloader_persistent_workers": False,
    "dataloader_prefetch_factor": None,
    "remove_unused_columns": True,
    "label_names": None,
    "train_sampling_strategy": "random",
    "length_column_name": "length",
    "ddp_find_unused_parameters": None,
    "ddp_bucket_cap_mb": None,
    "ddp_broadcast_buffers": None,
    "ddp_backend": None,
    "ddp_timeout": 1800,
    "fsdp": None,
    "fsdp_config": None,
    "deepspeed": None,
    "debug": "",
    "skip_memory_metrics": True,
    "do_train": False,
    "do_eval": False,
    "do_predict": False,
    "resume_from_checkpoint": None,
    "warmup_ratio": 0.0,  # v4.57; v5: None
    "logging_dir": None,
    "local_rank": -1,
    # v4.57, removed in v5
    "overwrite_output_dir": False,
    "per_gpu_train_batch_size": None,
    "per_gpu_eval_batch_size": None,
    "save_safetensors": True,
    "no_cuda": False,
    "use_mps_device": False,
    "jit_mode_eval": False,
    "fp16_opt_level": "O1",
    "half_precision_backend": "auto",
    "tpu_num_cores": None,
    "tpu_metrics_debug": False,
    "past_index": -1,
    "fsdp_min_num_params": 0,
    "fsdp_transformer_layer_cls_to_wrap": None,
    "adafactor": False,
    "group_by_length": False,
    "use_legacy_prediction_loop": False,
    "include_inputs_for_metrics": False,
    "fp16_backend": "auto",
    "push_to_hub_model_id": None,
    "push_to_hub_organization": None,
    "push_to_hub_token": None,
    "mp_parameters": "",
    "torchdynamo": None,
    "ray_scope": "last",
    "include_tokens_per_second": False,
    # earlier releases
    "evaluation_strategy": "no",  # until v4.45
    "model_parallel": False,  # v4.1-v4.2
    "sharded_ddp": False,  # a bool in v4.2-v4.3
    "use_ipex": False,  # v4.21-v4.5x
    "xpu_backend": None,  # v4.21-v4.3x
    "split_batches": None,  # v4.35-v4.40
    "dispatch_batches": None,  # v4.35-v4.40
    "tp_size": 0,  # v4.50-v4.52
    # Seq2SeqTrainingArguments
    "sortish_sampler": False,
    "predict_with_generate": False,
    "generation_max_length": None,
    "generation_num_beams": None,
    "generation_config": None,
}

# Where loom writes another value than HF's default into training_args.json, and why
# (docs/semantics/trainer.md#training-arguments).
LOOM_WRITES_OTHERWISE = {
    "output_dir", "logging_dir", "run_name", "do_eval", "eval_steps", "disable_tqdm",  # derived for the run
    "eval_strategy",  # None, so that the alias can tell "not given"
    "neftune_noise_alpha",  # 0.0, which is off as None is
    "label_names", "report_to",  # lists: [] for None
    "accelerator_config",  # HF writes AcceleratorConfig's dict (checked on its own)
    "debug", "fsdp",  # HF writes the parsed option lists
    "sharded_ddp",  # v4.2's bool: loom writes v4.4-v4.34's option list
}

# HF's AcceleratorConfig().to_dict() without use_configured_state, as HF's training_args.json has it.
ACCELERATOR_CONFIG = {"split_batches": False, "dispatch_batches": None, "even_batches": True,
                      "use_seedable_sampler": True, "non_blocking": False, "gradient_accumulation_kwargs": None}


def cli_text(value):
    """The command-line text of a default, or None when it has none (a null, an empty list)."""
    if value is None or value == [] or value == {}:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
