//! DeepSpeed's ZeRO-Offload keys inside `zero_optimization`, as DeepSpeed's
//! config reads them: `offload_optimizer: {device: cpu|nvme|none, pin_memory,
//! ...}` and its deprecated form `cpu_offload: true` (both together is an
//! error there too), `offload_param` and `cpu_offload_param(s)` (parameters
//! on the host: ZeRO stage 3 only). DeepSpeed applies `offload_optimizer`
//! through its ZeRO optimizer, so it needs stage 1 or more.

use std::path::Path;

use serde_yaml_ng::Value;

use super::bad;
use super::yaml::{canonical, show};
use crate::dist::ZeroStage;
use crate::error::ConfigError;

/// The offload keys of one `zero_optimization` section, as read.
#[derive(Debug, Default)]
pub(super) struct OffloadKeys {
    /// `offload_optimizer` asks for the host (`Some(false)`: present, off).
    optimizer: Option<bool>,
    /// `cpu_offload`, the deprecated form.
    cpu_offload: Option<bool>,
}

impl OffloadKeys {
    /// Reads `key` (canonical, inside `zero_optimization`) if it is an offload
    /// key; returns whether it was one.
    pub(super) fn read(
        &mut self,
        key: &str,
        value: &Value,
        file: Option<&Path>,
    ) -> Result<bool, ConfigError> {
        let at = format!("zero_optimization.{key}");
        match key {
            "offload_optimizer" => self.optimizer = Some(optimizer(value, file, &at)?),
            "cpu_offload" => self.cpu_offload = Some(flag(value, file, &at)?),
            "cpu_offload_use_pin_memory" => {
                // Page-locked host buffers speed transfers; results are the same.
                flag(value, file, &at)?;
            }
            "offload_param" => {
                if device(value, file, &at)? != "none" {
                    return Err(params_refused(file, &at));
                }
            }
            "cpu_offload_param" | "cpu_offload_params" => {
                if flag(value, file, &at)? {
                    return Err(params_refused(file, &at));
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether the optimizer goes to the host, checked against `stage`.
    pub(super) fn resolve(
        self,
        stage: ZeroStage,
        file: Option<&Path>,
    ) -> Result<bool, ConfigError> {
        let on = match (self.optimizer, self.cpu_offload) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    file,
                    "zero_optimization.cpu_offload",
                    "set either `offload_optimizer` or its deprecated form `cpu_offload`, not \
                     both (DeepSpeed refuses the pair too)",
                ));
            }
            (Some(on), None) | (None, Some(on)) => on,
            (None, None) => false,
        };
        if on && stage == ZeroStage::Off {
            let key = match self.optimizer {
                Some(_) => "zero_optimization.offload_optimizer",
                None => "zero_optimization.cpu_offload",
            };
            return Err(bad(
                file,
                key,
                "ZeRO-Offload needs `zero_optimization.stage` 1 or 2: DeepSpeed offloads \
                 the optimizer through its ZeRO optimizer only",
            ));
        }
        Ok(on)
    }
}

fn flag(value: &Value, file: Option<&Path>, at: &str) -> Result<bool, ConfigError> {
    match value {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(*b),
        other => Err(bad(
            file,
            at,
            format!("expected true or false, found {}", show(other)),
        )),
    }
}

/// The `device` of an offload section (`none` when absent, as DeepSpeed's default).
fn device(value: &Value, file: Option<&Path>, at: &str) -> Result<String, ConfigError> {
    let section = match value {
        Value::Null => return Ok("none".into()),
        Value::Mapping(m) => m,
        other => {
            return Err(bad(
                file,
                at,
                format!(
                    "expected a section such as {{device: cpu, pin_memory: true}}, found {}",
                    show(other)
                ),
            ));
        }
    };
    match section.get("device") {
        None | Some(Value::Null) => Ok("none".into()),
        Some(Value::String(d)) if matches!(d.as_str(), "none" | "cpu" | "nvme") => Ok(d.clone()),
        Some(other) => Err(bad(
            file,
            &format!("{at}.device"),
            format!("`{}`: expected cpu, nvme or none", show(other)),
        )),
    }
}

