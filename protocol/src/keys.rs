//! Keys and identifiers of the GAEN key schedule (`spec/protocol.md` §3).
//!
//! A device generates one [`TemporaryExposureKey`] per day. From it come two secret sub-keys, the
//! [`RollingProximityIdentifierKey`] and the [`AssociatedEncryptedMetadataKey`], and from those
//! the [`RollingProximityIdentifier`] broadcast in each ten-minute interval and the
//! [`AssociatedEncryptedMetadata`] that travels with it.
//!
//! Secret types zeroize their bytes on drop, print no bytes in `Debug`, and compare in constant
//! time. The only way to publish a key is the explicit
//! [`TemporaryExposureKey::into_diagnosis_key`] step, taken when its owner reports.

use aes::cipher::{BlockEncrypt, KeyInit, KeyIvInit, StreamCipher, generic_array::GenericArray};
use aes::{Aes128, Aes128Enc};
use std::sync::LazyLock;

use hkdf::HkdfExtract;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;
use crate::interval::{EK_ROLLING_PERIOD, EnIntervalNumber};

/// Length in bytes of every key and identifier in the schedule.
pub const KEY_LEN: usize = 16;

/// HKDF `info` for the Rolling Proximity Identifier Key (§3.2).
const RPIK_INFO: &[u8] = b"EN-RPIK";
/// HKDF `info` for the Associated Encrypted Metadata Key (§3.2).
const AEMK_INFO: &[u8] = b"EN-AEMK";

/// `PaddedData_j` without its interval: `"EN-RPI"`, six zero bytes, then room for `j` (§3.3).
///
/// Held as one little-endian 128-bit word so that each block is this word with `j` or-ed into
/// its top 32 bits.
const PADDED_DATA_TEMPLATE: u128 = u128::from_le_bytes(*b"EN-RPI\0\0\0\0\0\0\0\0\0\0");

/// Declares a 16-byte secret key type with redacted `Debug`, zeroize-on-drop and constant-time
/// equality.
macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            /// Wraps raw key bytes.
            pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(bytes)
            }

            /// Parses key bytes from a slice of exactly 16 bytes.
            ///
            /// # Errors
            ///
            /// [`Error::InvalidLength`] for any other length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
                fixed_bytes(stringify!($name), bytes).map(Self)
            }

            /// The raw key bytes. Every caller is a place where the secret leaves this type:
            /// keep them few and never log what they return.
            pub const fn expose_secret(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }

        impl ConstantTimeEq for $name {
            fn ct_eq(&self, other: &Self) -> subtle::Choice {
                self.0.ct_eq(&other.0)
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.ct_eq(other).into()
            }
        }

        impl Eq for $name {}
    };
}

secret_key! {
    /// A Temporary Exposure Key: 16 random bytes, valid for one rolling period (§3.1).
    ///
    /// It stays on the device until its owner reports a positive test; then
    /// [`into_diagnosis_key`](Self::into_diagnosis_key) turns it into a publishable key.
    TemporaryExposureKey
}

secret_key! {
    /// The Rolling Proximity Identifier Key, `HKDF(TEK, NULL, "EN-RPIK", 16)` (§3.2).
    RollingProximityIdentifierKey
}

secret_key! {
    /// The Associated Encrypted Metadata Key, `HKDF(TEK, NULL, "EN-AEMK", 16)` (§3.2).
    AssociatedEncryptedMetadataKey
}

impl TemporaryExposureKey {
    /// Generates a fresh key from a cryptographically secure random number generator.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Derives this key's Rolling Proximity Identifier Key.
    pub fn rpik(&self) -> RollingProximityIdentifierKey {
        RollingProximityIdentifierKey(hkdf16(&self.0, RPIK_INFO))
    }

    /// Derives this key's Associated Encrypted Metadata Key.
    pub fn aemk(&self) -> AssociatedEncryptedMetadataKey {
        AssociatedEncryptedMetadataKey(hkdf16(&self.0, AEMK_INFO))
    }

