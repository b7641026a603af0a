use std::sync::Arc;

use serde_json::{Map, Value};

use crate::b64;
use crate::claims::Claims;
use crate::keys::{Key, KeySet, Miss};
use crate::rejection::Rejection;
use crate::remote::RemoteJwks;
use crate::settings::{Algorithm, Settings};

/// Where a verifier's keys come from.
#[derive(Debug, Clone)]
pub enum Keys {
    /// Keys fixed in configuration (inline JWKS or a Secret).
    Static(Arc<KeySet>),
    /// Keys fetched from a URL and refreshed in the background.
    Remote(Arc<RemoteJwks>),
}

/// Checks bearer tokens against one filter's settings and keys.
#[derive(Debug)]
pub struct Verifier {
    settings: Settings,
    keys: Keys,
}

/// The pieces of a compact JWS that survived structural checks.
struct Parts<'a> {
    alg: Algorithm,
    kid: Option<String>,
    signing_input: &'a str,
    signature: &'a str,
    payload: Vec<u8>,
}

impl Verifier {
    /// Refuses settings that could never accept a token, or that would
    /// trust symmetric keys from somewhere other than a Secret.
    pub fn new(settings: Settings, keys: Keys) -> Result<Verifier, String> {
        if settings.algorithms.is_empty() {
            return Err("at least one JWT algorithm must be allowed".into());
        }
        if settings.max_token_bytes == 0 {
            return Err("the maximum token size must be positive".into());
        }
        let wants_hs256 = settings.algorithms.contains(&Algorithm::HS256);
        match &keys {
            Keys::Remote(_) if wants_hs256 => {
                return Err(
                    "HS256 needs a symmetric key from a Kubernetes Secret, not a remote JWKS"
                        .into(),
                );
            }
            Keys::Static(set) if wants_hs256 && !set.symmetric_allowed() => {
                return Err(
                    "HS256 needs a symmetric key from a Kubernetes Secret; these keys cannot hold one"
                        .into(),
                );
            }
            Keys::Static(set) if !settings.algorithms.iter().any(|a| set.supports(*a)) => {
                let names: Vec<&str> = settings.algorithms.iter().map(|a| a.as_str()).collect();
                return Err(format!(
                    "no configured key can verify any allowed algorithm ({})",
                    names.join(", ")
                ));
            }
            _ => {}
        }
        Ok(Verifier { settings, keys })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Changes whenever the keys tokens are checked against change (a
    /// remote set was refetched); constant for static keys.
    pub fn keys_generation(&self) -> u64 {
        match &self.keys {
            Keys::Static(_) => 0,
            Keys::Remote(remote) => remote.generation(),
        }
    }

    /// Verifies a compact JWS and returns its claims.
    ///
    /// `now` is seconds since the Unix epoch, passed in so that one clock
    /// read serves a whole request and tests can pin time. Only a remote
    /// key set ever makes this wait, and never longer than its `kid_wait`.
    pub async fn verify(&self, token: &str, now: u64) -> Result<Claims, Rejection> {
        let parts = self.parse(token)?;
        match &self.keys {
            Keys::Static(set) => check_signature(set, &parts)?,
            Keys::Remote(remote) => verify_remote(remote, &parts).await?,
        }
        self.check_claims(&parts.payload, now)
    }

    /// Everything that can be decided without keys, cheapest first, so that
    /// junk is dropped before any key lookup or signature work.
    fn parse<'a>(&self, token: &'a str) -> Result<Parts<'a>, Rejection> {
        if token.len() > self.settings.max_token_bytes {
            return Err(Rejection::TooLarge);
        }
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(Rejection::Malformed);
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(Rejection::Malformed);
        }
        let header_json = b64::decode(header).ok_or(Rejection::Malformed)?;
        let payload = b64::decode(payload).ok_or(Rejection::Malformed)?;
        b64::decode(signature).ok_or(Rejection::Malformed)?;