/// `offload_optimizer`: on for `device: cpu`.
fn optimizer(value: &Value, file: Option<&Path>, at: &str) -> Result<bool, ConfigError> {
    let device = device(value, file, at)?;
    if let Value::Mapping(section) = value {
        for (key, v) in section {
            let key = key.as_str().map(canonical).unwrap_or_default();
            let here = format!("{at}.{key}");
            match key.as_str() {
                "device" => {}
                "pin_memory" => {
                    flag(v, file, &here)?;
                }
                "ratio" => {
                    let ratio = v.as_f64().ok_or_else(|| {
                        bad(file, &here, format!("expected a number, found {}", show(v)))
                    })?;
                    if ratio != 1.0 {
                        return Err(bad(
                            file,
                            &here,
                            format!(
                                "{ratio}: partial offload is a ZeRO stage 3 feature in DeepSpeed; \
                                 neox-train offloads all of the optimizer (ratio 1)"
                            ),
                        ));
                    }
                }
                // NVMe settings: nothing to do for the host's memory.
                "nvme_path" | "buffer_count" | "pipeline_read" | "pipeline_write" | "fast_init" => {
                }
                other => {
                    return Err(bad(
                        file,
                        &here,
                        format!(
                            "`{other}` is not a DeepSpeed offload_optimizer setting (device, \
                             pin_memory, ratio, nvme_path, buffer_count, pipeline_read, \
                             pipeline_write, fast_init)"
                        ),
                    ));
                }
            }
        }
    }
    match device.as_str() {
        "cpu" => Ok(true),
        "none" => Ok(false),
        _ => Err(bad(
            file,
            &format!("{at}.device"),
            "nvme (ZeRO-Infinity) is not supported: neox-train offloads the optimizer to \
             host memory (device: cpu)",
        )),
    }
}

