//! GPT-NeoX YAML files: each file a mapping of options, option names with `-`
//! and `_` equivalent, the files merged in order. GPT-NeoX refuses an option
//! set in two files; here the later file wins (a superset: a third file can
//! change one value of a shipped config), and each such override is logged
//! with the option and both files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::error::ConfigError;

/// One option's value and the file that set it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Value,
    pub file: PathBuf,
}

/// An option set by an earlier file and set again by a later one.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub key: String,
    pub old_file: PathBuf,
    pub new_file: PathBuf,
}

/// Where a resolved option's value came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Set in this file (the last one that set it).
    File(PathBuf),
    /// Not set: the default applies.
    Default,
    /// Not set: computed from other options (e.g. `gradient_accumulation_steps`
    /// from `train_batch_size`).
    Derived,
}

/// One option as the trainer resolved it: its value and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved {
    pub key: String,
    pub value: Value,
    pub source: Source,
}

/// The merged options of several files, taken out one by one as the
/// trainer reads them; what is left at the end was not acted on. Every
/// option asked for is recorded with its value and source (its provenance).
#[derive(Debug, Default)]
pub struct Options {
    entries: BTreeMap<String, Entry>,
    overrides: Vec<Override>,
    resolved: Vec<Resolved>,
}

/// The canonical spelling of an option name: `train-iters` is `train_iters`.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

impl Options {
    /// Reads and merges `paths` in order.
    pub fn read(paths: &[PathBuf]) -> Result<Self, ConfigError> {
        let mut options = Options::default();
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            options.merge_str(&text, path)?;
        }
        Ok(options)
    }

    /// Merges one file's text (`path` names it in messages).
    pub fn merge_str(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let value: Value = serde_yaml_ng::from_str(text).map_err(|error| ConfigError::Yaml {
            path: path.to_path_buf(),
            error,
        })?;
        let mapping = match value {
            Value::Mapping(mapping) => mapping,
            Value::Null => return Ok(()),
            _ => {
                return Err(ConfigError::NotMapping {
                    path: path.to_path_buf(),
                });
            }
        };
        for (key, value) in mapping {
            let Value::String(name) = key else {
                return Err(ConfigError::BadName {
                    path: path.to_path_buf(),
                    found: format!("{key:?}"),
                });
            };
            let entry = Entry {
                value,
                file: path.to_path_buf(),
            };
            if let Some(previous) = self.entries.insert(canonical(&name), entry) {
                tracing::info!(
                    option = %canonical(&name),
                    old = %show(&previous.value),
                    old_file = %previous.file.display(),
                    new_file = %path.display(),
                    "option set again: the later value wins (GPT-NeoX would refuse this)"
                );
                self.overrides.push(Override {
                    key: canonical(&name),
                    old_file: previous.file,
                    new_file: path.to_path_buf(),
                });
            }
        }
        Ok(())
    }

    /// Takes option `name` out, typed; `None` when it is absent or null.
    pub fn take<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, ConfigError> {
        let Some(entry) = self.entries.remove(name) else {
            self.record(name, Value::Null, Source::Default);
            return Ok(None);
        };
        self.record(name, entry.value.clone(), Source::File(entry.file.clone()));
        if entry.value.is_null() {
            return Ok(None);
        }
        let shown = show(&entry.value);
        serde_yaml_ng::from_value(entry.value)
            .map(Some)
            .map_err(|source| ConfigError::BadValue {
                file: entry.file,
                key: name.to_string(),
                message: format!("{source} (found {shown})"),
            })
    }

    /// Takes option `name` out, or `default` when it is absent.
    pub fn take_or<T: DeserializeOwned + Serialize>(
        &mut self,
        name: &str,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.take(name)? {
            Some(value) => Ok(value),
            None => {
                if self.source_of(name) == Some(&Source::Default) {
                    self.record(name, to_value(&default), Source::Default);
                }
                Ok(default)
            }
        }
    }

    /// Records `value` as the resolved value of `name` when no file set it
    /// (a value computed from other options).
    pub fn derived(&mut self, name: &str, value: impl Serialize) {
        if matches!(self.source_of(name), None | Some(Source::Default)) {
            self.record(name, to_value(&value), Source::Derived);
        }
    }

    /// Where the resolved value of `name` came from, once it was asked for.
    fn source_of(&self, name: &str) -> Option<&Source> {
        self.resolved
            .iter()
            .find(|r| r.key == name)
            .map(|r| &r.source)
    }

    fn record(&mut self, key: &str, value: Value, source: Source) {
        let resolved = Resolved {
            key: key.to_string(),
            value,
            source,
        };
        match self.resolved.iter_mut().find(|r| r.key == key) {
            Some(r) => *r = resolved,
            None => self.resolved.push(resolved),
        }
    }

    /// Every option asked for so far, in the order asked, then those set in
    /// the files and not asked for (in name order), each with its source.
    pub fn provenance(&self) -> Vec<Resolved> {
        let mut all = self.resolved.clone();
        all.extend(self.entries.iter().map(|(key, e)| Resolved {
            key: key.clone(),
            value: e.value.clone(),
            source: Source::File(e.file.clone()),
        }));
        all
    }

    /// The file that set `name` (for messages about values already taken).
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.entries.get(name).map(|e| e.file.as_path())
    }

    /// Takes option `name` out with the file that set it.
    pub fn take_entry(&mut self, name: &str) -> Option<Entry> {
        let entry = self.entries.remove(name);
        match &entry {
            Some(e) => self.record(name, e.value.clone(), Source::File(e.file.clone())),
            None => self.record(name, Value::Null, Source::Default),
        }
        entry
    }

    /// The options that a later file set again, in the order met.
    pub fn overrides(&self) -> &[Override] {
        &self.overrides
    }

    /// The options nobody took, with the files that set them.
    pub fn into_remaining(self) -> Vec<(String, Entry)> {
        self.entries.into_iter().collect()
    }
}

