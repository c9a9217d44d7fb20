//! The corpora of GPT-NeoX's `DATA_DOWNLOADERS` (`tools/datasets/corpora.py`),
//! with its URLs. Many of those hosts are gone: point `--mirror` (or
//! `NEOX_DATA_MIRROR`) at a copy, where files keep their names.

use neox_datasets::KnownFigures;

use crate::Corpus;

const EYE: &str = "https://the-eye.eu/public/AI";
const COMPONENTS: &str = "https://the-eye.eu/public/AI/pile_preliminary_components";

/// Every built-in corpus, in GPT-NeoX's order.
pub fn builtins() -> Vec<Corpus> {
    let one = |name: &str, description: &str, url: String| Corpus::new(name, description, [url]);
    let component = |name: &str, description: &str, file: &str| {
        one(name, description, format!("{COMPONENTS}/{file}"))
    };
    vec![
        one(
            "enron",
            "Enron e-mails (jsonl.zst)",
            "http://eaidata.bmk.sh/data/enron_emails.jsonl.zst".into(),
        )
        .known(KnownFigures {
            documents: Some(517_401),
            text_bytes: Some(945_212_874),
            ..KnownFigures::default()
        }),
        one(
            "pile_subset",
            "The Pile, training shard 00 (GPT-NeoX's pile_00)",
            format!("{EYE}/pile/train/00.jsonl.zst"),
        ),
        Corpus::new(
            "pile",
            "The Pile, all 30 training shards",
            (0..30).map(|i| format!("{EYE}/pile/train/{i:02}.jsonl.zst")),
        ),
        one(
            "github",
            "GitHub code, small sample (jsonl.zst)",
            "http://eaidata.bmk.sh/data/github_small.jsonl.zst".into(),
        ),
        component(
            "arxiv",
            "arXiv papers until 2020-07 (tar.gz)",
            "2020-09-08-arxiv-extracts-nofallback-until-2007-068.tar.gz",
        ),
        component(
            "europarl",
            "European Parliament proceedings 1996-2011",
            "EuroParliamentProceedings_1996_2011.jsonl.zst",
        ),
        component("freelaw", "FreeLaw court opinions", "FreeLaw_Opinions.jsonl.zst"),
        component(
            "nih",
            "NIH ExPORTER awarded grant abstracts",
            "NIH_ExPORTER_awarded_grant_text.jsonl.zst",
        ),
        component("pubmed", "PubMed Central extracts (tar.gz)", "PMC_extracts.tar.gz"),
        component("books1", "BookCorpus (tar.gz)", "books1.tar.gz"),
        component("books3", "Books3 (tar.gz)", "books3.tar.gz"),
        component("hackernews", "Hacker News (tar.gz)", "hn.tar.gz").known(KnownFigures {
            documents: Some(373_000),
            ..KnownFigures::default()
        }),
        component(
            "openwebtext2",
            "OpenWebText2 (jsonl.zst.tar)",
            "openwebtext2.jsonl.zst.tar",
        )
        .known(KnownFigures {
            documents: Some(17_103_000),
            ..KnownFigures::default()
        }),
        component(
            "stackexchange",
            "Stack Exchange (tar)",
            "stackexchange_dataset.tar",
        ),
        component(
            "ubuntu_irc",
            "Ubuntu IRC logs until 2020-09-01",
            "ubuntu_irc_until_2020_9_1.jsonl.zst",
        ),
        component("youtube_subtitles", "YouTube subtitles", "yt_subs.jsonl.zst"),
        Corpus::new(
            "c4",
            "C4 (GPT-NeoX lists no URLs: give them with --url or a catalog)",
            [],
        ),
        Corpus::new(
            "c4_openwebtext",
            "C4 realnewslike, 512 json.gz files",
            (0..512).map(|i| {
                format!(
                    "https://the-eye.eu/eleuther_staging/c4/realnewslike/c4-train.{i:05}-of-00512.json.gz"
                )
            }),
        ),
        one(
            "enwik8",
            "First 100 MB of English Wikipedia XML (zip)",
            "https://data.deepai.org/enwik8.zip".into(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use neox_datasets::DataDownloader;

    #[test]
    fn gpt_neox_registry_is_complete() {
        let all = builtins();
        let names: Vec<&str> = all.iter().map(|c| c.name()).collect();
        for expected in [
            "enron",
            "pile_subset",
            "pile",
            "github",
            "arxiv",
            "europarl",
            "freelaw",
            "nih",
            "pubmed",
            "books1",
            "books3",
            "hackernews",
            "openwebtext2",
            "stackexchange",
            "ubuntu_irc",
            "youtube_subtitles",
            "c4",
            "c4_openwebtext",
            "enwik8",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let pile = all.iter().find(|c| c.name() == "pile").unwrap().files();
        assert_eq!(pile.len(), 30);
        assert_eq!(pile[29].file_name(), "29.jsonl.zst");
        let c4 = all
            .iter()
            .find(|c| c.name() == "c4_openwebtext")
            .unwrap()
            .files();
        assert_eq!(c4.len(), 512);
        assert_eq!(c4[511].file_name(), "c4-train.00511-of-00512.json.gz");
        let enron = all.iter().find(|c| c.name() == "enron").unwrap();
        assert_eq!(enron.files()[0].file_name(), "enron_emails.jsonl.zst");
        assert_eq!(enron.known().documents, Some(517_401));
    }
}
