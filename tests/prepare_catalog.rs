//! Corpora declared in a catalog file: several files from http and file://,
//! parallel downloads, skipping finished parts on resume, `--shard K/N` + merge.

mod common_http;

use std::path::Path;

use common_http::fixtures::*;
use common_http::{Fault, Server};

/// Three part files: two served over http, one local (file://).
fn setup(tmp: &Path) -> (Server, std::path::PathBuf, Vec<std::path::PathBuf>) {
    let server = Server::start();
    let mut paths = Vec::new();
    for (i, docs) in [30usize, 45, 25].into_iter().enumerate() {
        let bytes = zst(&enron_jsonl(docs + i));
        let path = tmp.join(format!("part-{i}.jsonl.zst"));
        std::fs::write(&path, &bytes).unwrap();
        if i < 2 {
            server.put(&format!("part-{i}.jsonl.zst"), bytes);
        }
        paths.push(path);
    }
    let size0 = std::fs::metadata(&paths[0]).unwrap().len();
    let catalog = tmp.join("catalog.json");
    let json = serde_json::json!({"corpus": [{
        "name": "mail3",
        "description": "three mailboxes",
        "files": [
            {"url": format!("{}part-0.jsonl.zst", server.base_url()), "size": size0},
            {"url": format!("{}part-1.jsonl.zst", server.base_url())},
            {"url": format!("file://{}", paths[2].display())}
        ],
        "known": {"documents": 100}
    }]});
    std::fs::write(&catalog, json.to_string()).unwrap();
    (server, catalog, paths)
}

/// `neox-data list --json`'s row for `name`.
fn listed_row(catalog: &Path, data: &Path, name: &str) -> serde_json::Value {
    let listed = run_ok(
        neox_data()
            .args(["list", "--json", "--catalog"])
            .arg(catalog)
            .arg("--data-dir")
            .arg(data),
    );
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no row {name} in {rows}"))
}

#[test]
fn a_catalog_corpus_of_several_files_prepares_like_tokenize_and_resumes_by_part() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, catalog, paths) = setup(tmp.path());
    let data = tmp.path().join("data");

    // The second file fails with a 404 first: the run fails, the first part stays done.
    server.fault("part-1.jsonl.zst", &[Fault::Status(404)]);
    let out = run(prepare("mail3", &data)
        .arg("--catalog")
        .arg(&catalog)
        .args(["--parallel-downloads", "1"]));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("404"));

    let said = text(&run_ok(
        prepare("mail3", &data).env("NEOX_CATALOG", &catalog),
    ));
    assert!(said.contains("already tokenized, skipping"), "{said}");
    let joined = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let folder = data.join("mail3");
    assert_eq!(
        read_pair(&folder.join("mail3_text_document")),
        tokenized(&joined, tmp.path())
    );
    let m = manifest(&folder, "mail3_text_document");
    assert_eq!(m["sources"].as_array().unwrap().len(), 3);
    assert_eq!(
        m["sources"][2]["url"],
        format!("file://{}", paths[2].display())
    );
    // The local file is used in place, not copied.
    assert!(!folder.join("part-2.jsonl.zst").exists());
    assert!(
        !folder.join("mail3.parts").exists(),
        "merged parts are removed"
    );

    let row = listed_row(&catalog, &data, "mail3");
    assert_eq!(row["figures"]["kind"], "measured");
    assert_eq!(row["documents"], m["documents"]);
    assert_eq!(row["files"], 3);
}

#[test]
fn shards_merged_in_order_equal_the_whole_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, catalog, _) = setup(tmp.path());
    let whole = tmp.path().join("whole");
    run_ok(prepare("mail3", &whole).arg("--catalog").arg(&catalog));

    // Two machines, each with its own part (here: one data folder, as on shared storage).
    let data = tmp.path().join("data");
    for k in ["1/2", "2/2"] {
        run_ok(
            prepare("mail3", &data)
                .arg("--catalog")
                .arg(&catalog)
                .args(["--shard", k]),
        );
    }
    let folder = data.join("mail3");
    let row = listed_row(&catalog, &data, "mail3");
    assert_eq!(
        row["figures"],
        serde_json::json!({"kind": "shards", "done": 2, "count": 2})
    );
    let m1 = manifest(&folder, "mail3-shard-1-of-2_text_document");
    let m2 = manifest(&folder, "mail3-shard-2-of-2_text_document");
    assert_eq!(
        m1["sources"].as_array().unwrap().len() + m2["sources"].as_array().unwrap().len(),
        3
    );

    run_ok(
        neox_data()
            .args(["merge", "--output-prefix"])
            .arg(folder.join("mail3_text_document"))
            .arg(folder.join("mail3-shard-1-of-2_text_document"))
            .arg(folder.join("mail3-shard-2-of-2_text_document")),
    );
    assert_eq!(
        read_pair(&folder.join("mail3_text_document")),
        read_pair(&whole.join("mail3/mail3_text_document"))
    );
}