fn params_refused(file: Option<&Path>, at: &str) -> ConfigError {
    bad(
        file,
        at,
        "parameter offload keeps the parameters on the host, which DeepSpeed does under \
         ZeRO stage 3 only; neox-train has stages 0 to 2: remove it (offload_optimizer \
         moves the optimizer state)",
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::NeoxArgs;
    use crate::config::yaml::Options;
    use crate::dist::ZeroStage;
    use crate::error::ConfigError;

    const BASE: &str = "num_layers: 2\nhidden_size: 64\nnum_attention_heads: 4\nseq_length: 32\n\
                        train_micro_batch_size_per_gpu: 2\ntrain_iters: 10\n";
    const ADAM: &str = "optimizer: {type: Adam, params: {lr: 0.001}}\n";

    fn parse(text: &str) -> Result<NeoxArgs, ConfigError> {
        let mut o = Options::default();
        o.merge_str(&format!("{BASE}{text}"), Path::new("t.yml"))?;
        NeoxArgs::from_options(o)
    }

    /// The error's text, which must name `key` and say `why`.
    fn refused(text: &str, key: &str, why: &str) {
        let message = match parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        };
        assert!(message.contains(key), "{text}: {message}");
        assert!(message.contains(why), "{text}: {message}");
        assert!(message.contains("t.yml"), "{text}: {message}");
    }

    #[test]
    fn offload_optimizer_and_its_old_form_turn_offload_on() {
        for zero in [
            "{stage: 1, offload_optimizer: {device: cpu, pin_memory: true}}",
            "{stage: 2, offload_optimizer: {device: cpu, ratio: 1.0, buffer_count: 4}}",
            "{stage: 2, cpu_offload: true, cpu_offload_use_pin_memory: true}",
        ] {
            let args = parse(&format!("{ADAM}zero_optimization: {zero}\n")).unwrap();
            assert!(args.optim.offload, "{zero}");
            assert_ne!(args.training.zero_stage, ZeroStage::Off);
        }
        // GPT-NeoX's host Adam is the same update.
        let args = parse(
            "optimizer: {type: cpu_adam, params: {lr: 0.001}}\n\
             zero_optimization: {stage: 1, offload_optimizer: {device: cpu}}\n",
        )
        .unwrap();
        assert!(args.optim.offload);
    }

    #[test]
    fn offload_off_in_any_spelling_is_accepted() {
        for zero in [
            "{stage: 1}",
            "{stage: 1, cpu_offload: false}",
            "{stage: 0, cpu_offload: false, cpu_offload_params: false}",
            "{stage: 0, offload_optimizer: {device: none}}",
            "{stage: 2, offload_optimizer: null, offload_param: {device: none}}",
            "{stage: 0, offload_optimizer: {}}",
        ] {
            let args = parse(&format!("{ADAM}zero_optimization: {zero}\n")).unwrap();
            assert!(!args.optim.offload, "{zero}");
        }
        assert!(!parse(ADAM).unwrap().optim.offload);
    }

    #[test]
    fn bad_offload_settings_are_refused_by_name() {
        let z = |zero: &str| format!("{ADAM}zero_optimization: {zero}\n");
        refused(
            &z("{stage: 2, offload_param: {device: cpu}}"),
            "zero_optimization.offload_param",
            "stage 3",
        );
        refused(
            &z("{stage: 2, cpu_offload_params: true}"),
            "zero_optimization.cpu_offload_params",
            "stage 3",
        );
        refused(
            &z("{stage: 2, cpu_offload_param: true}"),
            "zero_optimization.cpu_offload_param",
            "stage 3",
        );
        refused(
            &z("{stage: 2, offload_optimizer: {device: nvme, nvme_path: /nvme}}"),
            "zero_optimization.offload_optimizer.device",
            "nvme",
        );
        refused(
            &z("{stage: 2, offload_optimizer: {device: gpu}}"),
            "zero_optimization.offload_optimizer.device",
            "expected cpu, nvme or none",
        );
        refused(
            &z("{stage: 2, offload_optimizer: true}"),
            "zero_optimization.offload_optimizer",
            "expected a section",
        );
        refused(
            &z("{stage: 2, offload_optimizer: {device: cpu, pin_memroy: true}}"),
            "zero_optimization.offload_optimizer.pin_memroy",
            "not a DeepSpeed offload_optimizer setting",
        );
        refused(
            &z("{stage: 2, offload_optimizer: {device: cpu, pin_memory: yes please}}"),
            "zero_optimization.offload_optimizer.pin_memory",
            "expected true or false",
        );
        refused(
            &z("{stage: 2, offload_optimizer: {device: cpu, ratio: 0.5}}"),
            "zero_optimization.offload_optimizer.ratio",
            "stage 3",
        );
        refused(
            &z("{stage: 2, cpu_offload: 1}"),
            "zero_optimization.cpu_offload",
            "expected true or false",
        );
        // DeepSpeed applies it through its ZeRO optimizer only.
        refused(
            &z("{stage: 0, offload_optimizer: {device: cpu}}"),
            "zero_optimization.offload_optimizer",
            "stage` 1 or 2",
        );
        refused(
            &format!("{ADAM}zero_optimization: {{cpu_offload: true}}\n"),
            "zero_optimization.cpu_offload",
            "stage` 1 or 2",
        );
        // The old and new forms together, as DeepSpeed refuses them.
        refused(
            &z("{stage: 1, cpu_offload: false, offload_optimizer: {device: cpu}}"),
            "zero_optimization.cpu_offload",
            "not both",
        );
        // The host Adam without the host.
        refused(
            "optimizer: {type: cpu_adam, params: {lr: 0.001}}\nzero_optimization: {stage: 1}\n",
            "optimizer",
            "offload_optimizer",
        );
        refused(
            "optimizer: {type: cpu_torch_adam, params: {lr: 0.001}}\n",
            "optimizer",
            "not supported",
        );
    }
}
