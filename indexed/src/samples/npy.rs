//! numpy's `.npy` format (version 1.0), written byte for byte as
//! `np.save` writes it and read back with every field checked.
//!
//! A file is the magic `\x93NUMPY`, the version `1 0`, a little-endian u16
//! header length, and a Python dict literal such as
//! `{'descr': '<i4', 'fortran_order': False, 'shape': (291,), }`, followed
//! by spaces and a final newline so that the data starts at a multiple of 64
//! bytes. numpy (1.26) also leaves room after the dict for the first axis to
//! grow to 21 digits; we do the same, so our files equal numpy's.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use neox_fsio::AtomicFile;

use super::array::Array;
use super::error::SampleError;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Data starts at a multiple of this many bytes.
const ALIGN: usize = 64;
/// numpy's `GROWTH_AXIS_MAX_DIGITS`: spare room for the first axis.
const GROWTH_DIGITS: usize = 21;

/// A number type stored in `.npy` files (little-endian, native numpy name).
pub trait NpyElement: bytemuck::Pod + Send + Sync + 'static {
    /// numpy's `descr`, e.g. `<i4`.
    const DESCR: &'static str;
    /// Bytes per element.
    const SIZE: usize;
    /// Append the little-endian bytes of `self`.
    fn put(self, out: &mut Vec<u8>);
    /// Decode from exactly `SIZE` little-endian bytes.
    fn take(bytes: &[u8]) -> Self;
}

macro_rules! npy_element {
    ($t:ty, $descr:literal) => {
        impl NpyElement for $t {
            const DESCR: &'static str = $descr;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn take(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
        }
    };
}

npy_element!(u8, "|u1");
npy_element!(i8, "|i1");
npy_element!(i16, "<i2");
npy_element!(u16, "<u2");
npy_element!(i32, "<i4");
npy_element!(u32, "<u4");
npy_element!(i64, "<i8");
npy_element!(u64, "<u8");

/// What a `.npy` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// numpy's dtype string, e.g. `<i4`.
    pub descr: String,
    /// Whether the array is stored column-major.
    pub fortran_order: bool,
    /// The shape; `[]` for a scalar.
    pub shape: Vec<usize>,
}

impl NpyHeader {
    /// Number of elements the shape holds.
    pub fn elements(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// The header bytes numpy writes for this array, up to the data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let shape = match self.shape.as_slice() {
            [] => "()".to_string(),
            [one] => format!("({one},)"),
            dims => {
                let inner: Vec<String> = dims.iter().map(ToString::to_string).collect();
                format!("({})", inner.join(", "))
            }
        };
        let order = if self.fortran_order { "True" } else { "False" };
        let mut dict = format!(
            "{{'descr': '{}', 'fortran_order': {order}, 'shape': {shape}, }}",
            self.descr
        );
        let growth_axis = if self.fortran_order {
            self.shape.last()
        } else {
            self.shape.first()
        };
        if let Some(dim) = growth_axis {
            let digits = dim.to_string().len();
            dict.push_str(&" ".repeat(GROWTH_DIGITS.saturating_sub(digits)));
        }
        // magic + version + u16 length + dict + padding + '\n' is a multiple of 64.
        let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
        let pad = ALIGN - unpadded % ALIGN;
        let header_len = dict.len() + pad + 1;
        let mut out = Vec::with_capacity(unpadded + pad);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[1, 0]);
        // Shapes are short: the dict never approaches 65,535 bytes.
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
        out.extend_from_slice(dict.as_bytes());
        out.extend(std::iter::repeat_n(b' ', pad));
        out.push(b'\n');
        out
    }
}

/// The bytes of a whole `.npy` file holding `data` with `shape`.
pub fn to_npy_bytes<T: NpyElement>(shape: &[usize], data: &[T]) -> Vec<u8> {
    let header = NpyHeader {
        descr: T::DESCR.to_string(),
        fortran_order: false,
        shape: shape.to_vec(),
    };
    let mut out = header.to_bytes();
    out.reserve(data.len() * T::SIZE);
    for &x in data {
        x.put(&mut out);
    }
    out
}

