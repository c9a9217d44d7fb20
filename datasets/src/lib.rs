//! Corpus readers and HTTP fetching for neox: documents in, as a stream.