/// A value as YAML (`null` for what cannot be represented).
fn to_value(value: &impl Serialize) -> Value {
    serde_yaml_ng::to_value(value).unwrap_or(Value::Null)
}

/// A short rendering of a value for messages.
pub fn show(value: &Value) -> String {
    let text = serde_yaml_ng::to_string(value).unwrap_or_default();
    let text = text.trim().replace('\n', " ");
    if text.len() > 60 {
        format!("{}...", &text[..text.floor_char_boundary(57)])
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_override_and_dashes_equal_underscores() {
        let mut options = Options::default();
        options
            .merge_str("{\"train-iters\": 10, lr: 0.1}", Path::new("a.yml"))
            .unwrap();
        options
            .merge_str("train_iters: 20\n", Path::new("b.yml"))
            .unwrap();
        assert_eq!(options.file_of("train_iters"), Some(Path::new("b.yml")));
        assert_eq!(
            options.overrides(),
            [Override {
                key: "train_iters".into(),
                old_file: "a.yml".into(),
                new_file: "b.yml".into(),
            }]
        );
        assert_eq!(options.take::<u64>("train_iters").unwrap(), Some(20));
        assert_eq!(options.take::<f64>("lr").unwrap(), Some(0.1));
        assert!(options.into_remaining().is_empty());
    }

    #[test]
    fn provenance_names_the_file_the_default_or_the_derivation() {
        let mut options = Options::default();
        options
            .merge_str("lr: 0.1\nseed: 1\nextra: [1]\n", Path::new("a.yml"))
            .unwrap();
        options.merge_str("seed: 7\n", Path::new("b.yml")).unwrap();
        assert_eq!(options.take_or("seed", 1234u64).unwrap(), 7);
        assert_eq!(options.take_or("eval_iters", 100u64).unwrap(), 100);
        assert_eq!(options.take::<u64>("save").unwrap(), None);
        options.derived("save", "computed");
        options.derived("seed", 99);
        let all = options.provenance();
        let row = |key: &str| all.iter().find(|r| r.key == key).unwrap().clone();
        assert_eq!(row("seed").source, Source::File("b.yml".into()));
        assert_eq!(row("seed").value, Value::from(7));
        assert_eq!(row("eval_iters").source, Source::Default);
        assert_eq!(row("eval_iters").value, Value::from(100));
        assert_eq!(row("save").source, Source::Derived);
        // Not asked for: listed after, with its file.
        assert_eq!(all.last().unwrap().key, "lr");
        assert_eq!(row("extra").source, Source::File("a.yml".into()));
        assert_eq!(all.len(), 5);
    }

    #[test]
    fn gpt_neox_flavoured_yaml_parses() {
        // Comments, Python-style booleans and trailing commas, as GPT-NeoX's configs have.
        let text = "# c\n{\n  \"a\": True,\n  \"b\": {\"x\": [0.9, 0.95], \"y\": 1.0e-8,},\n}\n";
        let mut options = Options::default();
        options.merge_str(text, Path::new("c.yml")).unwrap();
        assert_eq!(options.take::<bool>("a").unwrap(), Some(true));
        assert!(options.take::<Value>("b").unwrap().is_some());
    }

    #[test]
    fn wrong_type_names_key_and_file() {
        let mut options = Options::default();
        options
            .merge_str("train_iters: many\n", Path::new("bad.yml"))
            .unwrap();
        let err = options.take::<u64>("train_iters").unwrap_err().to_string();
        assert!(err.contains("bad.yml"), "{err}");
        assert!(err.contains("train_iters"), "{err}");
        assert!(err.contains("many"), "{err}");
    }

    #[test]
    fn not_a_mapping_is_refused() {
        let mut options = Options::default();
        let err = options
            .merge_str("- 1\n- 2\n", Path::new("list.yml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("list.yml"), "{err}");
    }
}