/// Write `data` (C order, `shape`) to `path` as `np.save` would, atomically:
/// a temporary file in the same folder, fsync, rename.
pub fn write_npy<T: NpyElement>(
    path: &Path,
    shape: &[usize],
    data: &[T],
) -> Result<(), SampleError> {
    let expected = shape.iter().product::<usize>();
    if expected != data.len() {
        return Err(SampleError::Internal(format!(
            "{}: shape {shape:?} holds {expected} elements, given {}",
            path.display(),
            data.len()
        )));
    }
    let header = NpyHeader {
        descr: T::DESCR.to_string(),
        fortran_order: false,
        shape: shape.to_vec(),
    };
    let io = |action: &'static str| {
        let path = path.to_path_buf();
        move |source| SampleError::Io {
            path,
            action,
            source,
        }
    };
    // The temporary file goes away on any error (and its lock on a crash).
    let pending = AtomicFile::create(path).map_err(io("create a temporary file for"))?;
    let mut out = BufWriter::with_capacity(1 << 20, pending);
    out.write_all(&header.to_bytes()).map_err(io("write"))?;
    let mut buf = Vec::with_capacity(64 * 1024);
    for chunk in data.chunks(64 * 1024 / T::SIZE.max(1)) {
        buf.clear();
        for &x in chunk {
            x.put(&mut buf);
        }
        out.write_all(&buf).map_err(io("write"))?;
    }
    let pending = out.into_inner().map_err(|e| io("write")(e.into_error()))?;
    pending.persist().map_err(io("sync and rename into place"))
}

/// A `.npy` file mapped into memory: its header and its raw data bytes.
#[derive(Debug, Clone)]
pub struct NpyFile {
    /// The file it came from (for error messages).
    pub path: PathBuf,
    /// Its header.
    pub header: NpyHeader,
    /// The whole file; the data starts at `data_start`.
    bytes: Arc<Mmap>,
    data_start: usize,
}

impl NpyFile {
    /// Map and check a `.npy` file (versions 1.0, 2.0 and 3.0): the magic,
    /// the header dict, and that the data length is what the shape says.
    pub fn read(path: &Path) -> Result<Self, SampleError> {
        let io = |action: &'static str| {
            let path = path.to_path_buf();
            move |source| SampleError::Io {
                path,
                action,
                source,
            }
        };
        let file = File::open(path).map_err(io("open"))?;
        // SAFETY: read-only. Caches are only ever replaced by renaming a new
        // file over them, never changed in place, so the mapped bytes stay.
        let bytes = Arc::new(unsafe { Mmap::map(&file) }.map_err(io("map"))?);
        let bad = |offset: usize, problem: String| SampleError::BadNpy {
            path: path.to_path_buf(),
            offset,
            problem,
        };
        if bytes.len() < 10 || &bytes[..6] != MAGIC {
            return Err(bad(
                0,
                "not a .npy file: the magic \\x93NUMPY is missing".into(),
            ));
        }
        let (dict_start, dict_len) = match bytes[6] {
            1 => (10, usize::from(u16::from_le_bytes([bytes[8], bytes[9]]))),
            2 | 3 if bytes.len() >= 12 => {
                let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
                (12, len as usize)
            }
            v => return Err(bad(6, format!("unsupported .npy version {v}.{}", bytes[7]))),
        };
        let data_start = dict_start + dict_len;
        if bytes.len() < data_start {
            return Err(bad(
                8,
                format!("header of {dict_len} bytes runs past the end of the file"),
            ));
        }
        let dict = std::str::from_utf8(&bytes[dict_start..data_start])
            .map_err(|e| bad(dict_start + e.valid_up_to(), "header is not UTF-8".into()))?;
        let header = parse_header(dict).map_err(|(at, problem)| bad(dict_start + at, problem))?;
        let elements = header
            .elements()
            .ok_or_else(|| bad(dict_start, format!("shape {:?} overflows", header.shape)))?;
        let item = descr_size(&header.descr)
            .ok_or_else(|| bad(dict_start, format!("unsupported dtype '{}'", header.descr)))?;
        let data_len = bytes.len() - data_start;
        if Some(data_len) != elements.checked_mul(item) {
            return Err(bad(
                data_start,
                format!(
                    "shape {:?} of '{}' needs {} data bytes, the file has {data_len}",
                    header.shape,
                    header.descr,
                    elements.saturating_mul(item)
                ),
            ));
        }
        Ok(NpyFile {
            path: path.to_path_buf(),
            header,
            bytes,
            data_start,
        })
    }

    /// The elements as a view of the mapped file (a decoded copy only when
    /// the data is misaligned or this machine big-endian), if the file holds
    /// C-ordered `T`s; else an error naming the dtype found.
    pub fn to_array<T: NpyElement>(&self) -> Result<Array<T>, SampleError> {
        self.check_type::<T>()?;
        let len = (self.bytes.len() - self.data_start) / T::SIZE;
        match Array::mapped(Arc::clone(&self.bytes), self.data_start, len) {
            Some(a) => Ok(a),
            None => self.to_vec().map(Array::from),
        }
    }

    /// The elements, copied, if the file holds C-ordered `T`s; else an error
    /// naming the dtype found.
    pub fn to_vec<T: NpyElement>(&self) -> Result<Vec<T>, SampleError> {
        self.check_type::<T>()?;
        Ok(self.bytes[self.data_start..]
            .chunks_exact(T::SIZE)
            .map(T::take)
            .collect())
    }

    fn check_type<T: NpyElement>(&self) -> Result<(), SampleError> {
        if self.header.descr != T::DESCR {
            return Err(SampleError::BadNpy {
                path: self.path.clone(),
                offset: 0,
                problem: format!("dtype is '{}', expected '{}'", self.header.descr, T::DESCR),
            });
        }
        if self.header.fortran_order && self.header.shape.len() > 1 {
            return Err(SampleError::BadNpy {
                path: self.path.clone(),
                offset: 0,
                problem: "array is in Fortran order, expected C order".into(),
            });
        }
        Ok(())
    }
}

