//! The one-pass decoder of `export.bin`, which every reader of export files goes through.
//!
//! [`crate::export::parse_export_bin`] and [`crate::export::ExportArchive::read`] decode
//! `export.bin` here: in one pass over the bytes, validating each key as it goes and counting keys
//! and signature infos against [`ExportLimits`] before keeping each, instead of building a
//! protobuf message with an allocation per key first. That makes decoding about ten times cheaper,
//! which matters when it runs on every key of every download, and it bounds what a hostile file
//! can make a reader allocate.
//!
//! The decoder follows the protobuf rules of the generated decoder it stands in for: varints of
//! at most ten bytes, a field number of at least 1, wire types 0-5, the last occurrence of an
//! optional field winning, unknown fields (groups included, nested at most 100 deep) skipped,
//! strings checked to be UTF-8, and a known field with the wrong wire type refused. Only the
//! message of an error can differ: where the input breaks several rules, the decoder may name
//! another one first. Tests and fuzz targets compare it on valid, mutated and random input with
//! the generated decoder, kept as [`crate::export::wire::decode_export_bin_reference`].

use crate::Error;
use crate::export::read::{KeyFields, check_size};
use crate::export::{
    EXPORT_BIN_HEADER, EXPORT_BIN_NAME, Export, ExportKey, ExportLimits, SignatureInfo,
};

/// How deep unknown groups may nest, counted as the generated decoder counts.
const RECURSION_LIMIT: u32 = 100;

/// The fewest bytes a valid key takes in `export.bin`: field key and length, 16 key bytes with
/// their field key and length, and a rolling start of at least one byte with its field key.
const MIN_KEY_BYTES: usize = 2 + 18 + 2;

/// Parses an `export.bin` in one pass: the decoder behind [`crate::export::parse_export_bin`].
///
/// # Errors
///
/// [`Error::TooLarge`], [`Error::BadHeader`], [`Error::Protobuf`], [`Error::TooManyKeys`],
/// [`Error::TooManySignatures`], and the errors of key validation.
pub(crate) fn parse_export_bin(bytes: &[u8], limits: &ExportLimits) -> Result<Export, Error> {
    check_size(EXPORT_BIN_NAME, bytes.len(), limits.max_export_bin_bytes)?;
    let body = bytes
        .strip_prefix(EXPORT_BIN_HEADER.as_slice())
        .ok_or(Error::BadHeader)?;

    // Room for as many keys as the body could hold, so the list is not copied as it grows;
    // pages never written cost no memory.
    let mut export = Export::default();
    export
        .keys
        .reserve(limits.max_keys.min(body.len() / MIN_KEY_BYTES));
    let mut reader = Reader(body);
    while !reader.is_empty() {
        let (field, wire) = reader.key()?;
        match field {
            1 => export.start_timestamp = reader.fixed64(wire)?,
            2 => export.end_timestamp = reader.fixed64(wire)?,
            3 => export.region = reader.string(wire)?,
            4 => export.batch_num = reader.int32(wire)?,
            5 => export.batch_size = reader.int32(wire)?,
            6 => {
                if export.signature_infos.len() >= limits.max_signatures {
                    return Err(Error::TooManySignatures {
                        limit: limits.max_signatures,
                    });
                }
                let info = signature_info(reader.message(wire)?)?;
                export.signature_infos.push(info);
            }
            7 | 8 => {
                if export.keys.len() + export.revised_keys.len() >= limits.max_keys {
                    return Err(Error::TooManyKeys {
                        limit: limits.max_keys,
                    });
                }
                let key = export_key(reader.message(wire)?)?;
                match field {
                    7 => export.keys.push(key),
                    _ => export.revised_keys.push(key),
                }
            }
            _ => reader.skip(field, wire, RECURSION_LIMIT)?,
        }
    }
    Ok(export)
}

/// Decodes one `SignatureInfo`.
fn signature_info(body: &[u8]) -> Result<SignatureInfo, Error> {
    let mut info = SignatureInfo::default();
    let mut reader = Reader(body);
    while !reader.is_empty() {
        let (field, wire) = reader.key()?;
        match field {
            3 => info.verification_key_version = reader.string(wire)?,
            4 => info.verification_key_id = reader.string(wire)?,
            5 => info.signature_algorithm = reader.string(wire)?,
            _ => reader.skip(field, wire, RECURSION_LIMIT - 1)?,
        }
    }
    Ok(info)
}

