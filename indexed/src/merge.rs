//! Merge several shards into one, with a correct doc_idx.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{Header, bin_path, idx_path};
use crate::output::{PendingFile, commit};
use crate::{IndexedDataset, WriteSummary};

/// Concatenate the shards at `inputs` (prefixes) into `output_prefix`.
///
/// All inputs must share one dtype. The `.bin` files are copied by the kernel
/// (`copy_file_range` where available), never loaded; the `.idx` arrays are
/// streamed with pointers shifted by the bytes and doc_idx entries by the
/// sequences of the inputs before them (GPT-NeoX's merge tool leaves doc_idx
/// at `[0]`; Megatron's, and this one, do not). The output appears only when
/// complete and replaces an existing one.
pub fn merge(inputs: &[PathBuf], output_prefix: &Path) -> Result<WriteSummary> {
    let datasets = inputs
        .iter()
        .map(IndexedDataset::open)
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = datasets.first() else {
        return Err(Error::NoInputs {
            output: output_prefix.to_path_buf(),
        });
    };
    let dtype = first.dtype();
    if let Some(other) = datasets.iter().find(|d| d.dtype() != dtype) {
        return Err(Error::DtypeMismatch {
            first: first.idx_path().to_path_buf(),
            expected: dtype,
            path: other.idx_path().to_path_buf(),
            found: other.dtype(),
        });
    }

    let mut bin = PendingFile::create(&bin_path(output_prefix))?;
    for ds in &datasets {
        let mut input =
            File::open(ds.bin_path()).map_err(|e| Error::io(ds.bin_path(), "open", e))?;
        io::copy(&mut input, bin.tmp.as_file_mut())
            .map_err(|e| Error::io(&bin.path, "copy into", e))?;
    }

    let idx_path = idx_path(output_prefix);
    let header = Header {
        dtype,
        sequences: datasets.iter().map(|d| d.len() as u64).sum(),
        doc_idx_len: 1 + datasets
            .iter()
            .map(|d| d.num_documents() as u64)
            .sum::<u64>(),
    };
    let mut out = BufWriter::with_capacity(1 << 20, PendingFile::create(&idx_path)?);
    write_idx(&datasets, header, &mut out).map_err(|e| Error::io(&idx_path, "write", e))?;
    let idx = out
        .into_inner()
        .map_err(|e| Error::io(&idx_path, "write", e.into_error()))?;
    commit(bin, idx)?;
    Ok(WriteSummary {
        dtype,
        sequences: header.sequences,
        documents: header.doc_idx_len - 1,
        tokens: datasets.iter().map(|d| d.num_tokens()).sum(),
        empty_documents_dropped: 0,
        bin_bytes: datasets.iter().map(|d| d.bin_bytes()).sum(),
        idx_bytes: header.idx_len().unwrap_or(u64::MAX),
    })
}

fn write_idx(datasets: &[IndexedDataset], header: Header, out: &mut impl Write) -> io::Result<()> {
    out.write_all(&header.to_bytes())?;
    for ds in datasets {
        out.write_all(ds.sizes().as_bytes())?;
    }
    let mut byte_offset = 0i64;
    for ds in datasets {
        for p in ds.pointers().iter() {
            out.write_all(&(p + byte_offset).to_le_bytes())?;
        }
        byte_offset += ds.bin_bytes() as i64;
    }
    out.write_all(&0i64.to_le_bytes())?;
    let mut sequence_offset = 0i64;
    for ds in datasets {
        for d in ds.doc_idx().iter().skip(1) {
            out.write_all(&(d + sequence_offset).to_le_bytes())?;
        }
        sequence_offset += ds.len() as i64;
    }
    Ok(())
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
