#!/usr/bin/env python3
"""Make the SPMTokenizer reference fixtures with GPT-NeoX's own tokenizer class.

The class is GPT-NeoX's `SentencePieceTokenizer` (and its base
`AbstractTokenizer`), taken from a GPT-NeoX checkout's
`megatron/tokenizer/tokenizer.py` by its source text, so that the rest of that
module (transformers, tokenizers) need not be installed. Documents go through
it as `tools/datasets/preprocess_data.py` sends them with `--append-eod`
(`Encoder.encode`): the ids of the text, then `tokenizer.eod`; documents that
give no ids are not written (preprocess_data.py would stop on them with an
IndexError).

For each `.model` file it writes, into OUT:
  {name}.json      vocabulary size, EOD, the ids of a list of awkward texts,
                   and the SHA-256 of the .bin/.idx pair preprocess_data.py
                   writes for the whole corpus;
  {name}.ids.zst   the ids of the first --first documents: little-endian u32,
                   the document count, then for each document its length and ids.

Usage (Python 3.11, sentencepiece, numpy, zstandard):
  python scripts/spm_reference.py --gpt-neox ~/gpt-neox \
      --corpus ../shared/data/mail.jsonl.zst \
      --out tokenize/tests/fixtures/spm \
      tokenize/tests/fixtures/spm/mistral-v1.model \
      tokenize/tests/fixtures/spm/sentencepiece-test.model
"""

import argparse
import ast
import hashlib
import io
import json
import struct
import sys
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import sentencepiece as spm
import zstandard

# Texts that exercise normalization, whitespace handling, unknown characters
# and byte fallback.
AWKWARD = [
    "Hello world",
    "  leading and trailing spaces  ",
    "many     inner    spaces",
    "tabs\tand\nnewlines\r\n\n\nend",
    "\u3000ideographic\u00a0no-break\u2009thin spaces",
    "full-width ＡＢＣ１２３ and ligatures ﬁ ﬂ and ① ㎏ ½",
    "combining: e\u0301 a\u0308 versus \u00e9 \u00e4; Å Å",
    "emoji 🙂👍🏽 and 👨‍👩‍👧 zero-width joiners",
    "CJK 日本語のテキスト 中文 한국어",
    "control \u0000 \u0007 \u001b[0m \u200b\u200c\u200d\ufeff chars",
    "replacement \ufffd and private use \ue000",
    "<|endoftext|> <s> </s> <unk> <pad>",
    "digits 1234567890 and 3.14159 and 1,000,000",
    "URL https://example.com/a?b=c&d=e#f and e-mail a.b@c.org",
    " ",
    "\n\n",
    "x",
    "▁ already escaped ▁▁ spaces",
    "Ünïcödé текст ελληνικά עברית العربية हिन्दी",
    # Degenerate long texts: one character repeated, no spaces, only spaces.
    "a" * 20000,
    "-" * 9999,
    "ab" * 5000,
    " " * 5000 + "x" + "\n" * 5000,
    "🙂" * 2000,
]


def gpt_neox_classes(gpt_neox: Path):
    """GPT-NeoX's AbstractTokenizer and SentencePieceTokenizer, from their source."""
    path = gpt_neox / "megatron" / "tokenizer" / "tokenizer.py"
    tree = ast.parse(path.read_text(), str(path))
    wanted = {"AbstractTokenizer", "SentencePieceTokenizer"}
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in wanted]
    if {c.name for c in classes} != wanted:
        sys.exit(f"{path}: expected classes {sorted(wanted)}")
    module = ast.Module(body=classes, type_ignores=[])
    namespace = {"ABC": ABC, "abstractmethod": abstractmethod, "spm": spm}
    exec(compile(module, str(path), "exec"), namespace)
    return namespace["SentencePieceTokenizer"]


