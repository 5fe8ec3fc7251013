//! ES384 JSON Web Tokens and P-384 JSON Web Keys, in the shapes y-redis's JavaScript
//! servers produce and accept (WebCrypto keys, lib0 tokens).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use p384::ecdsa::signature::{Signer as _, Verifier as _};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::AuthError;

/// Length in bytes of a P-384 scalar or coordinate.
const FIELD_LEN: usize = 48;

/// The JOSE header of every token this server mints.
const HEADER_JSON: &str = r#"{"alg":"ES384","typ":"JWT"}"#;

/// base64url for JWK members and the three parts of a token: written without
/// padding (JOSE); read with or without canonical `=` padding and without
/// insisting on zero trailing bits, as y-redis's lib0 and JavaScript's decoders
/// read them. Some hand-made tokens pad (e.g. Python's `urlsafe_b64encode`); the
/// signature covers the text as sent, so padding changes nothing it vouches for.
const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A verified P-384 public key.
pub(super) struct PublicKey(VerifyingKey);

/// An elliptic-curve JWK as WebCrypto exports it. Extra members read (`alg`,
/// `key_ops`, `ext`, `use`, `kid`) are ignored.
#[derive(Deserialize, Serialize)]
struct Jwk {
    /// Written as WebCrypto exports it (`["sign"]` private, `["verify"]` public):
    /// y-redis imports keys with lib0's `importKeyJwk`, which takes the usages from
    /// `key_ops` and without them asks for both, which WebCrypto refuses for a
    /// public key (and for a private one). Never read: keys with or without it work.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    key_ops: Option<[&'static str; 1]>,
    kty: String,
    crv: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<String>,
}

impl Jwk {
    fn parse(text: &str, what: &str) -> Result<Self, AuthError> {
        let jwk: Jwk = serde_json::from_str(text.trim())
            .map_err(|e| AuthError::Config(format!("the {what} is not a JWK: {e}")))?;
        if jwk.kty != "EC" || jwk.crv != "P-384" {
            return Err(AuthError::Config(format!(
                "the {what} must be an EC P-384 JWK, not kty {:?} crv {:?}",
                truncate(&jwk.kty),
                truncate(&jwk.crv)
            )));
        }
        Ok(jwk)
    }

