//! An index array that is either built in memory or mapped straight from its
//! `.npy` cache file: a loaded index costs page cache, not RAM, whatever its size.

use std::ops::Deref;
use std::sync::Arc;

use bytemuck::Pod;
use memmap2::Mmap;

/// A read-only array of `T`, owned or mapped; it dereferences to `[T]`.
#[derive(Clone)]
pub struct Array<T> {
    storage: Storage<T>,
}

#[derive(Clone)]
enum Storage<T> {
    Owned(Vec<T>),
    /// `len` elements at byte `start` of the map (checked aligned and in bounds).
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
}

impl<T: Pod> Array<T> {
    /// View `len` little-endian elements at byte `start` of `map`, if they lie
    /// inside it, are aligned for `T`, and this machine is little-endian
    /// (else the caller decodes a copy).
    pub(crate) fn mapped(map: Arc<Mmap>, start: usize, len: usize) -> Option<Self> {
        if cfg!(target_endian = "big") {
            return None;
        }
        let end = len
            .checked_mul(size_of::<T>())
            .and_then(|n| n.checked_add(start))?;
        bytemuck::try_cast_slice::<u8, T>(map.get(start..end)?).ok()?;
        Some(Array {
            storage: Storage::Mapped { map, start, len },
        })
    }

    /// Whether the elements are read from a mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        match &self.storage {
            Storage::Owned(v) => v,
            Storage::Mapped { map, start, len } => {
                // Checked in `mapped`: in bounds and aligned.
                bytemuck::cast_slice(&map[*start..*start + *len * size_of::<T>()])
            }
        }
    }
}

impl<T: Pod> Deref for Array<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T> From<Vec<T>> for Array<T> {
    fn from(v: Vec<T>) -> Self {
        Array {
            storage: Storage::Owned(v),
        }
    }
}

impl<T: Pod + PartialEq> PartialEq for Array<T> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Pod + Eq> Eq for Array<T> {}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}
