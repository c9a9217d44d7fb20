//! What every engine checks of a call's arguments, in one wording, and the
//! buffer layouts they share.

use std::ops::Range;

use super::{CommError, DType};

pub(crate) fn mismatch(during: &'static str, message: String) -> CommError {
    CommError::Mismatch { during, message }
}

/// `len` bytes hold whole `dtype`s.
pub(crate) fn whole(len: usize, dtype: DType, during: &'static str) -> Result<(), CommError> {
    if len.is_multiple_of(dtype.size()) {
        Ok(())
    } else {
        Err(mismatch(
            during,
            format!("{len} bytes is not a whole number of {dtype:?}"),
        ))
    }
}

/// `root` is a rank of a group of `size`.
pub(crate) fn root(root: usize, size: usize, during: &'static str) -> Result<(), CommError> {
    if root < size {
        Ok(())
    } else {
        Err(mismatch(
            during,
            format!("root {root} is not a rank of a group of {size}"),
        ))
    }
}

/// `peer` is another rank than `me` of a group of `size`.
pub(crate) fn peer(
    peer: usize,
    me: usize,
    size: usize,
    during: &'static str,
) -> Result<(), CommError> {
    if peer < size && peer != me {
        Ok(())
    } else {
        Err(mismatch(
            during,
            format!("rank {me} cannot exchange with rank {peer} in a group of {size}"),
        ))
    }
}

/// One count per rank; the concatenated side holds their sum and this rank's
/// side its own count (`whole` for all-gather, `part` for reduce-scatter).
pub(crate) fn counts(
    counts: &[usize],
    me: usize,
    size: usize,
    whole_len: usize,
    part_len: usize,
    during: &'static str,
) -> Result<(), CommError> {
    if counts.len() != size {
        return Err(mismatch(
            during,
            format!("{} counts given for a group of {size} ranks", counts.len()),
        ));
    }
    let total = counts.iter().sum::<usize>();
    if whole_len != total || part_len != counts[me] {
        return Err(mismatch(
            during,
            format!(
                "buffers of {whole_len} and {part_len} bytes; the counts say {total} and {}",
                counts[me]
            ),
        ));
    }
    Ok(())
}

/// Byte ranges of `counts` laid end to end.
pub(crate) fn ranges(counts: &[usize]) -> Vec<Range<usize>> {
    let mut start = 0;
    counts
        .iter()
        .map(|&c| {
            start += c;
            start - c..start
        })
        .collect()
}

/// `elements` split into `n` nearly equal runs (the first ones one longer).
pub(crate) fn even_split(elements: usize, n: usize) -> Vec<usize> {
    (0..n)
        .map(|r| elements / n + usize::from(r < elements % n))
        .collect()
}

/// All-to-all buffers: `send` and `recv` of one length, `size` equal parts.
/// Returns the part's length.
pub(crate) fn parts(
    send_len: usize,
    recv_len: usize,
    size: usize,
    during: &'static str,
) -> Result<usize, CommError> {
    if send_len != recv_len || !send_len.is_multiple_of(size) {
        return Err(mismatch(
            during,
            format!(
                "buffers of {send_len} and {recv_len} bytes; expected one length, \
                 {size} equal parts"
            ),
        ));
    }
    Ok(send_len / size)
}
