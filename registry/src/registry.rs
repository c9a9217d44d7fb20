//! The registry: every corpus `neox-data prepare NAME` knows, by name.

use std::path::Path;
use std::sync::Arc;

use neox_datasets::DataDownloader;

use crate::{CatalogError, builtin, catalog};

/// Corpora by name: the built-ins, then anything registered in code or declared
/// in a catalog file (a later entry with the same name replaces an earlier one).
#[derive(Clone, Default)]
pub struct Registry {
    corpora: Vec<Arc<dyn DataDownloader>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Registry {
    /// No corpora at all.
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// GPT-NeoX's corpora.
    pub fn with_builtins() -> Registry {
        let mut registry = Registry::empty();
        for corpus in builtin::builtins() {
            registry.register(corpus);
        }
        registry
    }

    /// Add a corpus, replacing one of the same name.
    pub fn register(&mut self, corpus: impl DataDownloader + 'static) -> &mut Registry {
        self.register_shared(Arc::new(corpus))
    }

    /// Add a shared corpus, replacing one of the same name.
    pub fn register_shared(&mut self, corpus: Arc<dyn DataDownloader>) -> &mut Registry {
        match self.position(corpus.name()) {
            Some(i) => self.corpora[i] = corpus,
            None => self.corpora.push(corpus),
        }
        self
    }

    /// Add the corpora declared in a catalog file; returns how many.
    pub fn load_catalog(&mut self, path: &Path) -> Result<usize, CatalogError> {
        let corpora = catalog::load(path)?;
        let n = corpora.len();
        for corpus in corpora {
            self.register(corpus);
        }
        Ok(n)
    }

    /// The corpus called `name` (case-insensitive, as in GPT-NeoX).
    pub fn get(&self, name: &str) -> Option<Arc<dyn DataDownloader>> {
        self.position(name).map(|i| Arc::clone(&self.corpora[i]))
    }

    /// All corpora in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn DataDownloader>> {
        self.corpora.iter()
    }

    /// All names in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.corpora.iter().map(|c| c.name()).collect()
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.corpora
            .iter()
            .position(|c| c.name().eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Corpus;

    #[test]
    fn lookup_register_and_replace() {
        let mut r = Registry::with_builtins();
        assert!(r.get("ENRON").is_some());
        assert!(r.get("nope").is_none());
        let n = r.names().len();
        r.register(Corpus::new("mine", "", ["file:///tmp/x.jsonl".to_string()]));
        assert_eq!(r.names().len(), n + 1);
        r.register(Corpus::new(
            "enron",
            "my copy",
            ["/srv/enron.jsonl.zst".to_string()],
        ));
        assert_eq!(r.names().len(), n + 1);
        assert_eq!(r.get("enron").unwrap().description(), "my copy");
    }
}
