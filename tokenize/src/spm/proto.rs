//! Just enough of protobuf's wire format to read SentencePiece's `ModelProto`
//! (`sentencepiece_model.proto`): the pieces, the model type and byte
//! fallback of the trainer spec, and the normalizer spec. Unknown fields are
//! skipped, as protobuf does; a field read twice keeps the last value and a
//! sub-message read twice is merged, as protobuf does.

/// The kind of a piece (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_wire(v: u64) -> Option<Self> {
        Some(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Piece {
    pub piece: Vec<u8>,
    pub score: f32,
    pub kind: PieceType,
}

/// `TrainerSpec.ModelType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModelType {
    Unigram,
    Bpe,
    Word,
    Char,
}

/// The parts of `TrainerSpec` that encoding reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrainerSpec {
    pub model_type: ModelType,
    pub byte_fallback: bool,
    pub treat_whitespace_as_suffix: bool,
}

/// `NormalizerSpec`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NormalizerSpec {
    pub name: String,
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

/// `ModelProto`, the content of a `.model` file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelProto {
    pub pieces: Vec<Piece>,
    pub trainer: TrainerSpec,
    pub normalizer: NormalizerSpec,
}

/// Parse a `.model` file; the error says what is wrong and at which byte.
pub(crate) fn parse(bytes: &[u8]) -> Result<ModelProto, String> {
    let mut model = ModelProto {
        pieces: Vec::new(),
        trainer: TrainerSpec {
            model_type: ModelType::Unigram,
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
        },
        normalizer: NormalizerSpec {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        },
    };
    let mut fields = Fields::new(bytes, 0);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => model.pieces.push(piece(value.bytes("ModelProto.pieces")?)?),
            2 => trainer(value.bytes("ModelProto.trainer_spec")?, &mut model.trainer)?,
            3 => normalizer(
                value.bytes("ModelProto.normalizer_spec")?,
                &mut model.normalizer,
            )?,
            _ => {}
        }
    }
    Ok(model)
}

fn piece((bytes, at): (&[u8], usize)) -> Result<Piece, String> {
    let mut piece = Piece {
        piece: Vec::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    let mut fields = Fields::new(bytes, at);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => piece.piece = value.bytes("SentencePiece.piece")?.0.to_vec(),
            2 => piece.score = f32::from_bits(value.fixed32("SentencePiece.score")?),
            3 => {
                let v = value.varint("SentencePiece.type")?;
                piece.kind = PieceType::from_wire(v).ok_or_else(|| {
                    format!(
                        "byte {}: unknown piece type {v} (expected 1 to 6)",
                        value.at
                    )
                })?;
            }
            _ => {}
        }
    }
    Ok(piece)
}

fn trainer((bytes, at): (&[u8], usize), spec: &mut TrainerSpec) -> Result<(), String> {
    let mut fields = Fields::new(bytes, at);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            3 => {
                spec.model_type = match value.varint("TrainerSpec.model_type")? {
                    1 => ModelType::Unigram,
                    2 => ModelType::Bpe,
                    3 => ModelType::Word,
                    4 => ModelType::Char,
                    v => {
                        return Err(format!(
                            "byte {}: unknown model type {v} (expected 1 unigram, 2 BPE, 3 word or 4 char)",
                            value.at
                        ));
                    }
                }
            }
            24 => {
                spec.treat_whitespace_as_suffix =
                    value.varint("TrainerSpec.treat_whitespace_as_suffix")? != 0
            }
            35 => spec.byte_fallback = value.varint("TrainerSpec.byte_fallback")? != 0,
            _ => {}
        }
    }
    Ok(())
}

fn normalizer((bytes, at): (&[u8], usize), spec: &mut NormalizerSpec) -> Result<(), String> {
    let mut fields = Fields::new(bytes, at);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => {
                let (name, at) = value.bytes("NormalizerSpec.name")?;
                spec.name = String::from_utf8(name.to_vec())
                    .map_err(|_| format!("byte {at}: the normalizer name is not UTF-8"))?;
            }
            2 => {
                spec.precompiled_charsmap = value
                    .bytes("NormalizerSpec.precompiled_charsmap")?
                    .0
                    .to_vec()
            }
            3 => spec.add_dummy_prefix = value.varint("NormalizerSpec.add_dummy_prefix")? != 0,
            4 => {
                spec.remove_extra_whitespaces =
                    value.varint("NormalizerSpec.remove_extra_whitespaces")? != 0
            }
            5 => spec.escape_whitespaces = value.varint("NormalizerSpec.escape_whitespaces")? != 0,
            _ => {}
        }
    }
    Ok(())
}

/// A field's value as it is on the wire, with its absolute byte offset.
struct Value<'a> {
    wire: Wire<'a>,
    at: usize,
}

enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    fn mismatch(&self, field: &str, expected: &str) -> String {
        format!("byte {}: field {field} should be {expected}", self.at)
    }

    fn varint(&self, field: &str) -> Result<u64, String> {
        match self.wire {
            Wire::Varint(v) => Ok(v),
            _ => Err(self.mismatch(field, "a varint")),
        }
    }

    fn fixed32(&self, field: &str) -> Result<u32, String> {
        match self.wire {
            Wire::Fixed32(v) => Ok(v),
            _ => Err(self.mismatch(field, "a 32-bit value")),
        }
    }

    /// The bytes and the absolute offset where they start.
    fn bytes(&self, field: &str) -> Result<(&'a [u8], usize), String> {
        match self.wire {
            Wire::Bytes(b) => Ok((b, self.at)),
            _ => Err(self.mismatch(field, "length-delimited")),
        }
    }
}

/// The fields of one message, in file order.
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Absolute offset of `bytes` in the file, for messages.
    base: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        Self {
            bytes,
            pos: 0,
            base,
        }
    }

    fn at(&self) -> usize {
        self.base + self.pos
    }

    fn varint(&mut self) -> Result<u64, String> {
        let start = self.at();
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(format!("byte {start}: the file ends inside a varint"));
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("byte {start}: a varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let start = self.at();
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "byte {start}: {what} of {n} bytes runs past the end of its message ({} bytes left)",
                    self.bytes.len() - self.pos
                )
            })?;
        let taken = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.pos == self.bytes.len() {
            return Ok(None);
        }
        let tag_at = self.at();
        let tag = self.varint()?;
        let (number, wire_type) = (tag >> 3, tag & 7);
        if number == 0 {
            return Err(format!(
                "byte {tag_at}: field number 0 (not a protobuf message)"
            ));
        }
        let at = self.at();
        let wire = match wire_type {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8, "a 64-bit value")?;
                Wire::Fixed64
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| format!("byte {at}: length {len}"))?;
                let at = self.at();
                return Ok(Some((
                    number,
                    Value {
                        wire: Wire::Bytes(self.take(len, "a length-delimited field")?),
                        at,
                    },
                )));
            }
            5 => {
                let b = self.take(4, "a 32-bit value")?;
                Wire::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            _ => {
                return Err(format!(
                    "byte {tag_at}: wire type {wire_type} of field {number} (expected 0, 1, 2 or 5: not a SentencePiece model)"
                ));
            }
        };
        Ok(Some((number, Value { wire, at })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes_field(number: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    #[test]
    fn reads_pieces_specs_and_skips_unknown_fields() {
        let mut piece = Vec::new();
        bytes_field(1, "▁a".as_bytes(), &mut piece);
        piece.push(2 << 3 | 5);
        piece.extend_from_slice(&(-1.5f32).to_le_bytes());
        piece.extend_from_slice(&[3 << 3, 4]); // USER_DEFINED
        piece.extend_from_slice(&[9 << 3 | 1, 0, 0, 0, 0, 0, 0, 0, 0]); // unknown fixed64
        let mut trainer = Vec::new();
        trainer.extend_from_slice(&[3 << 3, 2]); // BPE
        varint(35 << 3, &mut trainer);
        trainer.push(1);
        let mut norm = Vec::new();
        bytes_field(1, b"identity", &mut norm);
        norm.extend_from_slice(&[3 << 3, 0]);
        let mut model = Vec::new();
        bytes_field(1, &piece, &mut model);
        bytes_field(2, &trainer, &mut model);
        bytes_field(3, &norm, &mut model);
        bytes_field(4, b"self test data, ignored", &mut model);

        let m = parse(&model).unwrap();
        assert_eq!(
            m.pieces,
            [Piece {
                piece: "▁a".as_bytes().to_vec(),
                score: -1.5,
                kind: PieceType::UserDefined
            }]
        );
        assert_eq!(m.trainer.model_type, ModelType::Bpe);
        assert!(m.trainer.byte_fallback);
        assert_eq!(m.normalizer.name, "identity");
        assert!(!m.normalizer.add_dummy_prefix);
        assert!(m.normalizer.remove_extra_whitespaces);
    }

    #[test]
    fn truncated_and_foreign_bytes_are_refused_with_the_offset() {
        let mut model = Vec::new();
        bytes_field(1, &[1 << 3 | 2, 5, b'a'], &mut model);
        let err = parse(&model).unwrap_err();
        assert!(err.contains("byte 4") && err.contains("5 bytes"), "{err}");

        let err = parse(b"{\"model\": \"json\"}").unwrap_err();
        assert!(err.contains("byte 0") && err.contains("wire type"), "{err}");

        let err = parse(&[0x08, 0xff, 0xff]).unwrap_err();
        assert!(err.contains("ends inside a varint"), "{err}");
    }
}
