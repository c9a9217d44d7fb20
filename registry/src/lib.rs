//! The registry of neox dataset downloaders and the catalog of prepared datasets.
//!
//! - [`Registry`]: corpora by name — GPT-NeoX's built-ins ([`builtin`]),
//!   implementations registered in code, entries of catalog files ([`catalog`]).
//! - [`Manifest`]: what `prepare` records next to the shards it writes.
//! - [`table`]: the rows of `neox-data list`.

pub mod builtin;
pub mod catalog;
mod corpus;
pub mod manifest;
mod registry;
pub mod table;

pub use catalog::CatalogError;
pub use corpus::Corpus;
pub use manifest::{Manifest, ManifestError};
pub use registry::Registry;
