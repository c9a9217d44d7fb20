//! The plan as text: sections a person reads top to bottom. The config
//! section is valid YAML (each value with its source as a comment).

use std::fmt::Write;

use super::{DataSection, Plan, memory::Precision};
use crate::config::yaml::Source;

pub fn text(p: &Plan) -> String {
    let mut out = String::new();
    let files: Vec<String> = p.files.iter().map(|f| f.display().to_string()).collect();
    let _ = writeln!(out, "# neox-train plan for {}", files.join(" + "));
    config(&mut out, p);
    model(&mut out, p);
    data(&mut out, p);
    layout(&mut out, p);
    memory(&mut out, p);
    fit(&mut out, p);
    notes(&mut out, p);
    out
}

fn section(out: &mut String, title: &str) {
    let _ = writeln!(out, "\n## {title}");
}

fn config(out: &mut String, p: &Plan) {
    section(
        out,
        "config: every option as resolved (# the file that set it, default, or derived)",
    );
    let ignored = |key: &str| {
        p.notes.not_acted_on.iter().any(|n| n.key == key)
            || p.notes.refused.iter().any(|r| r.key == key)
    };
    // Scalars as YAML writes them, mappings and lists in flow style (JSON) on one line.
    let line = |key: &str, value: &serde_yaml_ng::Value| {
        let value = match value {
            serde_yaml_ng::Value::Mapping(_) | serde_yaml_ng::Value::Sequence(_) => {
                serde_json::to_string(value).unwrap_or_default()
            }
            scalar => serde_yaml_ng::to_string(scalar)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        format!("{key}: {value}")
    };
    let width = p
        .config
        .iter()
        .map(|r| line(&r.key, &r.value).len())
        .max()
        .unwrap_or(0)
        .min(48);
    for (title, read) in [
        ("", true),
        ("# set, not acted on by neox-train (see notes):", false),
    ] {
        let rows: Vec<_> = p
            .config
            .iter()
            .filter(|r| ignored(&r.key) != read)
            .collect();
        if rows.is_empty() {
            continue;
        }
        if !title.is_empty() {
            let _ = writeln!(out, "{title}");
        }
        for r in rows {
            let source = match &r.source {
                Source::File(f) => f.display().to_string(),
                Source::Default => "default".into(),
                Source::Derived => "derived".into(),
            };
            let _ = writeln!(out, "{:width$}  # {source}", line(&r.key, &r.value));
        }
    }
}

fn model(out: &mut String, p: &Plan) {
    let m = &p.model;
    let c = &m.params;
    section(out, "model");
    let _ = writeln!(
        out,
        "{} layers, hidden {}, {} heads, seq_length {}, vocabulary {} (padded)",
        m.num_layers, m.hidden_size, m.num_attention_heads, m.seq_length, m.vocab_size
    );
    let _ = writeln!(out, "parameters        {}", count(c.total));
    let _ = writeln!(out, "  embedding       {}", count(c.embedding));
    let _ = writeln!(
        out,
        "  per layer       {}  x {} layers = {}",
        count(c.per_layer),
        m.num_layers,
        count(c.layers)
    );
    let _ = writeln!(out, "  final norm      {}", count(c.final_norm));
    if m.tied_embeddings {
        let _ = writeln!(out, "  output          tied to the embedding");
    } else {
        let _ = writeln!(out, "  output          {}", count(c.output));
    }
    let _ = writeln!(
        out,
        "FLOPs per token   {} (forward + backward: 6 x matmul weights + 12 L s h)",
        flops(m.flops_per_token)
    );
    let _ = writeln!(
        out,
        "FLOPs per step    {} for {} tokens; {} with activation recomputation",
        flops(m.flops_per_step),
        thousands(m.tokens_per_step),
        flops(m.flops_per_step_recomputed)
    );
}

fn data(out: &mut String, p: &Plan) {
    section(out, "data");
    let d = match &p.data {
        DataSection::None => {
            let _ = writeln!(
                out,
                "no data configured (`data_path` or `train_data_paths`)"
            );
            return;
        }
        DataSection::Unreadable { error } => {
            let _ = writeln!(out, "cannot read the data: {error}");
            let _ = writeln!(out, "(prepare it first, e.g. `neox-data prepare enron`)");
            return;
        }
        DataSection::Read(d) => d,
    };
    for s in &d.shards {
        let _ = writeln!(
            out,
            "shard {}: {} documents, {} tokens, {}",
            s.prefix.display(),
            thousands(s.documents),
            thousands(s.tokens),
            bytes(s.bin_bytes)
        );
    }
    let _ = writeln!(
        out,
        "{:<6} {:>14} {:>11} {:>15} {:>7} {:>15}  index cache",
        "split", "samples asked", "documents", "tokens/epoch", "epochs", "samples held"
    );
    for split in &d.splits {
        for part in &split.parts {
            let name = if split.parts.len() > 1 {
                format!("{} {}", split.name, part.prefix.display())
            } else {
                split.name.to_string()
            };
            let _ = writeln!(
                out,
                "{:<6} {:>14} {:>11} {:>15} {:>7} {:>15}  {}",
                name,
                thousands(part.samples),
                thousands(part.documents),
                thousands(part.tokens_per_epoch),
                part.epochs,
                thousands(part.samples_held),
                if part.index_cached {
                    "built"
                } else {
                    "to build"
                }
            );
        }
    }
    let _ = writeln!(
        out,
        "(from the .idx sizes alone: the sample index is not built for --check; the first run \
         builds what is missing)"
    );
}

fn layout(out: &mut String, p: &Plan) {
    let l = &p.layout;
    section(out, "layout");
    let _ = writeln!(
        out,
        "ranks             {} = pipe {} x data {} x model {}",
        l.world(),
        l.pp,
        l.dp,
        l.tp
    );
    let _ = writeln!(
        out,
        "batch             micro {} x accumulation {} x data {} = {} samples a step",
        l.micro_batch,
        l.grad_accum,
        l.dp,
        l.global_batch()
    );
    let zero = match l.zero {
        0 => "0 (nothing partitioned)",
        1 => "1 (optimizer state partitioned over the data-parallel ranks)",
        2 => "2 (optimizer state and gradients partitioned)",
        _ => "3 (optimizer state, gradients and parameters partitioned)",
    };
    let _ = writeln!(out, "ZeRO stage        {zero}");
    let precision = match l.precision {
        Precision::Fp32 => "fp32 (4-byte weights and gradients, 8 bytes of Adam moments)".into(),
        half => format!(
            "{} mixed (f32 weights and gradients, the passes on a {} copy of the weights, \
             8 bytes of Adam moments)",
            half.name(),
            half.name()
        ),
    };
    let _ = writeln!(out, "precision         {precision}");
    let ckpt = if l.checkpoint_activations {
        format!(
            "on, every {} layer(s){}",
            l.checkpoint_num_layers,
            if l.partition_activations {
                ", partitioned over the model-parallel ranks"
            } else {
                ""
            }
        )
    } else {
        "off".into()
    };
    let _ = writeln!(out, "checkpointing     {ckpt}");
    if !p.cannot_run.is_empty() {
        let _ = writeln!(out, "this build cannot run yet:");
        for c in &p.cannot_run {
            let _ = writeln!(out, "  - {c}");
        }
    }
}

fn memory(out: &mut String, p: &Plan) {
    let (m, l) = (&p.memory, &p.layout);
    section(
        out,
        &format!(
            "memory per rank (the fullest: pipeline stage {} of {}, {} layers)",
            m.stage, l.pp, m.layers
        ),
    );
    let b = l.precision.state_bytes(l.keeper);
    let _ = writeln!(
        out,
        "parameters        {:>10}  {} x {} B",
        bytes(m.params),
        count_short(if l.zero >= 3 {
            m.owned_params
        } else {
            m.stage_params
        }),
        b.params
    );
    let _ = writeln!(
        out,
        "gradients         {:>10}  {} x {} B",
        bytes(m.grads),
        count_short(if l.zero >= 2 {
            m.owned_params
        } else {
            m.stage_params
        }),
        b.grads
    );
    if l.offload {
        let _ = writeln!(
            out,
            "optimizer state   {:>10}  on the host (ZeRO-Offload): {} x {} B = {}",
            bytes(0),
            count_short(m.owned_params),
            b.optimizer,
            bytes(m.host_optimizer)
        );
    } else if m.onebit_errors > 0 {
        let _ = writeln!(
            out,
            "optimizer state   {:>10}  {} x {} B + 1-bit Adam's compression errors {}",
            bytes(m.optimizer),
            count_short(m.owned_params),
            b.optimizer,
            bytes(m.onebit_errors)
        );
    } else {
        let _ = writeln!(
            out,
            "optimizer state   {:>10}  {} x {} B",
            bytes(m.optimizer),
            count_short(m.owned_params),
            b.optimizer
        );
    }
    let (chosen, other, other_name) = if l.checkpoint_activations {
        (m.activations_checkpointed, m.activations_full, "without")
    } else {
        (m.activations_full, m.activations_checkpointed, "with")
    };
    let _ = writeln!(
        out,
        "activations       {:>10}  {} micro batch(es) in flight; {} {other_name} checkpointing",
        bytes(chosen),
        m.in_flight,
        bytes(other)
    );
    let _ = writeln!(out, "total             {:>10}", bytes(m.total));
    if p.deepspeed_total != m.total {
        let _ = writeln!(
            out,
            "(GPT-NeoX with DeepSpeed: {} per rank, with 2-byte weights and gradients and \
             12 bytes of fp32 master weights and Adam moments)",
            bytes(p.deepspeed_total)
        );
    }
    let note = "(weights, gradients and optimizer state as allocated; activations by \
                Korthikanti et al. 2022, sbh(10 + 24/t + 5as/ht) a layer: neox-train's CPU \
                backend was measured to hold 1.4-1.6x that; not counted: the framework's \
                workspace, communication buffers, fragmentation)";
    out.push_str(&wrap(note, 0, 96));
}

fn fit(out: &mut String, p: &Plan) {
    let Some(f) = &p.fit else {
        section(out, "fit");
        let _ = writeln!(
            out,
            "give --device-memory SIZE (e.g. 80GiB) to check each rank against a device"
        );
        return;
    };
    section(
        out,
        &format!("fit on {} per device", bytes(f.device_memory)),
    );
    if f.fits {
        let _ = writeln!(
            out,
            "fits: {} of {} per rank ({:.0}%)",
            bytes(f.per_rank),
            bytes(f.device_memory),
            100.0 * f.per_rank as f64 / f.device_memory as f64
        );
        return;
    }
    let _ = writeln!(
        out,
        "DOES NOT FIT: {} per rank, {} over",
        bytes(f.per_rank),
        bytes(f.per_rank - f.device_memory)
    );
    if f.suggestions.is_empty() {
        let _ = writeln!(
            out,
            "no change within reach fits (tried checkpointing, ZeRO stages, smaller micro \
             batches, tp and pp doublings): use a smaller model or a larger device"
        );
        return;
    }
    let _ = writeln!(out, "smallest changes that fit (each estimated again):");
    for s in &f.suggestions {
        let mut line = format!(
            "  - {} -> {} per rank on {} GPU(s)",
            s.changes.join(", "),
            bytes(s.per_rank),
            s.gpus
        );
        if !s.not_in_this_build.is_empty() {
            let _ = write!(
                line,
                " (not in this build yet: {})",
                s.not_in_this_build.join(", ")
            );
        }
        let _ = writeln!(out, "{line}");
    }
}

fn notes(out: &mut String, p: &Plan) {
    let n = &p.notes;
    section(out, "notes");
    if !n.refused.is_empty() {
        let _ = writeln!(
            out,
            "refused: the run stops on these unless --allow-unimplemented (then it goes on \
             without them):"
        );
        for r in &n.refused {
            let _ = writeln!(
                out,
                "  - `{}: {}` in {} ({})",
                r.key,
                r.value,
                r.file.display(),
                r.why
            );
        }
    }
    if !n.not_acted_on.is_empty() {
        let _ = writeln!(
            out,
            "not acted on by neox-train (GPT-NeoX options that change nothing computed here):"
        );
        let mut files: Vec<&std::path::Path> = Vec::new();
        for x in &n.not_acted_on {
            if !files.contains(&x.file.as_path()) {
                files.push(&x.file);
            }
        }
        for file in files {
            let keys: Vec<&str> = n
                .not_acted_on
                .iter()
                .filter(|x| x.file == file)
                .map(|x| x.key.as_str())
                .collect();
            let _ = writeln!(out, "  {}:", file.display());
            let _ = write!(out, "{}", wrap(&keys.join(", "), 4, 96));
        }
    }
    for w in &n.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if n.refused.is_empty() && n.not_acted_on.is_empty() && n.warnings.is_empty() {
        let _ = writeln!(out, "none");
    }
}

/// `text` broken at spaces into lines of at most `width`, each indented.
fn wrap(text: &str, indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && indent + line.len() + 1 + word.len() > width {
            let _ = writeln!(out, "{:indent$}{line}", "");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{:indent$}{line}", "");
    }
    out
}

/// `162,322,944 (162.3M)`.
fn count(n: u64) -> String {
    if n < 10_000 {
        thousands(n)
    } else {
        format!("{} ({})", thousands(n), count_short(n))
    }
}

/// `162.3M`.
fn count_short(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.2}B", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}K", x / 1e3)
    } else {
        n.to_string()
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Binary units, as device memory is quoted: `2.57 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{x:.2} {}", UNITS[unit])
    }
}

fn flops(x: f64) -> String {
    let units = [
        (1e18, "EFLOP"),
        (1e15, "PFLOP"),
        (1e12, "TFLOP"),
        (1e9, "GFLOP"),
        (1e6, "MFLOP"),
    ];
    for (scale, unit) in units {
        if x >= scale {
            return format!("{:.2} {unit}", x / scale);
        }
    }
    format!("{x:.0} FLOP")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(162322944), "162,322,944");
        assert_eq!(thousands(999), "999");
        assert_eq!(count(162322944), "162,322,944 (162.3M)");
        assert_eq!(count(1536), "1,536");
        assert_eq!(count_short(2_651_307_520), "2.65B");
        assert_eq!(bytes(80 << 30), "80.00 GiB");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(flops(1.05e9), "1.05 GFLOP");
        assert_eq!(wrap("aa bb cc", 2, 7), "  aa bb\n  cc\n");
    }
}
