//! What each GPT-NeoX option that neox-train does not act on would change.
//!
//! An option that changes the model, the data or the numerics is safe to
//! ignore only at a value that changes nothing (GPT-NeoX's default, or one
//! equal to it); any other value stops the run, naming the option. Options
//! that change nothing a run computes (fused kernels, logging services,
//! launchers, memory layouts) are reported as notes. An option that the
//! trainer reads is taken before this table is consulted, so implementing one
//! needs no change here.

use serde_yaml_ng::Value;

/// The values at which an option changes nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Neutral {
    /// Any value: the option changes nothing training computes.
    Any,
    /// GPT-NeoX's default only, written as YAML (`null` also takes `{}` and `[]`).
    Is(&'static str),
    /// One of these strings (compared ignoring case).
    OneOf(&'static [&'static str]),
    /// Numbers up to this bound (a parallel size of 0 or 1 is one device).
    AtMost(u64),
    /// A DeepSpeed section that is off: absent, null, or `enabled: false`.
    Disabled,
}

/// Why a value makes a run differ from GPT-NeoX's, when it does.
pub fn why_unimplemented(name: &str, value: &Value) -> Option<&'static str> {
    let (neutral, what) = classify(name)?;
    (!is_neutral(neutral, value)).then_some(what)
}

/// The class of a GPT-NeoX option and what it changes; `None` for names not
/// in the table (options the trainer reads, or unknown ones).
pub fn classify(name: &str) -> Option<(Neutral, &'static str)> {
    TABLE
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, neutral, what)| (*neutral, *what))
}

fn is_neutral(neutral: Neutral, value: &Value) -> bool {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Mapping(m) => m.is_empty(),
        Value::Sequence(s) => s.is_empty(),
        _ => false,
    };
    if value.is_null() {
        // Null is unset: GPT-NeoX's default.
        return true;
    }
    match neutral {
        Neutral::Any => true,
        Neutral::Is("null") => empty(value),
        Neutral::Is(yaml) => match serde_yaml_ng::from_str::<Value>(yaml) {
            Ok(default) => same(&default, value),
            Err(_) => false,
        },
        Neutral::OneOf(names) => {
            empty(value)
                || value
                    .as_str()
                    .is_some_and(|v| names.iter().any(|n| n.eq_ignore_ascii_case(v)))
        }
        Neutral::AtMost(bound) => empty(value) || value.as_f64().is_some_and(|v| v <= bound as f64),
        Neutral::Disabled => {
            empty(value)
                || value.as_bool() == Some(false)
                || value
                    .get("enabled")
                    .is_some_and(|e| e.is_null() || e.as_bool() == Some(false))
        }
    }
}

/// Equal as YAML values, numbers compared by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

use Neutral::{Any, Disabled, Is, OneOf};

const MODEL: &str = "changes the model";
const DATA: &str = "changes the data";
const NUMERICS: &str = "changes the numerics";
const RUN: &str = "changes how the run proceeds";
const NOTE: &str = "changes nothing training computes";

