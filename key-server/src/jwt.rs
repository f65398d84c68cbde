//! Compact JWS tokens signed with ECDSA P-256 and SHA-256 (`ES256`), assembled from base64url
//! and the `p256` crate. Verification pins the algorithm: a header naming anything other than
//! `ES256` (including `none` and `HS256`) is refused before any key is looked at.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::TokenRejection;

/// Longest token accepted for verification, in characters.
pub const MAX_TOKEN_LEN: usize = 4_096;
/// The only algorithm this crate signs with or accepts.
pub const ALGORITHM: &str = "ES256";

/// The JOSE header.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing)]
    crit: Option<serde_json::Value>,
}

/// Signs `claims` with `key`, naming it `kid` in the header.
pub fn sign(claims: &impl Serialize, kid: &str, key: &SigningKey) -> String {
    let header = Header {
        alg: ALGORITHM.to_owned(),
        kid: Some(kid.to_owned()),
        typ: Some("JWT".to_owned()),
        crit: None,
    };
    let mut token = encode_part(&header);
    token.push('.');
    token.push_str(&encode_part(claims));
    let signature: Signature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&B64URL.encode(signature.to_bytes()));
    token
}

/// Checks the form, algorithm, key and signature of `token` and returns its claims.
///
/// `key_for` maps a `kid` to a trusted verifying key.
///
/// # Errors
///
/// [`TokenRejection::Malformed`], [`TokenRejection::Algorithm`],
/// [`TokenRejection::UnknownKey`] or [`TokenRejection::Signature`].
pub fn verify<'k, T: DeserializeOwned>(
    token: &str,
    key_for: impl Fn(&str) -> Option<&'k VerifyingKey>,
) -> Result<T, TokenRejection> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenRejection::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRejection::Malformed);
    };

    // The header decides nothing but which trusted key to use.
    let header: Header = decode_part(header)?;
    if header.alg != ALGORITHM {
        return Err(TokenRejection::Algorithm);
    }
    if header.crit.is_some() {
        return Err(TokenRejection::Malformed);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(key_for)
        .ok_or(TokenRejection::UnknownKey)?;

    // The signature covers the first two parts exactly as received.
    let signed_len = token.len() - signature.len() - 1;
    let signature = B64URL
        .decode(signature)
        .ok()
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or(TokenRejection::Signature)?;
    key.verify(&token.as_bytes()[..signed_len], &signature)
        .map_err(|_| TokenRejection::Signature)?;
    decode_part(claims)
}

fn encode_part(value: &impl Serialize) -> String {
    let json = serde_json::to_vec(value)
        .unwrap_or_else(|_| unreachable!("headers and claims always serialize"));
    B64URL.encode(json)
}

fn decode_part<T: DeserializeOwned>(part: &str) -> Result<T, TokenRejection> {
    let bytes = B64URL.decode(part).map_err(|_| TokenRejection::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenRejection::Malformed)
}

/// Builds a token with an arbitrary header and signature, for forgery tests.
#[doc(hidden)]
pub fn assemble_unchecked(
    header: &serde_json::Value,
    claims: &impl Serialize,
    sig: &[u8],
) -> String {
    format!(
        "{}.{}.{}",
        encode_part(header),
        encode_part(claims),
        B64URL.encode(sig)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn key() -> SigningKey {
        SigningKey::random(&mut rand_core::OsRng)
    }

    #[test]
    fn round_trip_and_tamper() {
        let signing = key();
        let verifying = *signing.verifying_key();
        let token = sign(&json!({ "a": 1 }), "k1", &signing);
        let claims: Value = verify(&token, |kid| (kid == "k1").then_some(&verifying)).unwrap();
        assert_eq!(claims["a"], 1);

        let other = sign(&json!({ "a": 2 }), "k1", &signing);
        let a: Vec<&str> = token.split('.').collect();
        let b: Vec<&str> = other.split('.').collect();
        let forged = format!("{}.{}.{}", a[0], b[1], a[2]);
        assert_eq!(
            verify::<Value>(&forged, |_| Some(&verifying)).unwrap_err(),
            TokenRejection::Signature
        );
        assert_eq!(
            verify::<Value>(&token, |_| None).unwrap_err(),
            TokenRejection::UnknownKey
        );
    }

    #[test]
    fn other_algorithms_are_refused() {
        let signing = key();
        let verifying = *signing.verifying_key();
        for alg in ["none", "HS256", "ES384", "es256", "RS256"] {
            let token = assemble_unchecked(&json!({ "alg": alg, "kid": "k1" }), &json!({}), b"");
            let error = verify::<Value>(&token, |_| Some(&verifying)).unwrap_err();
            assert_eq!(error, TokenRejection::Algorithm, "{alg}");
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for token in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.e30.AA",
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(
                verify::<Value>(token, |_| None).unwrap_err(),
                TokenRejection::Malformed
            );
        }
    }
}
