//! Archives: tar (plain or gzip) and zip. Each member is read by its name's
//! format, or as the archive's default when its name says nothing. Member
//! names are only used to choose a format and to report locations: nothing
//! is ever extracted to disk.

use std::fs::File;
use std::io::{BufReader, Read};

use flate2::read::MultiGzDecoder;

use super::format::{Format, Member};
use super::lines::read_lines;
use super::source::{Halt, Origin, Sink};
use super::{Position, ReadError};

/// Read a tar stream's regular-file members.
pub(crate) fn read_tar(
    reader: impl Read,
    default: Member,
    origin: &Origin<'_>,
    sink: &Sink,
) -> Result<(), Halt> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| origin.io_error(e))?;
    for entry in entries {
        let entry = entry.map_err(|e| origin.io_error(e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(|e| origin.io_error(e))?;
        read_member(entry, &name, default, &origin.member(&name), sink)?;
    }
    Ok(())
}

/// Read a zip file's members, in the order of its central directory.
pub(crate) fn read_zip(file: File, origin: &Origin<'_>, sink: &Sink) -> Result<(), Halt> {
    let mut archive =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|e| origin.io_error(e.into()))?;
    for i in 0..archive.len() {
        let member = archive.by_index(i).map_err(|e| origin.io_error(e.into()))?;
        if member.is_dir() {
            continue;
        }
        let name = member.name().to_string();
        read_member(member, &name, Member::Raw, &origin.member(&name), sink)?;
    }
    Ok(())
}

fn read_member(
    member: impl Read,
    name: &str,
    default: Member,
    origin: &Origin<'_>,
    sink: &Sink,
) -> Result<(), Halt> {
    let format = match Format::from_name(name) {
        Some(format) => format,
        None if default == Member::JsonlZst => Format::JsonlZst,
        None => Format::Txt,
    };
    match format {
        Format::Jsonl => read_lines(member, origin, sink),
        Format::JsonlZst => {
            let decoder = zstd::Decoder::new(member).map_err(|e| origin.io_error(e))?;
            read_lines(decoder, origin, sink)
        }
        Format::JsonlGz => read_lines(MultiGzDecoder::new(member), origin, sink),
        // lm_dataformat reads archive members as they are (no newline translation).
        Format::Txt => {
            let bytes = origin.read_whole(member)?;
            sink.emit(origin.raw_document(bytes))
        }
        Format::Tar { .. } | Format::Zip | Format::Parquet => {
            sink.emit(Err(ReadError::Malformed {
                location: origin.location(Position::Whole),
                reason: "an archive or Parquet file inside an archive is not read; unpack it first"
                    .to_string(),
            }))
        }
    }
}