    fn field(value: &Option<String>, name: &str, what: &str) -> Result<Vec<u8>, AuthError> {
        let value = value
            .as_deref()
            .ok_or_else(|| AuthError::Config(format!("the {what} has no \"{name}\"")))?;
        let bytes = B64
            .decode(value)
            .map_err(|_| AuthError::Config(format!("\"{name}\" of the {what} is not base64url")))?;
        if bytes.len() != FIELD_LEN {
            return Err(AuthError::Config(format!(
                "\"{name}\" of the {what} has {} bytes, P-384 needs {FIELD_LEN}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// The public key named by `x` and `y`.
    fn verifying_key(&self, what: &str) -> Result<VerifyingKey, AuthError> {
        let x = Self::field(&self.x, "x", what)?;
        let y = Self::field(&self.y, "y", what)?;
        let mut sec1 = Vec::with_capacity(1 + 2 * FIELD_LEN);
        sec1.push(0x04);
        sec1.extend_from_slice(&x);
        sec1.extend_from_slice(&y);
        VerifyingKey::from_sec1_bytes(&sec1)
            .map_err(|_| AuthError::Config(format!("the {what} is not a point on P-384")))
    }

    fn from_keys(signing: Option<&SigningKey>, verifying: &VerifyingKey) -> Self {
        let point = verifying.to_encoded_point(false);
        Jwk {
            key_ops: Some([if signing.is_some() { "sign" } else { "verify" }]),
            kty: "EC".into(),
            crv: "P-384".into(),
            x: point.x().map(|x| B64.encode(x)),
            y: point.y().map(|y| B64.encode(y)),
            d: signing.map(|s| B64.encode(s.to_bytes())),
        }
    }

    fn to_json(&self) -> Result<String, AuthError> {
        serde_json::to_string(self)
            .map_err(|e| AuthError::Config(format!("cannot write a JWK: {e}")))
    }
}

impl PublicKey {
    /// Reads the operator's public key (y-redis's `AUTH_PUBLIC_KEY`).
    pub(super) fn from_jwk(text: &str) -> Result<Self, AuthError> {
        let what = "public key";
        let jwk = Jwk::parse(text, what)?;
        if jwk.d.is_some() {
            tracing::warn!("the auth public key is a private JWK; only its public part is used");
        }
        Ok(Self(jwk.verifying_key(what)?))
    }
}

/// A new P-384 key pair, as two JWK JSON texts: the private one (with `d`, for whoever
/// mints tokens) and the public one (for `AUTH_PUBLIC_KEY`). Both import into
/// WebCrypto, so y-redis's JavaScript tools can use them too.
pub fn generate_key_pair() -> Result<(String, String), AuthError> {
    let mut rng = rand::rng();
    let mut scalar = [0u8; FIELD_LEN];
    // A random 384-bit string is a valid scalar except with probability ~2^-190.
    let mut signing = None;
    for _ in 0..16 {
        rng.fill_bytes(&mut scalar);
        if let Ok(key) = SigningKey::from_slice(&scalar) {
            signing = Some(key);
            break;
        }
    }
    scalar.fill(0);
    let signing = signing
        .ok_or_else(|| AuthError::Config("the random source gave no valid P-384 key".into()))?;
    let verifying = *signing.verifying_key();
    let private = Jwk::from_keys(Some(&signing), &verifying).to_json()?;
    let public = Jwk::from_keys(None, &verifying).to_json()?;
    Ok((private, public))
}

#[derive(Serialize)]
struct Claims<'a> {
    yuserid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

/// Mints a token for `user_id`, signed with `private_jwk` (a P-384 JWK with `d`):
/// header `{"alg":"ES384","typ":"JWT"}`, payload `{"yuserid", "exp"}` where `exp` is
/// now plus `ttl` in MILLISECONDS (y-redis's rule), or absent when `ttl` is `None`.
/// Lets operators and tests issue tokens that this server and y-redis's JavaScript
/// servers both accept.
pub fn mint_token(
    private_jwk: &str,
    user_id: &str,
    ttl: Option<Duration>,
) -> Result<String, AuthError> {
    if user_id.is_empty() {
        return Err(AuthError::MissingUserId);
    }
    let signing = signing_key_from_jwk(private_jwk)?;
    let exp = ttl.map(|ttl| {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        now_millis().saturating_add(ttl_ms)
    });
    let claims = serde_json::to_string(&Claims {
        yuserid: user_id,
        exp,
    })
    .map_err(|e| AuthError::Config(format!("cannot write the token claims: {e}")))?;
    sign_compact(&signing, HEADER_JSON, &claims)
}

/// Reads a private JWK (with `d`); when it also has `x` and `y`, they must match.
pub(super) fn signing_key_from_jwk(text: &str) -> Result<SigningKey, AuthError> {
    let what = "private key";
    let jwk = Jwk::parse(text, what)?;
    let d = Jwk::field(&jwk.d, "d", what)?;
    let signing = SigningKey::from_slice(&d)
        .map_err(|_| AuthError::Config(format!("\"d\" of the {what} is not a P-384 scalar")))?;
    if (jwk.x.is_some() || jwk.y.is_some()) && jwk.verifying_key(what)? != *signing.verifying_key()
    {
        return Err(AuthError::Config(format!(
            "\"x\" and \"y\" of the {what} do not match its \"d\""
        )));
    }
    Ok(signing)
}

/// Signs `header.payload` (both JSON texts, base64url-encoded here) with ES384 and
/// returns the compact JWT.
pub(super) fn sign_compact(
    signing: &SigningKey,
    header_json: &str,
    payload_json: &str,
) -> Result<String, AuthError> {
    let signing_input = format!("{}.{}", B64.encode(header_json), B64.encode(payload_json));
    let signature: Signature = signing
        .try_sign(signing_input.as_bytes())
        .map_err(|e| AuthError::Config(format!("signing failed: {e}")))?;
    Ok(format!(
        "{signing_input}.{}",
        B64.encode(signature.to_bytes())
    ))
}

/// Milliseconds since the Unix epoch, the unit of y-redis's `exp`.
pub(super) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Verified {
    /// Its `yuserid`.
    pub(super) user_id: String,
    /// Its `exp`, whole milliseconds since the epoch (a fractional `exp` is
    /// valid through its whole millisecond, as lib0 compares it).
    pub(super) expires_at: Option<u64>,
}

/// Verifies `token` against `key` at time `now_ms`: its `yuserid` and `exp`.
pub(super) fn verify(key: &PublicKey, token: &str, now_ms: u64) -> Result<Verified, AuthError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, payload_b64, signature_b64] = parts.as_slice() else {
        return Err(AuthError::Malformed(format!(
            "expected 3 dot-separated parts, found {}",
            parts.len()
        )));
    };

    let header = decode_json(header_b64, "header")?;
    match header.get("alg") {
        Some(serde_json::Value::String(alg)) if alg == "ES384" => {}
        Some(serde_json::Value::String(alg)) => {
            return Err(AuthError::Malformed(format!(
                "algorithm {:?} is not accepted, only ES384",
                truncate(alg)
            )))
        }
        _ => return Err(AuthError::Malformed("header has no alg".into())),
    }

    let signature = B64
        .decode(signature_b64)
        .map_err(|_| AuthError::Malformed("signature is not base64url".into()))?;
    // A signature of the wrong length or with a zero scalar cannot verify.
    let signature = Signature::from_slice(&signature).map_err(|_| AuthError::BadSignature)?;
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    key.0
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| AuthError::BadSignature)?;

    let payload = decode_json(payload_b64, "payload")?;
    let serde_json::Value::Object(claims) = payload else {
        return Err(AuthError::Malformed("payload is not a JSON object".into()));
    };
    let expires_at = match claims.get("exp") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(exp)) => {
            // lib0 compares its millisecond clock with exp; a seconds-based exp is
            // therefore always in the past.
            let exp = exp.as_f64().unwrap_or(f64::NEG_INFINITY);
            if now_ms as f64 > exp {
                return Err(AuthError::Expired);
            }
            // Not past, so at least `now_ms`; `as` saturates what no u64 holds.
            Some(exp.floor() as u64)
        }
        Some(_) => return Err(AuthError::Malformed("exp is not a number".into())),
    };
    let user_id = match claims.get("yuserid") {
        None | Some(serde_json::Value::Null) => return Err(AuthError::MissingUserId),
        Some(serde_json::Value::String(user)) if user.is_empty() => {
            return Err(AuthError::MissingUserId)
        }
        Some(serde_json::Value::String(user)) => user.clone(),
        Some(_) => return Err(AuthError::Malformed("yuserid is not a string".into())),
    };
    Ok(Verified {
        user_id,
        expires_at,
    })
}

fn decode_json(part: &str, name: &str) -> Result<serde_json::Value, AuthError> {
    let bytes = B64
        .decode(part)
        .map_err(|_| AuthError::Malformed(format!("{name} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed(format!("{name} is not JSON")))
}

/// A short prefix of an untrusted string, for error texts.
fn truncate(s: &str) -> String {
    s.chars().take(16).collect()
}
