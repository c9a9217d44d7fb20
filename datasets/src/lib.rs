//! Corpus readers and HTTP fetching for neox: documents in, as a stream.

pub mod download;
pub mod downloader;
pub mod read;

pub use downloader::{DataDownloader, KnownFigures, RemoteFile};
pub use read::{Document, Documents, Location, ReadError, ReadOptions, documents};
