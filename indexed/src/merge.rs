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

    // Every shifted pointer and doc_idx entry is at most these totals, so
    // checking them once makes the arithmetic in `write_idx` safe.
    let too_large = || Error::MergeTooLarge {
        output: output_prefix.to_path_buf(),
    };
    let total = |f: fn(&IndexedDataset) -> u64| {
        datasets
            .iter()
            .try_fold(0u64, |sum, d| sum.checked_add(f(d)))
            .filter(|&t| i64::try_from(t).is_ok())
    };
    let bin_bytes = total(IndexedDataset::bin_bytes).ok_or_else(too_large)?;
    let sequences = total(|d| d.len() as u64).ok_or_else(too_large)?;
    let documents = total(|d| d.num_documents() as u64).ok_or_else(too_large)?;
    let header = Header {
        dtype,
        sequences,
        doc_idx_len: documents + 1,
    };
    let idx_bytes = header.idx_len().ok_or_else(too_large)?;

    let mut bin = PendingFile::create(&bin_path(output_prefix))?;
    for ds in &datasets {
        let mut input =
            File::open(ds.bin_path()).map_err(|e| Error::io(ds.bin_path(), "open", e))?;
        io::copy(&mut input, bin.tmp.file_mut())
            .map_err(|e| Error::io(&bin.path, "copy into", e))?;
    }

    let idx_path = idx_path(output_prefix);
    let mut out = BufWriter::with_capacity(1 << 20, PendingFile::create(&idx_path)?);
    write_idx(&datasets, header, &mut out).map_err(|e| Error::io(&idx_path, "write", e))?;
    let idx = out
        .into_inner()
        .map_err(|e| Error::io(&idx_path, "write", e.into_error()))?;
    commit(bin, idx)?;
    Ok(WriteSummary {
        dtype,
        sequences,
        documents,
        tokens: datasets.iter().map(|d| d.num_tokens()).sum(),
        empty_documents_dropped: 0,
        bin_bytes,
        idx_bytes,
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