/// Decodes and validates one `TemporaryExposureKey`, checking what the protocol's conversion
/// checks in the same order.
fn export_key(body: &[u8]) -> Result<ExportKey, Error> {
    let mut key = KeyFields::default();
    let mut reader = Reader(body);
    while !reader.is_empty() {
        let (field, wire) = reader.key()?;
        match field {
            1 => key.key_data = Some(reader.length_delimited(wire)?),
            2 => key.transmission_risk_level = Some(reader.int32(wire)?),
            3 => key.rolling_start = Some(reader.int32(wire)?),
            4 => key.rolling_period = Some(reader.int32(wire)?),
            5 => key.report_type = Some(reader.int32(wire)?),
            6 => key.days_since_onset = Some(reader.sint32(wire)?),
            _ => reader.skip(field, wire, RECURSION_LIMIT - 1)?,
        }
    }
    key.validate()
}

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A cursor over protobuf bytes; every read checks what is left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A varint of at most ten bytes, the tenth carrying only the top bit.
    fn varint(&mut self) -> Result<u64, Error> {
        let mut value = 0u64;
        for (index, &byte) in self.0.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte < 0x80 {
                if index == 9 && byte > 1 {
                    break;
                }
                self.0 = &self.0[index + 1..];
                return Ok(value);
            }
        }
        Err(malformed("invalid varint"))
    }

    /// A field key: the field number (at least 1) and the wire type (0-5).
    fn key(&mut self) -> Result<(u32, u8), Error> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| malformed("invalid key value"))?;
        let wire = (key & 7) as u8;
        if wire > FIXED32 {
            return Err(malformed("invalid wire type value"));
        }
        let field = key >> 3;
        if field == 0 {
            return Err(malformed("invalid tag value: 0"));
        }
        Ok((field, wire))
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], Error> {
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= self.0.len())
            .ok_or_else(|| malformed("buffer underflow"))?;
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }

    fn fixed64(&mut self, wire: u8) -> Result<u64, Error> {
        expect_wire(wire, FIXED64)?;
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(
            bytes
                .try_into()
                .map_err(|_| malformed("buffer underflow"))?,
        ))
    }

    fn int32(&mut self, wire: u8) -> Result<i32, Error> {
        expect_wire(wire, VARINT)?;
        Ok(self.varint()? as i32)
    }

    fn sint32(&mut self, wire: u8) -> Result<i32, Error> {
        expect_wire(wire, VARINT)?;
        let value = self.varint()? as u32;
        Ok(((value >> 1) as i32) ^ -((value & 1) as i32))
    }

    fn length_delimited(&mut self, wire: u8) -> Result<&'a [u8], Error> {
        expect_wire(wire, LENGTH_DELIMITED)?;
        let len = self.varint()?;
        self.take(len)
    }

    fn string(&mut self, wire: u8) -> Result<String, Error> {
        let bytes = self.length_delimited(wire)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| malformed("invalid string value: data is not UTF-8 encoded"))
    }

    fn message(&mut self, wire: u8) -> Result<&'a [u8], Error> {
        self.length_delimited(wire)
    }

    /// Skips an unknown field; `depth` is what remains of the nesting allowance.
    fn skip(&mut self, field: u32, wire: u8, depth: u32) -> Result<(), Error> {
        if depth == 0 {
            return Err(malformed("recursion limit reached"));
        }
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            FIXED32 => self.take(4).map(drop),
            LENGTH_DELIMITED => {
                let len = self.varint()?;
                self.take(len).map(drop)
            }
            START_GROUP => loop {
                let (inner, inner_wire) = self.key()?;
                if inner_wire == END_GROUP {
                    if inner != field {
                        return Err(malformed("unexpected end group tag"));
                    }
                    return Ok(());
                }
                self.skip(inner, inner_wire, depth - 1)?;
            },
            _ => Err(malformed("unexpected end group tag")),
        }
    }
}

fn expect_wire(actual: u8, expected: u8) -> Result<(), Error> {
    if actual != expected {
        return Err(Error::Protobuf(format!(
            "invalid wire type: expected {expected}, found {actual}"
        )));
    }
    Ok(())
}