        let header: Map<String, Value> =
            serde_json::from_slice(&header_json).map_err(|_| Rejection::Malformed)?;
        let alg = match header.get("alg") {
            Some(Value::String(name)) => name
                .parse::<Algorithm>()
                .map_err(|_| Rejection::Algorithm)?,
            _ => return Err(Rejection::Algorithm),
        };
        if !self.settings.algorithms.contains(&alg) {
            return Err(Rejection::Algorithm);
        }
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood,
        // and this verifier understands none (b64=false, for one, would
        // change what the signature covers).
        if header.contains_key("crit") {
            return Err(Rejection::Malformed);
        }
        // `jku`, `x5u`, `jwk` and `x5c` are deliberately never read: keys
        // come from configuration only, or anyone could sign with their own.
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(Rejection::Malformed),
        };
        let signing_input_len = token.len() - signature.len() - 1;
        Ok(Parts {
            alg,
            kid,
            signing_input: &token[..signing_input_len],
            signature,
            payload,
        })
    }

    fn check_claims(&self, payload: &[u8], now: u64) -> Result<Claims, Rejection> {
        let claims: Map<String, Value> =
            serde_json::from_slice(payload).map_err(|_| Rejection::Malformed)?;
        let now = now as f64;
        let skew = self.settings.clock_skew.as_secs_f64();

        match numeric_date(&claims, "exp")? {
            Some(exp) if now > exp + skew => return Err(Rejection::Expired),
            None if self.settings.require_expiration => return Err(Rejection::MissingExpiration),
            _ => {}
        }
        if let Some(nbf) = numeric_date(&claims, "nbf")?
            && now + skew < nbf
        {
            return Err(Rejection::NotYetValid);
        }
        if let Some(iat) = numeric_date(&claims, "iat")?
            && iat > now + skew
        {
            return Err(Rejection::IssuedInFuture);
        }
        if let Some(issuer) = &self.settings.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Err(Rejection::Issuer);
        }
        if !self.settings.audiences.is_empty()
            && !audience_matches(&claims, &self.settings.audiences)
        {
            return Err(Rejection::Audience);
        }
        Ok(Claims::from(claims))
    }
}

async fn verify_remote(remote: &Arc<RemoteJwks>, parts: &Parts<'_>) -> Result<(), Rejection> {
    remote.ensure_started();
    // The guard is confined to this statement: it must not live across an await.
    let first = remote.current().as_ref().map(|set| try_keys(set, parts));
    match first {
        Some(Err(Failure::UnknownKid)) | None => {}
        Some(Ok(())) => return Ok(()),
        Some(Err(Failure::Rejected(rejection))) => return Err(rejection),
    }
    // Either no keys yet, or a kid we have not seen: perhaps the issuer
    // rotated. One bounded wait for a fresher set, then a final answer.
    remote.refresh_and_wait().await;
    match remote.current().as_ref() {
        Some(set) => check_signature(set, parts),
        None => Err(Rejection::NoKeys),
    }
}

/// A failed key lookup or signature check; an unknown `kid` is kept apart
/// because a remote set may learn it on the next fetch.
enum Failure {
    UnknownKid,
    Rejected(Rejection),
}

fn check_signature(set: &KeySet, parts: &Parts<'_>) -> Result<(), Rejection> {
    try_keys(set, parts).map_err(|failure| match failure {
        Failure::UnknownKid => Rejection::UnknownKey,
        Failure::Rejected(rejection) => rejection,
    })
}

fn try_keys(set: &KeySet, parts: &Parts<'_>) -> Result<(), Failure> {
    let candidates =
        set.candidates(parts.kid.as_deref(), parts.alg)
            .map_err(|miss| match miss {
                Miss::UnknownKid => Failure::UnknownKid,
                Miss::NoFit | Miss::TooMany => Failure::Rejected(Rejection::UnknownKey),
            })?;
    if candidates.iter().any(|key| signature_ok(key, parts)) {
        Ok(())
    } else {
        Err(Failure::Rejected(Rejection::Signature))
    }
}

fn signature_ok(key: &Key, parts: &Parts<'_>) -> bool {
    // The key type was matched to the algorithm when the candidates were
    // chosen; the library would panic on some mismatches (an RSA key with
    // HS256), so that check is a precondition, not an optimisation.
    debug_assert!(key.accepts(parts.alg));
    jsonwebtoken::crypto::verify(
        parts.signature,
        parts.signing_input.as_bytes(),
        &key.decoding,
        parts.alg.to_jsonwebtoken(),
    )
    .unwrap_or(false)
}

/// A NumericDate (RFC 7519 §2): any JSON number, fractions allowed.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(Rejection::Malformed),
        Some(_) => Err(Rejection::Malformed),
    }
}

fn audience_matches(claims: &Map<String, Value>, accepted: &[String]) -> bool {
    let is_accepted = |v: &Value| v.as_str().is_some_and(|s| accepted.iter().any(|a| a == s));
    match claims.get("aud") {
        Some(Value::Array(items)) => items.iter().any(is_accepted),
        Some(v) => is_accepted(v),
        None => false,
    }
}