/// Item size of the numpy dtypes this module knows.
fn descr_size(descr: &str) -> Option<usize> {
    Some(match descr {
        "|u1" | "|i1" | "|b1" => 1,
        "<i2" | "<u2" | ">i2" | ">u2" | "<f2" => 2,
        "<i4" | "<u4" | ">i4" | ">u4" | "<f4" => 4,
        "<i8" | "<u8" | ">i8" | ">u8" | "<f8" => 8,
        _ => return None,
    })
}

/// Parse the header dict. Errors carry the byte offset within `text`.
fn parse_header(text: &str) -> Result<NpyHeader, (usize, String)> {
    let mut p = Parser { text, at: 0 };
    p.expect('{')?;
    let (mut descr, mut order, mut shape) = (None, None, None);
    loop {
        p.skip_space();
        if p.eat('}') {
            break;
        }
        let key_at = p.at;
        let key = p.string()?;
        p.expect(':')?;
        match key.as_str() {
            "descr" => descr = Some(p.string()?),
            "fortran_order" => order = Some(p.boolean()?),
            "shape" => shape = Some(p.tuple()?),
            other => return Err((key_at, format!("unexpected header key '{other}'"))),
        }
        p.skip_space();
        if !p.eat(',') {
            p.expect('}')?;
            break;
        }
    }
    if !p.text[p.at..].trim().is_empty() {
        return Err((p.at, "unexpected text after the header dict".into()));
    }
    let missing = |key: &str| (0, format!("header has no '{key}'"));
    Ok(NpyHeader {
        descr: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: order.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
}

/// A tiny reader of the Python literals a `.npy` header uses.
struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.rest().starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), (usize, String)> {
        if self.eat(c) {
            Ok(())
        } else {
            Err((self.at, format!("expected '{c}'")))
        }
    }

    fn string(&mut self) -> Result<String, (usize, String)> {
        self.skip_space();
        let quote = match self.rest().chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err((self.at, "expected a quoted string".into())),
        };
        let body = &self.rest()[1..];
        let end = body
            .find(quote)
            .ok_or((self.at, "unterminated string".to_string()))?;
        let value = body[..end].to_string();
        self.at += end + 2;
        Ok(value)
    }

    fn boolean(&mut self) -> Result<bool, (usize, String)> {
        self.skip_space();
        for (word, value) in [("True", true), ("False", false)] {
            if self.rest().starts_with(word) {
                self.at += word.len();
                return Ok(value);
            }
        }
        Err((self.at, "expected True or False".into()))
    }

    fn tuple(&mut self) -> Result<Vec<usize>, (usize, String)> {
        self.expect('(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(')') {
                return Ok(dims);
            }
            let start = self.at;
            let digits = self.rest().bytes().take_while(u8::is_ascii_digit).count();
            let dim = self.rest()[..digits].parse::<usize>().map_err(|_| {
                (
                    start,
                    "expected a dimension (a non-negative integer)".to_string(),
                )
            })?;
            self.at += digits;
            dims.push(dim);
            if !self.eat(',') {
                self.expect(')')?;
                return Ok(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict_of(bytes: &[u8]) -> &str {
        std::str::from_utf8(&bytes[10..]).unwrap()
    }

    #[test]
    fn header_is_numpy_s_for_1d_and_2d() {
        // np.save of np.zeros(291, np.int32): dict, 18 spare spaces, padding, '\n'.
        let h = NpyHeader {
            descr: "<i4".into(),
            fortran_order: false,
            shape: vec![291],
        };
        let bytes = h.to_bytes();
        assert_eq!(bytes.len(), 128);
        assert_eq!(&bytes[..10], b"\x93NUMPY\x01\x00\x76\x00");
        let dict = dict_of(&bytes);
        assert!(dict.starts_with("{'descr': '<i4', 'fortran_order': False, 'shape': (291,), }"));
        assert!(dict.ends_with(" \n"));
        let h2 = NpyHeader {
            descr: "<i8".into(),
            fortran_order: false,
            shape: vec![205, 2],
        };
        assert!(
            dict_of(&h2.to_bytes())
                .starts_with("{'descr': '<i8', 'fortran_order': False, 'shape': (205, 2), }")
        );
        assert_eq!(h2.to_bytes().len() % 64, 0);
    }

    #[test]
    fn every_header_is_64_byte_aligned_and_ends_in_a_newline() {
        for first in [0usize, 1, 9, 10, 99_999, 123_456_789_012, usize::MAX] {
            for shape in [vec![first], vec![first, 2], vec![]] {
                let bytes = NpyHeader {
                    descr: "|u1".into(),
                    fortran_order: false,
                    shape,
                }
                .to_bytes();
                assert_eq!(bytes.len() % 64, 0, "{bytes:?}");
                assert_eq!(bytes.last(), Some(&b'\n'));
                let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
                assert_eq!(len + 10, bytes.len());
            }
        }
    }

    #[test]
    fn write_then_read_round_trips_every_dtype() {
        let dir = tempfile::tempdir().unwrap();
        fn check<T: NpyElement + PartialEq + std::fmt::Debug>(dir: &Path, data: Vec<T>) {
            let path = dir.join(format!("a{}.npy", T::DESCR.replace(['<', '|'], "")));
            write_npy(&path, &[data.len()], &data).unwrap();
            let file = NpyFile::read(&path).unwrap();
            assert_eq!(file.header.descr, T::DESCR);
            assert_eq!(file.header.shape, [data.len()]);
            assert_eq!(file.to_vec::<T>().unwrap(), data);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                to_npy_bytes(&[data.len()], &data)
            );
        }
        check(dir.path(), vec![0u8, 255, 7]);
        check(dir.path(), vec![-3i16, 300]);
        check(dir.path(), vec![i32::MIN, -1, 0, i32::MAX]);
        check(dir.path(), vec![u32::MAX, 1]);
        check(dir.path(), vec![i64::MIN, 5]);
        check(dir.path(), Vec::<u16>::new());
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.to_string_lossy().ends_with(".neox-tmp")),
            "{names:?}"
        );
    }

    #[test]
    fn shape_must_match_the_data_given() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_npy(&dir.path().join("x.npy"), &[3, 2], &[1i32, 2, 3]).unwrap_err();
        assert!(err.to_string().contains("6 elements"), "{err}");
    }

    fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        let at = bytes
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap();
        [&bytes[..at], to.as_bytes(), &bytes[at + from.len()..]].concat()
    }

    fn read_bytes(bytes: &[u8]) -> Result<NpyFile, SampleError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.npy");
        std::fs::write(&path, bytes).unwrap();
        NpyFile::read(&path)
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let good = to_npy_bytes(&[4], &[1i32, 2, 3, 4]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PK\x03\x04 not numpy".to_vec(), "magic"),
            (
                good[..good.len() - 1].to_vec(),
                "needs 16 data bytes, the file has 15",
            ),
            (good[..40].to_vec(), "runs past the end"),
            ([&good[..], &[0u8; 4]].concat(), "the file has 20"),
            (
                {
                    let mut b = good.clone();
                    b[6] = 9;
                    b
                },
                "version 9",
            ),
            (replace(&good, "'<i4'", "'<c8'"), "unsupported dtype"),
            (
                replace(&good, "'shape'", "'shapf'"),
                "unexpected header key 'shapf'",
            ),
            (replace(&good, "(4,)", "(x,)"), "expected a dimension"),
            (replace(&good, "False", "Maybe"), "expected True or False"),
        ];
        for (bytes, expected) in cases {
            let err = read_bytes(&bytes).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
            assert!(err.contains("bad.npy"), "{err}");
        }
    }

    #[test]
    fn reading_as_the_wrong_type_is_refused() {
        let file = read_bytes(&to_npy_bytes(&[2], &[1i64, 2])).unwrap();
        let err = file.to_vec::<i32>().unwrap_err().to_string();
        assert!(err.contains("'<i8', expected '<i4'"), "{err}");
    }

    #[test]
    fn headers_from_other_writers_parse() {
        let dict = "{\"descr\":\"<u4\",\"shape\":(3,),\"fortran_order\":False}";
        let h = parse_header(dict).unwrap();
        assert_eq!(
            h,
            NpyHeader {
                descr: "<u4".into(),
                fortran_order: false,
                shape: vec![3]
            }
        );
        assert_eq!(
            parse_header("{'descr': '<i8', 'fortran_order': False, 'shape': (), }")
                .unwrap()
                .shape,
            Vec::<usize>::new()
        );
    }
}
