//! Corpus readers and HTTP fetching for neox: documents in, as a stream.

pub mod download;
pub mod downloader;

pub use downloader::{DataDownloader, KnownFigures, RemoteFile};
