//! The registry of neox dataset downloaders and the catalog of prepared datasets.
