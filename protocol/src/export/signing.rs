//! Signing exports and checking their signatures against trusted keys (`spec/protocol.md` §6.3).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};

use super::SignatureInfo;
use super::read::{ExportArchive, TekSignature};
use crate::Error;

/// Object identifier of ECDSA with SHA-256, the only export signature algorithm GAEN defines.
pub const ECDSA_P256_SHA256_OID: &str = "1.2.840.10045.4.3.2";

/// A key that signs exports, with the identity under which verifiers know it.
#[derive(Clone)]
pub struct ExportSigner {
    key: SigningKey,
    info: SignatureInfo,
}

impl ExportSigner {
    /// A signer known to verifiers as `key_id`, version `key_version`.
    pub fn new(key: SigningKey, key_id: &str, key_version: &str) -> Self {
        Self {
            key,
            info: SignatureInfo {
                verification_key_version: key_version.to_owned(),
                verification_key_id: key_id.to_owned(),
                signature_algorithm: ECDSA_P256_SHA256_OID.to_owned(),
            },
        }
    }

    /// Who this signer says it is.
    pub fn info(&self) -> &SignatureInfo {
        &self.info
    }

    /// The public half, for publishing to verifiers.
    pub fn verifying_key(&self) -> VerifyingKey {
        *self.key.verifying_key()
    }

    /// Signs the SHA-256 digest of an `export.bin`; returns the DER-encoded signature.
    pub(crate) fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, Error> {
        let signature: Signature = self
            .key
            .sign_prehash(digest)
            .map_err(|_| Error::SigningFailed)?;
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

impl core::fmt::Debug for ExportSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ExportSigner")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// A public key a verifier trusts, optionally pinned to the key id and version it signs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    /// The key.
    pub key: VerifyingKey,
    /// The `verification_key_id` it must sign as, or any when `None`.
    pub key_id: Option<String>,
    /// The `verification_key_version` it must sign as, or any when `None`.
    pub key_version: Option<String>,
}

impl TrustedKey {
    /// Trusts `key` under whatever id and version a signature names.
    pub fn any_id(key: VerifyingKey) -> Self {
        Self {
            key,
            key_id: None,
            key_version: None,
        }
    }

    /// Reads a SubjectPublicKeyInfo in PEM form (`-----BEGIN PUBLIC KEY-----`), with base64
    /// lines of any length, or as bare base64 of the DER bytes, as keys are often published.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPublicKey`].
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
        const END: &str = "-----END PUBLIC KEY-----";
        if pem.len() > 4096 {
            return Err(Error::InvalidPublicKey);
        }
        let text = pem.trim();
        let body = match text.strip_prefix(BEGIN) {
            Some(rest) => rest.strip_suffix(END).ok_or(Error::InvalidPublicKey)?,
            None => text,
        };
        let base64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = BASE64.decode(base64).map_err(|_| Error::InvalidPublicKey)?;
        Self::from_der(&der)
    }

    /// Reads a SubjectPublicKeyInfo in DER form.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPublicKey`].
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        VerifyingKey::from_public_key_der(der)
            .map(Self::any_id)
            .map_err(|_| Error::InvalidPublicKey)
    }

    /// The key as SubjectPublicKeyInfo PEM.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPublicKey`] if encoding fails.
    pub fn to_pem(&self) -> Result<String, Error> {
        self.key
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .map_err(|_| Error::InvalidPublicKey)
    }

    /// Pins the key to an id and version.
    pub fn pinned(mut self, key_id: &str, key_version: &str) -> Self {
        self.key_id = Some(key_id.to_owned());
        self.key_version = Some(key_version.to_owned());
        self
    }

    fn names(&self, info: &SignatureInfo) -> bool {
        let id_matches = self
            .key_id
            .as_ref()
            .is_none_or(|id| *id == info.verification_key_id);
        let version_matches = self
            .key_version
            .as_ref()
            .is_none_or(|version| *version == info.verification_key_version);
        id_matches && version_matches
    }
}

/// The set of keys a verifier accepts exports from; holding several lets signers rotate keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedKeys(Vec<TrustedKey>);

impl TrustedKeys {
    /// An empty set, which trusts nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key to the set.
    pub fn add(&mut self, key: TrustedKey) {
        self.0.push(key);
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<TrustedKey> for TrustedKeys {
    fn from_iter<I: IntoIterator<Item = TrustedKey>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// The outcome of checking one signature of an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureStatus {
    /// A trusted key verified it.
    Verified,
    /// The algorithm is not ECDSA P-256 with SHA-256.
    UnsupportedAlgorithm,
    /// Its batch number or size differs from the file's.
    BatchMismatch,
    /// No trusted key is known under its id and version.
    UnknownKey,
    /// The bytes are not a DER-encoded P-256 signature.
    Malformed,
    /// No trusted key under its id and version verifies it.
    Invalid,
}

/// One signature of an archive and what checking it found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureCheck {
    /// Who the signature says signed.
    pub info: SignatureInfo,
    /// The outcome.
    pub status: SignatureStatus,
}

impl ExportArchive {
    /// Checks every signature of the archive against `trusted`.
    pub fn check_signatures(&self, trusted: &TrustedKeys) -> Vec<SignatureCheck> {
        self.signatures
            .iter()
            .map(|signature| SignatureCheck {
                info: signature.signature_info.clone(),
                status: self.check_one(signature, trusted),
            })
            .collect()
    }

    /// Succeeds when at least one signature verifies under a trusted key (§6.4).
    ///
    /// # Errors
    ///
    /// [`Error::SignatureNotVerified`] otherwise.
    pub fn verify(&self, trusted: &TrustedKeys) -> Result<(), Error> {
        let verified = self
            .signatures
            .iter()
            .any(|signature| self.check_one(signature, trusted) == SignatureStatus::Verified);
        if verified {
            Ok(())
        } else {
            Err(Error::SignatureNotVerified)
        }
    }

    fn check_one(&self, signature: &TekSignature, trusted: &TrustedKeys) -> SignatureStatus {
        let info = &signature.signature_info;
        if info.signature_algorithm != ECDSA_P256_SHA256_OID {
            return SignatureStatus::UnsupportedAlgorithm;
        }
        if signature.batch_num != self.export.batch_num
            || signature.batch_size != self.export.batch_size
        {
            return SignatureStatus::BatchMismatch;
        }
        let Ok(parsed) = Signature::from_der(&signature.signature) else {
            return SignatureStatus::Malformed;
        };

        let mut candidates = trusted.0.iter().filter(|key| key.names(info)).peekable();
        if candidates.peek().is_none() {
            return SignatureStatus::UnknownKey;
        }
        let verified = candidates.any(|key| {
            key.key
                .verify_prehash(&self.export_bin_sha256, &parsed)
                .is_ok()
        });
        if verified {
            SignatureStatus::Verified
        } else {
            SignatureStatus::Invalid
        }
    }
}
