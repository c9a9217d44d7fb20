//! The corpora of GPT-NeoX's `DATA_DOWNLOADERS` (`tools/datasets/corpora.py`),
//! with its URLs. Many of those hosts are gone: point `--mirror` (or
//! `NEOX_DATA_MIRROR`) at a copy, where files keep their names.

use neox_datasets::KnownFigures;

use crate::Corpus;

const EYE: &str = "https://the-eye.eu/public/AI";
const COMPONENTS: &str = "https://the-eye.eu/public/AI/pile_preliminary_components";

/// The Pile's construction code: for each component it reads from the same
/// file GPT-NeoX downloads, `num_docs()` (documents) and `size()` (UTF-8 bytes
/// of text, as the Pile read it).
const PILE_CODE: &str = "github.com/EleutherAI/the-pile the_pile/datasets.py \
     (commit 003228e4d9208f5eba5524da2c304f88e7ac0cd7): num_docs() and size()";
/// The Hugging Face `the_pile` builder: the bytes of each training shard as
/// the mirror served it (`download_checksums`), and the train split's examples.
const PILE_HF: &str = "github.com/EleutherAI/datasets datasets/the_pile/dataset_infos.json \
     (commit 4ffd22cc5e468f48de1c4a17e4455df6e8dc7ec1): download_checksums and splits.train.num_examples";

/// Bytes of `train/00.jsonl.zst` .. `train/29.jsonl.zst` ([`PILE_HF`]).
const PILE_SHARD_BYTES: [u64; 30] = [
    15_240_542_576,
    15_213_826_121,
    15_206_478_430,
    15_192_808_107,
    15_185_851_603,
    15_212_827_627,
    15_256_748_981,
    15_309_606_649,
    15_230_393_244,
    15_224_032_048,
    15_228_149_551,
    15_224_461_477,
    15_260_161_127,
    15_208_246_978,
    15_217_956_455,
    15_276_796_998,
    15_273_744_623,
    15_313_655_872,
    15_308_582_674,
    15_279_096_441,
    15_209_947_917,
    15_311_248_597,
    15_299_690_537,
    15_293_953_191,
    15_193_934_462,
    15_198_629_367,
    15_200_998_151,
    15_216_321_939,
    15_219_852_363,
    15_218_355_549,
];

/// Documents and text bytes of a Pile component from [`PILE_CODE`], with a note.
fn pile_component(documents: u64, text_bytes: u64, note: &str) -> KnownFigures {
    KnownFigures {
        documents: Some(documents),
        text_bytes: Some(text_bytes),
        source: Some(PILE_CODE.to_string()),
        note: Some(format!(
            "{note}no published download size or GPT-2 token count"
        )),
        ..KnownFigures::default()
    }
}