fn malformed(what: &str) -> Error {
    Error::Protobuf(what.to_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::export::wire::decode_export_bin_reference;
    use crate::export::{self, ExportArchive, ReportType, encode_export_bin};
    use crate::interval::EnIntervalNumber;
    use crate::keys::DiagnosisKey;

    fn both(bytes: &[u8]) -> (Result<Export, Error>, Result<Export, Error>) {
        let limits = ExportLimits::default();
        (
            parse_export_bin(bytes, &limits),
            decode_export_bin_reference(bytes, &limits),
        )
    }

    /// The two decoders agree: both accept with equal results, or both refuse.
    fn assert_agree(bytes: &[u8]) {
        match both(bytes) {
            (Ok(fast), Ok(reference)) => assert_eq!(fast, reference),
            (Err(_), Err(_)) => {}
            (fast, reference) => panic!("decoders disagree: {fast:?} vs {reference:?}"),
        }
    }

    fn with_header(body: &[u8]) -> Vec<u8> {
        [EXPORT_BIN_HEADER.as_slice(), body].concat()
    }

    fn sample() -> Export {
        let key = |n: u8, report_type| ExportKey {
            key: DiagnosisKey::from_bytes([n; 16]),
            transmission_risk_level: i32::from(n),
            rolling_start: EnIntervalNumber::new(2_700_000 + u32::from(n) * 144),
            rolling_period: 144 - u32::from(n),
            report_type,
            days_since_onset_of_symptoms: Some(i32::from(n) - 3),
        };
        Export {
            start_timestamp: 1_600_000_000,
            end_timestamp: 1_600_003_600,
            region: "NO".to_owned(),
            batch_num: 1,
            batch_size: 2,
            signature_infos: vec![SignatureInfo {
                verification_key_version: "v1".to_owned(),
                verification_key_id: "242".to_owned(),
                signature_algorithm: "1.2.840.10045.4.3.2".to_owned(),
            }],
            keys: vec![
                key(1, Some(ReportType::ConfirmedTest)),
                key(2, None),
                key(3, Some(ReportType::SelfReport)),
            ],
            revised_keys: vec![key(4, Some(ReportType::Revoked))],
        }
    }

    #[test]
    fn decodes_what_the_writer_wrote() {
        let export = sample();
        let bin = encode_export_bin(&export);
        assert_eq!(
            parse_export_bin(&bin, &ExportLimits::default()).unwrap(),
            export
        );
        assert_agree(&bin);
    }

    #[test]
    fn hand_written_edge_cases_agree() {
        let key_data: Vec<u8> = [&[0x0a, 16][..], &[7; 16]].concat();
        let key = |extra: &[u8]| -> Vec<u8> {
            let body = [&key_data[..], &[0x18, 0x80, 0x80, 0xa4, 0x01], extra].concat();
            [&[0x3a, u8::try_from(body.len()).unwrap()][..], &body].concat()
        };
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            key(&[]),
            // Unknown fields of every wire type, at the top and inside a key.
            [
                &[0x48, 0x01, 0x51][..],
                &[0; 8],
                &[0x5d, 0, 0, 0, 0, 0x62, 1, 9],
            ]
            .concat(),
            key(&[0x38, 0x05, 0x41, 1, 2, 3, 4, 5, 6, 7, 8]),
            // A group, an empty group, a group closed by the wrong field, an unopened end.
            vec![0x4b, 0x08, 0x01, 0x4c],
            vec![0x4b, 0x4c],
            vec![0x4b, 0x54],
            vec![0x4c],
            // Invalid wire types 6 and 7, field number 0, wrong wire type for a known field.
            vec![0x4e, 0x00],
            vec![0x4f, 0x00],
            vec![0x02, 0x00],
            vec![0x20, 0x01, 0x3a, 0x00],
            vec![0x39, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![0x09, 0, 0, 0],
            // Varints: ten bytes with the top bit, ten bytes too many, eleven, truncated.
            [&[0x20][..], &[0xff; 9], &[0x01]].concat(),
            [&[0x20][..], &[0xff; 9], &[0x02]].concat(),
            [&[0x20][..], &[0xff; 10], &[0x01]].concat(),
            vec![0x20, 0x80],
            // Overlong but valid encodings, and a key varint beyond 32 bits.
            vec![0xa0, 0x80, 0x80, 0x00, 0x05],
            vec![0x80, 0x80, 0x80, 0x80, 0x10, 0x00],
            // Invalid UTF-8 in the region; a length running past the end.
            vec![0x1a, 0x02, 0xc3, 0x28],
            vec![0x1a, 0x05, b'N', b'O'],
            // Keys: missing data, short data, missing start, period 0 and 145, negative start,
            // unknown report type, repeated fields where the last one wins.
            vec![0x3a, 0x02, 0x18, 0x01],
            vec![0x3a, 0x05, 0x0a, 0x01, 0x00, 0x18, 0x01],
            vec![
                0x3a, 0x12, 0x0a, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
            ],
            key(&[0x20, 0x00]),
            key(&[0x20, 0x91, 0x01]),
            key(&[0x18, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            key(&[0x28, 0x06]),
            key(&[0x28, 0x06, 0x28, 0x01, 0x30, 0x05, 0x30, 0x06, 0x20, 0x10]),
            // A key whose inner field runs past its own length.
            vec![0x3a, 0x03, 0x0a, 0x10, 0x00, 0x00],
        ];
        for case in cases {
            assert_agree(&with_header(&case));
        }
        assert!(matches!(
            parse_export_bin(b"EK Export v2    ", &ExportLimits::default()),
            Err(Error::BadHeader)
        ));
    }

    #[test]
    fn nesting_limit_matches() {
        for depth in [98, 99, 100, 101, 102] {
            let mut body = vec![0x4b; depth];
            body.extend(vec![0x4c; depth]);
            assert_agree(&with_header(&body));
            let mut with_value = vec![0x4b; depth];
            with_value.extend([0x08, 0x01]);
            with_value.extend(vec![0x4c; depth]);
            assert_agree(&with_header(&with_value));
        }
    }

    #[test]
    fn key_count_limit_applies() {
        let limits = ExportLimits {
            max_keys: 3,
            ..ExportLimits::default()
        };
        let bin = encode_export_bin(&sample());
        assert!(matches!(
            parse_export_bin(&bin, &limits),
            Err(Error::TooManyKeys { limit: 3 })
        ));
        assert!(decode_export_bin_reference(&bin, &limits).is_err());
        assert!(export::parse_export_bin(&bin, &limits).is_err());
    }

    #[test]
    fn signature_info_limit_applies() {
        let limits = ExportLimits {
            max_signatures: 2,
            ..ExportLimits::default()
        };
        let mut export = sample();
        export.signature_infos = vec![SignatureInfo::default(); 2];
        assert_agree(&encode_export_bin(&export));
        assert_eq!(
            parse_export_bin(&encode_export_bin(&export), &limits),
            Ok(export.clone())
        );

        export.signature_infos.push(SignatureInfo::default());
        let bin = encode_export_bin(&export);
        assert_eq!(
            parse_export_bin(&bin, &limits),
            Err(Error::TooManySignatures { limit: 2 })
        );
        assert_eq!(
            decode_export_bin_reference(&bin, &limits),
            Err(Error::TooManySignatures { limit: 2 })
        );
    }

    #[test]
    fn a_flood_of_empty_signature_infos_is_refused() {
        // Field 6 with length 0, over and over: each pair would be one more `SignatureInfo`.
        let body: Vec<u8> = [0x32, 0x00].repeat(1 << 16);
        let limits = ExportLimits::default();
        assert_eq!(
            parse_export_bin(&with_header(&body), &limits),
            Err(Error::TooManySignatures {
                limit: limits.max_signatures
            })
        );
        assert_agree(&with_header(&body));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn mutated_exports_agree(
            edits in proptest::collection::vec(
                (any::<prop::sample::Index>(), any::<u8>(), 0u8..3),
                1..6,
            ),
        ) {
            let mut bin = encode_export_bin(&sample());
            for (at, byte, kind) in edits {
                let index = at.index(bin.len() - EXPORT_BIN_HEADER.len()) + EXPORT_BIN_HEADER.len();
                match kind {
                    0 => bin[index] = byte,
                    1 => { bin.insert(index, byte); }
                    _ => { bin.truncate(index.max(EXPORT_BIN_HEADER.len())); }
                }
                if bin.len() <= EXPORT_BIN_HEADER.len() {
                    break;
                }
            }
            assert_agree(&bin);
        }

        #[test]
        fn random_bodies_agree(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            assert_agree(&with_header(&body));
        }

        #[test]
        fn random_structured_bodies_agree(
            fields in proptest::collection::vec((1u8..12, 0u8..6, any::<u64>(), 0usize..20), 0..12),
        ) {
            // Plausible keys and lengths with random field numbers, wire types and values.
            let mut body = Vec::new();
            for (field, wire, value, len) in fields {
                body.push(field << 3 | wire);
                match wire {
                    0 => encode_varint(value, &mut body),
                    1 => body.extend(value.to_le_bytes()),
                    5 => body.extend(&value.to_le_bytes()[..4]),
                    2 => {
                        encode_varint(len as u64, &mut body);
                        body.extend((0..len).map(|n| value.rotate_left(n as u32) as u8));
                    }
                    _ => {}
                }
            }
            assert_agree(&with_header(&body));
        }
    }

    fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    #[test]
    fn archives_read_like_the_reference_reader() {
        use p256::ecdsa::SigningKey;
        use rand::SeedableRng;

        use crate::export::{Compression, ExportSigner, write_archive};

        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let signer = ExportSigner::new(SigningKey::random(&mut rng), "242", "v1");
        let zip = write_archive(sample(), &[signer], Compression::Deflated).unwrap();
        let limits = ExportLimits::default();
        let (bin, _) = crate::export::read::archive_entries(&zip, &limits).unwrap();
        assert_eq!(
            ExportArchive::read(&zip, &limits).unwrap().export,
            decode_export_bin_reference(&bin, &limits).unwrap()
        );
        assert!(ExportArchive::read(&zip[..zip.len() - 1], &limits).is_err());
        assert!(ExportArchive::read(b"not a zip", &limits).is_err());
    }
}
