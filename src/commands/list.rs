//! `neox-data list`: every registered corpus with its sizes, documents and
//! tokens — measured for the prepared ones, published figures for the rest.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use neox_fsio::Leftover;
use neox_registry::Registry;
use neox_registry::table::{self, Figures, Row};
use serde::Serialize;

use crate::leftovers;

/// Arguments of `neox-data list`.
#[derive(Debug, Args)]
#[command(
    long_about = "List every registered corpus (built-in, or from --catalog) with its \
    files, compressed size, text size, documents and tokens: measured for the corpora \
    prepared in --data-dir (from their manifests), the published figures, marked \
    `published`, for the rest. Prepared datasets the registry does not know are listed \
    too. --json prints exact numbers for scripts."
)]
pub struct ListArgs {
    /// Folder of prepared datasets (one sub-folder per corpus).
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// A catalog file (TOML, or JSON by extension) declaring more corpora.
    #[arg(long, env = "NEOX_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// Print JSON (one array of objects, exact numbers) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Run `neox-data list` over the built-in corpora (and `--catalog`).
pub fn run(args: ListArgs) -> anyhow::Result<()> {
    run_with(args, Registry::with_builtins())
}

/// Run `neox-data list` over `registry` (and `--catalog`).
pub fn run_with(args: ListArgs, mut registry: Registry) -> anyhow::Result<()> {
    if let Some(catalog) = &args.catalog {
        registry.load_catalog(catalog)?;
    }
    let rows = table::rows(&registry, &args.data_dir);
    let leftovers: Vec<Vec<Leftover>> = rows
        .iter()
        .map(|r| leftovers::in_folder(&args.data_dir.join(&r.name)))
        .collect();
    if args.json {
        let rows: Vec<JsonRow> = rows
            .iter()
            .zip(&leftovers)
            .map(|(row, l)| JsonRow {
                row,
                temporary_files: l.len(),
                temporary_bytes: l.iter().map(|l| l.bytes).sum(),
            })
            .collect();
        let json = serde_json::to_string_pretty(&rows).context("cannot print the table as JSON")?;
        println!("{json}");
    } else {
        print!("{}", render(&rows));
        for (row, found) in rows.iter().zip(&leftovers).filter(|(_, l)| !l.is_empty()) {
            println!(
                "{}: {} temporary file(s) of interrupted or running preparations, {}:",
                row.name,
                found.len(),
                neox_fsio::human(found.iter().map(|l| l.bytes).sum())
            );
            for l in found {
                println!("  {}", leftovers::describe(l));
            }
        }
    }
    Ok(())
}

/// A row of `--json`, with the dataset's temporary files.
#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(flatten)]
    row: &'a Row,
    /// Temporary files in the dataset's folder (killed runs' or a running one's).
    temporary_files: usize,
    /// Their bytes.
    temporary_bytes: u64,
}

/// The table as text: measured figures plain, published ones marked `(published)`.
fn render(rows: &[Row]) -> String {
    let header = [
        "corpus",
        "files",
        "compressed",
        "text",
        "documents",
        "tokens",
        "figures",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let figures = match r.figures {
                Figures::Measured => "measured".to_string(),
                Figures::Shards { done, count } => format!("measured, {done} of {count} shards"),
                Figures::Known
                    if r.compressed_bytes
                        .or(r.text_bytes)
                        .or(r.documents)
                        .or(r.tokens)
                        .is_some() =>
                {
                    "published".to_string()
                }
                Figures::Known => "none published".to_string(),
            };
            let figures = if r.registered {
                figures
            } else {
                format!("{figures} (not registered)")
            };
            [
                r.name.clone(),
                r.files.to_string(),
                r.compressed_bytes.map_or("-".into(), neox_fsio::human),
                r.text_bytes.map_or("-".into(), neox_fsio::human),
                r.documents.map_or("-".into(), grouped),
                r.tokens.map_or("-".into(), grouped),
                figures,
            ]
        })
        .collect();
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |c: &[String]| {
        let mut s = format!("{:<w$}", c[0], w = widths[0]);
        for i in 1..6 {
            s.push_str(&format!("  {:>w$}", c[i], w = widths[i]));
        }
        s.push_str(&format!("  {}\n", c[6]));
        s
    };
    let mut out = line(&header.map(str::to_string));
    for c in &cells {
        out.push_str(&line(c));
    }
    // Where the published figures come from (measured rows have their manifests).
    let cited: Vec<&Row> = rows
        .iter()
        .filter(|r| r.figures == Figures::Known && (r.source.is_some() || r.note.is_some()))
        .collect();
    if !cited.is_empty() {
        out.push_str("\npublished figures:\n");
    }
    for r in cited {
        let said: Vec<&str> = [r.source.as_deref(), r.note.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        out.push_str(&format!("  {}: {}\n", r.name, said.join("; ")));
    }
    out
}

/// `517401` -> `517,401`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_easily() {
        assert_eq!(grouped(517_401), "517,401");
        assert_eq!(grouped(12), "12");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(neox_fsio::human(945_212_874), "945.2 MB");
        assert_eq!(neox_fsio::human(999), "999 B");
    }

    #[test]
    fn published_figures_are_marked() {
        let rows = table::rows(
            &Registry::with_builtins(),
            std::path::Path::new("/nonexistent"),
        );
        let text = render(&rows);
        let enron = text.lines().find(|l| l.starts_with("enron ")).unwrap();
        assert!(
            enron.contains("517,401") && enron.ends_with("published"),
            "{enron}"
        );
        let cited = text.lines().find(|l| l.starts_with("  enron: ")).unwrap();
        assert!(cited.contains("EleutherAI/the-pile"), "{cited}");
        let c4 = text.lines().find(|l| l.starts_with("  c4: ")).unwrap();
        assert!(c4.contains("no files"), "{c4}");
        assert!(text.lines().next().unwrap().starts_with("corpus"));
    }
}