/// Nothing published: say so, and why.
fn unpublished(note: &str) -> KnownFigures {
    KnownFigures {
        note: Some(note.to_string()),
        ..KnownFigures::default()
    }
}

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
        .known(pile_component(
            517_401,
            945_212_874,
            "the Pile's Enron Emails, which the Pile built from enron_mail_20150507.tar.gz \
             (not from this file); ",
        )),
        one(
            "pile_subset",
            "The Pile, training shard 00 (GPT-NeoX's pile_00)",
            format!("{EYE}/pile/train/00.jsonl.zst"),
        )
        .known(KnownFigures {
            compressed_bytes: Some(PILE_SHARD_BYTES[0]),
            source: Some(PILE_HF.to_string()),
            note: Some(
                "no published document, text or token count for one shard".to_string(),
            ),
            ..KnownFigures::default()
        }),
        Corpus::new(
            "pile",
            "The Pile, all 30 training shards",
            (0..30).map(|i| format!("{EYE}/pile/train/{i:02}.jsonl.zst")),
        )
        .known(KnownFigures {
            compressed_bytes: Some(PILE_SHARD_BYTES.iter().sum()),
            documents: Some(210_607_728),
            source: Some(PILE_HF.to_string()),
            note: Some(
                "text: the builder's num_bytes counts its Arrow table, not the text, and the \
                 paper gives only 825.18 GiB; no published GPT-2 token count"
                    .to_string(),
            ),
            ..KnownFigures::default()
        }),
        one(
            "github",
            "GitHub code, small sample (jsonl.zst)",
            "http://eaidata.bmk.sh/data/github_small.jsonl.zst".into(),
        )
        .known(unpublished(
            "no published figures for this sample (the Pile's figures describe its whole GitHub component)",
        )),
        component(
            "arxiv",
            "arXiv papers until 2020-07 (tar.gz)",
            "2020-09-08-arxiv-extracts-nofallback-until-2007-068.tar.gz",
        )
        .known(pile_component(
            1_264_405,
            60_353_358_395,
            "text after the Pile's strip_markdown_colons; ",
        )),
        component(
            "europarl",
            "European Parliament proceedings 1996-2011",
            "EuroParliamentProceedings_1996_2011.jsonl.zst",
        )
        .known(pile_component(69_814, 4_923_130_035, "")),
        component("freelaw", "FreeLaw court opinions", "FreeLaw_Opinions.jsonl.zst")
            .known(pile_component(3_562_015, 54_923_939_791, "")),
        component(
            "nih",
            "NIH ExPORTER awarded grant abstracts",
            "NIH_ExPORTER_awarded_grant_text.jsonl.zst",
        )
        .known(pile_component(939_661, 2_034_579_138, "")),
        component("pubmed", "PubMed Central extracts (tar.gz)", "PMC_extracts.tar.gz").known(
            pile_component(
                3_098_931,
                96_929_951_580,
                "text after the Pile's strip_markdown_colons; ",
            ),
        ),
        component("books1", "BookCorpus (tar.gz)", "books1.tar.gz")
            .known(pile_component(17_868, 6_767_414_779, "")),
        component("books3", "Books3 (tar.gz)", "books3.tar.gz")
            .known(pile_component(196_640, 108_404_259_563, "")),
        // GPT-NeoX's own corpora.py rounds these to 373,000 and 17,103,000.
        component("hackernews", "Hacker News (tar.gz)", "hn.tar.gz")
            .known(pile_component(373_028, 1_704_809_038, "")),
        component(
            "openwebtext2",
            "OpenWebText2 (jsonl.zst.tar)",
            "openwebtext2.jsonl.zst.tar",
        )
        .known(pile_component(
            17_103_059,
            67_396_380_547,
            "text after the Pile's remove_advertisement; ",
        )),
        component(
            "stackexchange",
            "Stack Exchange (tar)",
            "stackexchange_dataset.tar",
        )
        .known(pile_component(15_622_475, 34_571_286_358, "")),
        component(
            "ubuntu_irc",
            "Ubuntu IRC logs until 2020-09-01",
            "ubuntu_irc_until_2020_9_1.jsonl.zst",
        )
        .known(pile_component(2_807, 5_923_631_555, "")),
        component("youtube_subtitles", "YouTube subtitles", "yt_subs.jsonl.zst")
            .known(pile_component(173_651, 4_010_420_381, "")),
        Corpus::new(
            "c4",
            "C4 (GPT-NeoX lists no URLs: give them with --url or a catalog)",
            [],
        )
        .known(unpublished("no files, so no figures")),
        Corpus::new(
            "c4_openwebtext",
            "C4 realnewslike, 512 json.gz files",
            (0..512).map(|i| {
                format!(
                    "https://the-eye.eu/eleuther_staging/c4/realnewslike/c4-train.{i:05}-of-00512.json.gz"
                )
            }),
        )
        .known(unpublished("no published figures found for these 512 files")),
        one(
            "enwik8",
            "First 100 MB of English Wikipedia XML (zip)",
            "https://data.deepai.org/enwik8.zip".into(),
        )
        .known(unpublished(
            "no published figures found for this copy of enwik8.zip",
        )),
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
        // Every corpus says where its figures come from, or why it has none.
        for c in &all {
            let k = c.known();
            let any = k
                .compressed_bytes
                .or(k.text_bytes)
                .or(k.documents)
                .or(k.tokens);
            assert!(
                any.is_none() || k.source.is_some(),
                "{}: figures without a source",
                c.name()
            );
            assert!(
                k.note.is_some() || k.source.is_some(),
                "{}: neither figures nor a note",
                c.name()
            );
        }
        // The 30 shard sizes add up to the builder's download size less val and test.
        let pile = all.iter().find(|c| c.name() == "pile").unwrap().known();
        assert_eq!(
            pile.compressed_bytes,
            Some(458_158_057_991 - 470_907_480 - 460_250_856)
        );
    }
}
