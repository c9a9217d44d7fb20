//! Hostile input keeps memory bounded: a line, a `.txt` file or an archive
//! member longer than `--max-document-bytes` (decompressed) stops `prepare`
//! with the file and offset, whatever it compresses to (gzip and zip bombs).

mod common_http;

use std::io::Write;
use std::path::{Path, PathBuf};

use common_http::fixtures::*;

const LIMIT: &str = "1048576";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `n` zero bytes, gzip-compressed (about 5 KB per MiB).
fn gzip_zeros(n: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let block = vec![0u8; 1 << 20];
    for _ in 0..n >> 20 {
        gz.write_all(&block).unwrap();
    }
    gz.finish().unwrap()
}

/// `prepare enron` over `input` instead of its own file; the output, failed.
fn refused(data: &Path, input: &Path, limit: Option<&str>) -> String {
    let mut cmd = prepare("enron", data);
    cmd.arg("--url").arg(input);
    if let Some(limit) = limit {
        cmd.args(["--max-document-bytes", limit]);
    }
    let out = run(&mut cmd);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    said
}

#[test]
fn a_gzip_bomb_is_refused_at_the_default_limit() {
    let tmp = tempfile::tempdir().unwrap();
    // 300 MiB of zeros, compressed to under 1% of that: one endless line.
    let bomb = gzip_zeros(300 << 20);
    assert!(bomb.len() < 3 << 20, "{}", bomb.len());
    let path = write(tmp.path(), "bomb.jsonl.gz", &bomb);
    let said = refused(&tmp.path().join("data"), &path, None);
    assert!(
        said.contains("bomb.jsonl.gz line 1")
            && said.contains(&format!("longer than {} bytes", 256u64 << 20))
            && said.contains("from byte 0 of the file"),
        "{said}"
    );
}

#[test]
fn a_huge_line_a_huge_txt_and_a_zip_bomb_member_are_refused_with_their_place() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    // A huge single line after a good one.
    let first = "{\"text\": \"a fine first line\"}\n";
    let huge = format!("{first}{{\"text\": \"{}\"}}\n", "x".repeat(2 << 20));
    let path = write(tmp.path(), "huge.jsonl", huge.as_bytes());
    let said = refused(&data, &path, Some(LIMIT));
    assert!(
        said.contains("huge.jsonl line 2")
            && said.contains(&format!("longer than {LIMIT} bytes"))
            && said.contains(&format!("from byte {} of the file", first.len())),
        "{said}"
    );

    // A .txt file is one document: the same limit holds for it.
    let path = write(tmp.path(), "big.txt", &vec![b'y'; 2 << 20]);
    let said = refused(&data, &path, Some(LIMIT));
    assert!(
        said.contains("big.txt: a file longer than") && said.contains(LIMIT),
        "{said}"
    );

    // A zip whose raw member inflates to 8 MiB.
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("ok.txt", deflated).unwrap();
    zip.write_all(b"a small member").unwrap();
    zip.start_file("zeros.bin", deflated).unwrap();
    zip.write_all(&vec![0u8; 8 << 20]).unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    assert!(bytes.len() < 1 << 20);
    let path = write(tmp.path(), "bomb.zip", &bytes);
    let said = refused(&data, &path, Some(LIMIT));
    assert!(
        said.contains("bomb.zip member zeros.bin: a member longer than") && said.contains(LIMIT),
        "{said}"
    );

    // Under the limit, the same reader takes the same files.
    let path = write(tmp.path(), "fine.jsonl", first.as_bytes());
    run_ok(
        prepare("enron", &data)
            .arg("--url")
            .arg(&path)
            .args(["--max-document-bytes", "64"]),
    );
}