def documents(corpus: Path):
    """The `text` of each line, as lm_dataformat yields it (empty texts skipped)."""
    with open(corpus, "rb") as f:
        reader = zstandard.ZstdDecompressor().stream_reader(f)
        for line in io.TextIOWrapper(reader, encoding="utf-8"):
            text = json.loads(line)["text"]
            if isinstance(text, list):
                text = "\n\n".join(text)
            if text:
                yield text


def mmidx(sizes, dtype_code: int, itemsize: int) -> bytes:
    """The `.idx` GPT-NeoX's MMapIndexedDatasetBuilder writes (one sequence per document)."""
    n = len(sizes)
    sizes = np.array(sizes, dtype=np.int32)
    pointers = np.zeros(n, dtype=np.int64)
    if n > 1:
        pointers[1:] = np.cumsum(sizes[:-1].astype(np.int64) * itemsize)
    doc_idx = np.arange(n + 1, dtype=np.int64)
    header = b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", dtype_code)
    header += struct.pack("<Q", n) + struct.pack("<Q", n + 1)
    return header + sizes.tobytes() + pointers.tobytes() + doc_idx.tobytes()


def reference(tokenizer_class, model: Path, corpus: Path, first: int, out: Path):
    tok = tokenizer_class(str(model))
    name = model.stem
    # preprocess_data.py's best_fitting_dtype: uint16 (code 8) below 65500, else int32 (code 4).
    dtype, code = (np.uint16, 8) if tok.vocab_size < 65500 else (np.int32, 4)
    itemsize = np.dtype(dtype).itemsize

    bin_hash = hashlib.sha256()
    sizes, tokens, head, skipped = [], 0, [], 0
    for text in documents(corpus):
        ids = tok.tokenize(text)
        if len(ids) == 0:
            skipped += 1
            continue
        ids = list(ids) + [tok.eod]
        bin_hash.update(np.array(ids, dtype=dtype).tobytes())
        sizes.append(len(ids))
        tokens += len(ids)
        if len(head) < first:
            head.append(ids)

    blob = struct.pack("<I", len(head))
    for ids in head:
        blob += struct.pack("<I", len(ids)) + np.array(ids, dtype="<u4").tobytes()
    (out / f"{name}.ids.zst").write_bytes(zstandard.ZstdCompressor(level=19).compress(blob))

    summary = {
        "model": model.name,
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "sentencepiece": spm.__version__,
        "vocab_size": tok.vocab_size,
        "eod": tok.eod,
        "awkward": [{"text": t, "ids": list(tok.tokenize(t))} for t in AWKWARD],
        "corpus": {
            "file": corpus.name,
            "documents": len(sizes),
            "documents_without_ids": skipped,
            "tokens": tokens,
            "first_documents": len(head),
            "bin_sha256": bin_hash.hexdigest(),
            "idx_sha256": hashlib.sha256(mmidx(sizes, code, itemsize)).hexdigest(),
        },
    }
    # One line per awkward text, the rest indented.
    text = json.dumps(summary, indent=1, ensure_ascii=False)
    for case in summary["awkward"]:
        spread = json.dumps(case, indent=1, ensure_ascii=False).replace("\n", "\n  ")
        text = text.replace(spread, json.dumps(case, ensure_ascii=False), 1)
    (out / f"{name}.json").write_text(text + "\n")
    print(f"{name}: {len(sizes)} documents, {tokens} tokens, vocab {tok.vocab_size}, eod {tok.eod}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpt-neox", type=Path, required=True, help="a GPT-NeoX checkout")
    parser.add_argument("--corpus", type=Path, required=True, help="a .jsonl.zst corpus")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--first", type=int, default=40, help="documents whose ids are kept")
    parser.add_argument("models", type=Path, nargs="+", help="SentencePiece .model files")
    args = parser.parse_args()
    tokenizer_class = gpt_neox_classes(args.gpt_neox)
    args.out.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        reference(tokenizer_class, model, args.corpus, args.first, args.out)


if __name__ == "__main__":
    main()