    /// Publishes this key: the step taken when its owner reports a positive test and agrees to
    /// share it. The result is no longer treated as a secret.
    pub fn into_diagnosis_key(self) -> DiagnosisKey {
        DiagnosisKey(self.0)
    }
}

/// A published Temporary Exposure Key, as it appears in uploads and export files (§3.1).
///
/// Diagnosis keys are public once published, so they can be sorted, hashed and compared
/// directly. Their `Debug` still prints no bytes, so that logs never carry keys awaiting export.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DiagnosisKey([u8; KEY_LEN]);

impl DiagnosisKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses key bytes from a slice of exactly 16 bytes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLength`] for any other length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        fixed_bytes("DiagnosisKey", bytes).map(Self)
    }

    /// The key bytes.
    pub const fn to_bytes(self) -> [u8; KEY_LEN] {
        self.0
    }

    /// The key bytes, borrowed.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Derives the Rolling Proximity Identifier Key, to recompute the identifiers it broadcast.
    pub fn rpik(&self) -> RollingProximityIdentifierKey {
        RollingProximityIdentifierKey(hkdf16(&self.0, RPIK_INFO))
    }

    /// Derives the Associated Encrypted Metadata Key, to decrypt the metadata of a match.
    pub fn aemk(&self) -> AssociatedEncryptedMetadataKey {
        AssociatedEncryptedMetadataKey(hkdf16(&self.0, AEMK_INFO))
    }
}

impl core::fmt::Debug for DiagnosisKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DiagnosisKey(<redacted>)")
    }
}

impl RollingProximityIdentifierKey {
    /// The identifier broadcast during interval `j`: `AES-128(RPIK, PaddedData_j)` (§3.3).
    pub fn rpi(&self, j: EnIntervalNumber) -> RollingProximityIdentifier {
        let cipher = Aes128Enc::new(GenericArray::from_slice(&self.0));
        let mut block = GenericArray::from(padded_data(j.value()));
        cipher.encrypt_block(&mut block);
        RollingProximityIdentifier(block.into())
    }

    /// The identifiers of all 144 intervals from `start`, in one batched AES call (§3.3).
    ///
    /// Interval numbers wrap modulo 2³², as the 32-bit `j` in `PaddedData_j` does.
    pub fn rpis(&self, start: EnIntervalNumber) -> [RollingProximityIdentifier; 144] {
        let mut out = [RollingProximityIdentifier([0; KEY_LEN]); EK_ROLLING_PERIOD as usize];
        self.rpis_into(start, &mut out);
        out
    }

    /// Like [`rpis`](Self::rpis), writing into a caller's buffer so a hot loop can reuse it.
    pub fn rpis_into(
        &self,
        start: EnIntervalNumber,
        out: &mut [RollingProximityIdentifier; EK_ROLLING_PERIOD as usize],
    ) {
        // Only encryption is needed, so the decryption key schedule is never computed.
        let cipher = Aes128Enc::new(GenericArray::from_slice(&self.0));
        let mut blocks = [GenericArray::from([0u8; KEY_LEN]); EK_ROLLING_PERIOD as usize];
        for (offset, block) in (0u32..).zip(blocks.iter_mut()) {
            *block = GenericArray::from(padded_data(start.value().wrapping_add(offset)));
        }
        cipher.encrypt_blocks(&mut blocks);
        for (rpi, block) in out.iter_mut().zip(blocks.iter()) {
            rpi.0 = (*block).into();
        }
    }
}

/// `PaddedData_j` for interval `j` as one block.
fn padded_data(j: u32) -> [u8; KEY_LEN] {
    (PADDED_DATA_TEMPLATE | (u128::from(j) << 96)).to_le_bytes()
}

impl AssociatedEncryptedMetadataKey {
    /// Encrypts metadata for broadcast alongside `rpi`: `AES-128-CTR(AEMK, RPI, metadata)` (§3.4).
    pub fn encrypt(
        &self,
        rpi: &RollingProximityIdentifier,
        metadata: &Metadata,
    ) -> AssociatedEncryptedMetadata {
        let mut bytes = metadata.to_bytes();
        self.apply_keystream(rpi, &mut bytes);
        AssociatedEncryptedMetadata(bytes)
    }

    /// Decrypts the metadata heard alongside `rpi`.
    pub fn decrypt(
        &self,
        rpi: &RollingProximityIdentifier,
        aem: &AssociatedEncryptedMetadata,
    ) -> Metadata {
        let mut bytes = aem.0;
        self.apply_keystream(rpi, &mut bytes);
        Metadata::from_bytes(bytes)
    }

    fn apply_keystream(&self, rpi: &RollingProximityIdentifier, bytes: &mut [u8; 4]) {
        let mut cipher = ctr::Ctr128BE::<Aes128>::new(
            GenericArray::from_slice(&self.0),
            GenericArray::from_slice(&rpi.0),
        );
        cipher.apply_keystream(bytes);
    }
}

/// HKDF-SHA256 with no salt, producing 16 bytes (§3.2).
///
/// "No salt" means a salt of 32 zero bytes, so the HMAC state keyed with it is the same for every
/// key; it is computed once and cloned, which saves two SHA-256 compressions per derivation.
fn hkdf16(ikm: &[u8; KEY_LEN], info: &[u8]) -> [u8; KEY_LEN] {
    static NO_SALT: LazyLock<HkdfExtract<Sha256>> = LazyLock::new(|| HkdfExtract::new(None));

    let mut extract = NO_SALT.clone();
    extract.input_ikm(ikm);
    let (_, hkdf) = extract.finalize();
    let mut okm = [0; KEY_LEN];
    let expanded = hkdf.expand(info, &mut okm);
    debug_assert!(expanded.is_ok(), "16 bytes is far below HKDF's limit");
    okm
}

/// A Rolling Proximity Identifier: what a device broadcasts during one interval (§3.3).
///
/// Identifiers are pseudonymous but still never logged, so `Debug` prints no bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RollingProximityIdentifier([u8; KEY_LEN]);

impl RollingProximityIdentifier {
    /// Wraps identifier bytes, as heard over the air.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The identifier bytes.
    pub const fn to_bytes(self) -> [u8; KEY_LEN] {
        self.0
    }

    /// The identifier bytes, borrowed.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl core::fmt::Debug for RollingProximityIdentifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RollingProximityIdentifier(<redacted>)")
    }
}

/// Associated Encrypted Metadata: four encrypted bytes broadcast with each identifier (§3.4).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AssociatedEncryptedMetadata([u8; 4]);

impl AssociatedEncryptedMetadata {
    /// Wraps encrypted metadata bytes, as heard over the air.
    pub const fn from_bytes(bytes: [u8; 4]) -> Self {
        Self(bytes)
    }

    /// The encrypted bytes.
    pub const fn to_bytes(self) -> [u8; 4] {
        self.0
    }
}

impl core::fmt::Debug for AssociatedEncryptedMetadata {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AssociatedEncryptedMetadata(<redacted>)")
    }
}

/// The clear metadata a device encrypts into its AEM (§3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Metadata {
    /// Major protocol version (bits 7-6 of byte 0); 1 for GAEN v1.x.
    pub version_major: u8,
    /// Minor protocol version (bits 5-4 of byte 0).
    pub version_minor: u8,
    /// Confidence in the TX power calibration, 0-3 (bits 3-2 of byte 0).
    pub tx_power_confidence: u8,
    /// Transmit power in dBm (byte 1).
    pub tx_power: i8,
    /// Reserved bits 1-0 of byte 0, zero when sent; kept as heard so that decryption
    /// round-trips.
    pub reserved_bits: u8,
    /// Reserved bytes 2-3, zero when sent; kept as heard.
    pub reserved: [u8; 2],
}

impl Metadata {
    /// Metadata of protocol version 1.0 with the given TX power and calibration confidence 0.
    pub const fn v1(tx_power: i8) -> Self {
        Self {
            version_major: 1,
            version_minor: 0,
            tx_power_confidence: 0,
            tx_power,
            reserved_bits: 0,
            reserved: [0; 2],
        }
    }

    /// The four clear bytes. Fields wider than their bits are masked.
    pub const fn to_bytes(&self) -> [u8; 4] {
        let version = ((self.version_major & 0b11) << 6)
            | ((self.version_minor & 0b11) << 4)
            | ((self.tx_power_confidence & 0b11) << 2)
            | (self.reserved_bits & 0b11);
        [
            version,
            self.tx_power as u8,
            self.reserved[0],
            self.reserved[1],
        ]
    }

    /// Reads the four clear bytes. Every byte pattern is a valid metadata value.
    pub const fn from_bytes(bytes: [u8; 4]) -> Self {
        Self {
            version_major: bytes[0] >> 6,
            version_minor: (bytes[0] >> 4) & 0b11,
            tx_power_confidence: (bytes[0] >> 2) & 0b11,
            tx_power: bytes[1] as i8,
            reserved_bits: bytes[0] & 0b11,
            reserved: [bytes[2], bytes[3]],
        }
    }
}

/// Copies exactly `N` bytes out of a slice, or names what had the wrong length.
pub(crate) fn fixed_bytes<const N: usize>(
    what: &'static str,
    bytes: &[u8],
) -> Result<[u8; N], Error> {
    bytes.try_into().map_err(|_| Error::InvalidLength {
        what,
        expected: N,
        actual: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_data_layout() {
        let block = padded_data(0x0403_0201);
        assert_eq!(&block[..6], b"EN-RPI");
        assert_eq!(&block[6..12], &[0; 6]);
        assert_eq!(&block[12..], &[1, 2, 3, 4]);
    }

    #[test]
    fn batched_identifiers_equal_single_ones() {
        let rpik = RollingProximityIdentifierKey::from_bytes([7; KEY_LEN]);
        let start = EnIntervalNumber::new(u32::MAX - 5);
        let batch = rpik.rpis(start);
        for (offset, rpi) in (0u32..).zip(batch.iter()) {
            let j = EnIntervalNumber::new(start.value().wrapping_add(offset));
            assert_eq!(*rpi, rpik.rpi(j));
        }
    }

    #[test]
    fn secrets_do_not_print_their_bytes() {
        let tek = TemporaryExposureKey::from_bytes([0xab; KEY_LEN]);
        let printed = format!("{tek:?} {:?} {:?}", tek.rpik(), tek.aemk());
        assert!(!printed.to_lowercase().contains("ab"), "{printed}");
        assert!(!printed.contains("171"), "{printed}");
    }

    #[test]
    fn secret_equality() {
        let a = TemporaryExposureKey::from_bytes([1; KEY_LEN]);
        let b = TemporaryExposureKey::from_bytes([1; KEY_LEN]);
        let c = TemporaryExposureKey::from_bytes([2; KEY_LEN]);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn wrong_length_is_an_error() {
        let err = TemporaryExposureKey::from_slice(&[0; 15]).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidLength {
                expected: 16,
                actual: 15,
                ..
            }
        ));
    }

    #[test]
    fn metadata_bits() {
        let metadata = Metadata {
            version_major: 1,
            version_minor: 2,
            tx_power_confidence: 3,
            tx_power: -12,
            reserved_bits: 0,
            reserved: [0; 2],
        };
        assert_eq!(metadata.to_bytes(), [0b0110_1100, 0xf4, 0, 0]);
        assert_eq!(Metadata::from_bytes(metadata.to_bytes()), metadata);
    }
}