/// Every GPT-NeoX option the trainer does not read: (name, neutral values, what it changes).
const TABLE: &[(&str, Neutral, &str)] = &[
    // Parallelism and memory: ZeRO's partitions change nothing (the trainer
    // reads `zero_optimization`).
    ("zero_stage", Any, NOTE),
    ("zero_reduce_scatter", Any, NOTE),
    ("zero_contiguous_gradients", Any, NOTE),
    ("zero_reduce_bucket_size", Any, NOTE),
    ("zero_allgather_bucket_size", Any, NOTE),
    ("sequence_parallel", Any, NOTE),
    ("is_pipe_parallel", Any, NOTE),
    ("world_size", Any, NOTE),
    ("global_num_gpus", Any, NOTE),
    // GPT-NeoX exits on "row" (its row-parallel output layer is broken).
    (
        "output_layer_parallelism",
        OneOf(&["column"]),
        "GPT-NeoX refuses row: its row-parallel output layer is broken",
    ),
    ("checkpoint_in_cpu", Any, NOTE),
    ("contiguous_checkpointing", Any, NOTE),
    ("partition_activations", Any, NOTE),
    ("synchronize_each_layer", Any, NOTE),
    ("deepspeed_activation_checkpointing", Any, NOTE),
    ("activation_checkpointing", Any, NOTE),
    ("profile_backward", Any, NOTE),
    ("use_cpu_initialization", Any, NOTE),
    ("lazy_mpu_init", Any, NOTE),
    // Precision (the trainer reads `precision`, `fp16` and `bf16`).
    (
        "amp",
        Disabled,
        "Apex AMP is not implemented: use `fp16` or `bf16`",
    ),
    ("communication_data_type", Is("null"), NUMERICS),
    ("data_types", Is("null"), NUMERICS),
    // Options that act only in half precision, which `precision`/`fp16` decide.
    ("fp16_lm_cross_entropy", Any, NOTE),
    ("attention_softmax_in_fp32", Any, NOTE),
    ("apply_query_key_layer_scaling", Any, NOTE),
    ("dynamic_loss_scale", Any, NOTE),
    ("loss_scale", Any, NOTE),
    ("loss_scale_window", Any, NOTE),
    ("hysteresis", Any, NOTE),
    ("min_scale", Any, NOTE),
    ("fp32_allreduce", Any, NOTE),
    ("prescale_gradients", Any, NOTE),
    ("gradient_predivide_factor", Any, NOTE),
    ("sparse_gradients", Any, NOTE),
    // The model.
    ("sparse_attention", Is("null"), MODEL),
    ("use_qk_layernorm", Is("false"), MODEL),
    ("num_unique_layers", Is("null"), MODEL),
    ("soft_prompt_tuning", Is("null"), MODEL),
    ("moe_num_experts", Is("1"), MODEL),
    ("use_mup", Is("false"), MODEL),
    ("coord_check", Is("false"), RUN),
    ("save_base_shapes", Is("false"), RUN),
    ("z_loss", Is("0"), NUMERICS),
    // Options of layers or modes that the options above select.
    ("param_sharing_style", Any, NOTE),
    ("rpe_num_buckets", Any, NOTE),
    ("rpe_max_distance", Any, NOTE),
    ("scalenorm_epsilon", Any, NOTE),
    ("gmlp_attn_dim", Any, NOTE),
    ("dim_att", Any, NOTE),
    ("head_size", Any, NOTE),
    ("ffn_dim", Any, NOTE),
    ("moe_expert_interval", Any, NOTE),
    ("moe_top_k", Any, NOTE),
    ("moe_router_type", Any, NOTE),
    ("moe_lbl_in_fp32", Any, NOTE),
    ("moe_jitter_eps", Any, NOTE),
    ("mamba_selective_fp32_params", Any, NOTE),
    ("mamba_use_bias_in_conv", Any, NOTE),
    ("mamba_use_bias_in_linears", Any, NOTE),
    ("mup_init_scale", Any, NOTE),
    ("mup_attn_temp", Any, NOTE),
    ("mup_output_temp", Any, NOTE),
    ("mup_embedding_mult", Any, NOTE),
    // GPT-NeoX multiplies learned and sinusoidal positions by it, with or without muP.
    ("mup_rp_embedding_mult", Is("1.0"), MODEL),
    ("mup_width_scale", Any, NOTE),
    ("base_shapes_file", Any, NOTE),
    ("dpo_beta", Any, NOTE),
    ("dpo_fp32", Any, NOTE),
    ("dpo_reference_free", Any, NOTE),
    ("kto_beta", Any, NOTE),
    ("kto_fp32", Any, NOTE),
    ("kto_desirable_weight", Any, NOTE),
    ("kto_undesirable_weight", Any, NOTE),
    ("fp32_reinforce", Any, NOTE),
    ("kl_impl", Any, NOTE),
    ("kl_div_beta", Any, NOTE),
    ("reinforce_leave_one_out", Any, NOTE),
    ("precompute_model_name", Any, NOTE),
    ("weighted_sampler_alpha", Any, NOTE),
    // Fused kernels and alternative kernels for the same computation.
    ("layernorm_fusion", Any, NOTE),
    ("rmsnorm_fusion", Any, NOTE),
    ("scaled_upper_triang_masked_softmax_fusion", Any, NOTE),
    ("scaled_masked_softmax_fusion", Any, NOTE),
    ("bias_dropout_fusion", Any, NOTE),
    ("rope_fusion", Any, NOTE),
    ("use_flashattn_swiglu", Any, NOTE),
    ("fused_kernels_build_path", Any, NOTE),
    ("rotary_save_freqs_buffer", Any, NOTE),
    ("mamba_selective_scan_fusion", Any, NOTE),
    ("mamba_causal_conv_fusion", Any, NOTE),
    ("mamba_inner_func_fusion", Any, NOTE),
    ("te_columnparallel", Any, NOTE),
    ("te_rowparallel", Any, NOTE),
    ("te_layernorm_mlp", Any, NOTE),
    ("te_mha", Any, NOTE),
    ("te_fp8_format", Any, NOTE),
    ("te_fp8_wgrad", Any, NOTE),
    ("te_fp8_amax_history_len", Any, NOTE),
    ("te_fp8_amax_compute_algo", Any, NOTE),
    ("te_fp8_margin", Any, NOTE),
    // FP8 attention (the other te_fp8_* options act only under it).
    ("te_fp8_mha", Is("false"), NUMERICS),
    // Its GELU divides by 1.41421 instead of sqrt(2).
    ("onnx_safe", Is("false"), NUMERICS),
    // Optimizer and schedule.
    ("optimizer_type", OneOf(&["adam", "adamw"]), NUMERICS),
    ("use_bnb_optimizer", Is("false"), NUMERICS),
    ("scheduler", Is("null"), NUMERICS),
    ("clip_grad", Any, NOTE),
    ("elasticity", Disabled, NUMERICS),
    ("compression_training", Is("null"), NUMERICS),
    // Data.
    ("data_impl", OneOf(&["infer", "mmap"]), DATA),
    ("pack_impl", OneOf(&["packed"]), DATA),
    ("dataset_impl", OneOf(&["gpt2"]), DATA),
    ("train_impl", OneOf(&["normal"]), NUMERICS),
    ("allow_chopped", Is("true"), DATA),
    ("eod_mask_loss", Is("false"), NUMERICS),
    ("weight_by_num_documents", Is("false"), DATA),
    ("train_epochs", Is("null"), DATA),
    ("curriculum_learning", Disabled, DATA),
    ("curriculum_seqlen", Is("0"), DATA),
    ("data_efficiency", Disabled, DATA),
    ("train_label_data_paths", Is("null"), DATA),
    ("valid_label_data_paths", Is("null"), DATA),
    ("test_label_data_paths", Is("null"), DATA),
    ("train_reward_data_paths", Is("null"), DATA),
    ("valid_reward_data_paths", Is("null"), DATA),
    ("test_reward_data_paths", Is("null"), DATA),
    ("pos_train_data_paths", Is("null"), DATA),
    ("neg_train_data_paths", Is("null"), DATA),
    ("pos_valid_data_paths", Is("null"), DATA),
    ("neg_valid_data_paths", Is("null"), DATA),
    ("pos_test_data_paths", Is("null"), DATA),
    ("neg_test_data_paths", Is("null"), DATA),
    ("pos_train_label_data_paths", Is("null"), DATA),
    ("neg_train_label_data_paths", Is("null"), DATA),
    ("pos_valid_label_data_paths", Is("null"), DATA),
    ("neg_valid_label_data_paths", Is("null"), DATA),
    ("pos_test_label_data_paths", Is("null"), DATA),
    ("neg_test_label_data_paths", Is("null"), DATA),
    ("use_shared_fs", Any, NOTE),
    ("mmap_warmup", Any, NOTE),
    ("num_workers", Any, NOTE),
    ("short_seq_prob", Any, NOTE),
    ("batch_size", Any, NOTE),
    // The run: resuming, stopping, checkpoint contents.
    ("exit_interval", Is("null"), RUN),
    ("iteration", Any, NOTE),
    ("no_load_rng", Any, NOTE),
    ("no_save_optim", Any, NOTE),
    ("no_save_rng", Any, NOTE),
    ("extra_save_iters", Any, NOTE),
    ("save_iters", Any, NOTE),
    ("checkpoint_validation_with_forward_pass", Any, NOTE),
    ("checkpoint", Any, NOTE),
    ("s3_path", Any, NOTE),
    ("s3_chunk_size", Any, NOTE),
    ("do_train", Any, NOTE),
    ("do_valid", Any, NOTE),
    ("do_test", Any, NOTE),
    ("adlr_autoresume", Any, NOTE),
    ("adlr_autoresume_interval", Any, NOTE),
    ("config_files", Any, NOTE),
    ("git_hash", Any, NOTE),
    // Launchers, DeepSpeed's runner, serving.
    ("deepspeed", Any, NOTE),
    ("deepspeed_extra_args", Any, NOTE),
    ("deepspeed_mpi", Any, NOTE),
    ("deepspeed_slurm", Any, NOTE),
    ("deepscale", Any, NOTE),
    ("deepscale_config", Any, NOTE),
    ("distributed_backend", Any, NOTE),
    ("hostfile", Any, NOTE),
    ("include", Any, NOTE),
    ("exclude", Any, NOTE),
    ("num_nodes", Any, NOTE),
    ("num_gpus", Any, NOTE),
    ("master_port", Any, NOTE),
    ("master_addr", Any, NOTE),
    ("launcher", Any, NOTE),
    ("force_multi", Any, NOTE),
    ("autotuning_run", Any, NOTE),
    ("autotuning", Any, NOTE),
    ("no_ssh_check", Any, NOTE),
    ("comment", Any, NOTE),
    ("account", Any, NOTE),
    ("local_rank", Any, NOTE),
    ("rank", Any, NOTE),
    ("user_script", Any, NOTE),
    ("serve_model_weights", Any, NOTE),
    ("weight_server_port", Any, NOTE),
    ("online_dataserver_ips", Any, NOTE),
    ("online_dataserver_ports", Any, NOTE),
    // Logging, profiling, monitoring services.
    ("steps_per_print", Any, NOTE),
    ("wall_clock_breakdown", Any, NOTE),
    ("dump_state", Any, NOTE),
    ("flops_profiler", Any, NOTE),
    ("comms_logger", Any, NOTE),
    ("tensorboard", Any, NOTE),
    ("tensorboard_dir", Any, NOTE),
    ("csv_monitor", Any, NOTE),
    ("wandb", Any, NOTE),
    ("use_wandb", Any, NOTE),
    ("wandb_group", Any, NOTE),
    ("wandb_run_name", Any, NOTE),
    ("wandb_team", Any, NOTE),
    ("wandb_project", Any, NOTE),
    ("wandb_host", Any, NOTE),
    ("wandb_init_all_ranks", Any, NOTE),
    ("use_comet", Any, NOTE),
    ("comet_workspace", Any, NOTE),
    ("comet_project", Any, NOTE),
    ("comet_experiment_name", Any, NOTE),
    ("comet_experiment", Any, NOTE),
    ("comet_tags", Any, NOTE),
    ("comet_others", Any, NOTE),
    ("peak_theoretical_tflops", Any, NOTE),
    ("log_grad_pct_zeros", Any, NOTE),
    ("log_param_norm", Any, NOTE),
    ("log_grad_norm", Any, NOTE),
    ("log_optimizer_states", Any, NOTE),
    ("log_gradient_noise_scale", Any, NOTE),
    ("gradient_noise_scale_n_batches", Any, NOTE),
    ("gradient_noise_scale_cpu_offload", Any, NOTE),
    ("memory_profiling", Any, NOTE),
    ("memory_profiling_path", Any, NOTE),
    ("profile", Any, NOTE),
    ("profile_step_start", Any, NOTE),
    ("profile_step_stop", Any, NOTE),
    ("char_level_ppl", Any, NOTE),
    // Text generation and evaluation harness (other programs in GPT-NeoX).
    ("text_gen_type", Any, NOTE),
    ("temperature", Any, NOTE),
    ("top_p", Any, NOTE),
    ("top_k", Any, NOTE),
    ("return_logits", Any, NOTE),
    ("maximum_tokens", Any, NOTE),
    ("prompt_end", Any, NOTE),
    ("sample_input_file", Any, NOTE),
    ("sample_output_file", Any, NOTE),
    ("num_samples", Any, NOTE),
    ("recompute", Any, NOTE),
    ("eval_results_prefix", Any, NOTE),
    ("eval_tasks", Any, NOTE),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn neutral_values_pass_and_others_are_named() {
        for (name, text) in [
            ("amp", "{enabled: false, opt_level: O1}"),
            ("amp", "null"),
            ("zero_stage", "2"),
            ("use_qk_layernorm", "false"),
            ("z_loss", "0.0"),
            ("data_impl", "mmap"),
            ("optimizer_type", "AdamW"),
            ("hostfile", "/job/hostfile"),
            ("output_layer_parallelism", "column"),
            ("wall_clock_breakdown", "true"),
        ] {
            assert_eq!(why_unimplemented(name, &yaml(text)), None, "{name}: {text}");
        }
        for (name, text) in [
            ("amp", "{enabled: true}"),
            ("use_qk_layernorm", "true"),
            ("z_loss", "0.0001"),
            ("data_impl", "cached"),
            ("moe_num_experts", "8"),
            ("output_layer_parallelism", "row"),
        ] {
            assert!(
                why_unimplemented(name, &yaml(text)).is_some(),
                "{name}: {text}"
            );
        }
    }
}
