use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use crate::b64;
use crate::settings::Algorithm;

/// Tokens without a usable `kid` are tried against every fitting key; past
/// this many the work per forged token grows too much, so the token is refused.
pub(crate) const MAX_UNNAMED_CANDIDATES: usize = 8;

/// ring verifies RSA signatures only for moduli in this range; refusing
/// other sizes at parse time turns a silent per-request failure into a
/// configuration error.
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
const HS256_MIN_BYTES: usize = 32;

/// What a key is, which decides which algorithms it may ever verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
    Oct,
}

impl KeyKind {
    /// The family rule that prevents key confusion: a public RSA key is
    /// never an HMAC secret, and a curve only signs with its own algorithm.
    pub(crate) fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (
                KeyKind::Rsa,
                Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256
            ) | (KeyKind::P256, Algorithm::ES256)
                | (KeyKind::P384, Algorithm::ES384)
                | (KeyKind::Ed25519, Algorithm::EdDSA)
                | (KeyKind::Oct, Algorithm::HS256)
        )
    }
}

pub(crate) struct Key {
    pub(crate) kind: KeyKind,
    /// The JWK's own `alg`, which narrows the key to that one algorithm.
    pub(crate) alg: Option<Algorithm>,
    pub(crate) decoding: DecodingKey,
}

impl Key {
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|own| own == alg)
    }
}

/// A parsed JWKS: the only source of keys a token is ever checked against.
pub struct KeySet {
    named: HashMap<String, Vec<Key>>,
    unnamed: Vec<Key>,
    len: usize,
    symmetric_allowed: bool,
    /// SHA-256 of the document it was parsed from, so that a refetch of
    /// the same document can be told from a rotation.
    source: [u8; 32],
}

/// Why a key set could not offer a key for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The token names a `kid` the set does not hold; a fresher set might.
    UnknownKid,
    /// No key of the right type (or the `kid`'s key is of the wrong type).
    NoFit,
    /// Too many keys would have to be tried for a token without `kid`.
    TooMany,
}

impl KeySet {
    /// Parses a JWKS document (RFC 7517 §5: `{"keys":[...]}`).
    ///
    /// `symmetric_allowed` admits `oct` keys; pass true only for key
    /// material that came from a Kubernetes Secret, since a secret served
    /// from a URL is a secret shared with everyone who can read that URL.
    /// Keys meant for encryption, of an unknown type or on a curve this crate
    /// does not verify are skipped; a key that claims to be for signatures
    /// but cannot be built is an error, as is a set left with no keys.
    pub fn from_jwks(json: &[u8], symmetric_allowed: bool) -> Result<KeySet, String> {
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
        let keys = doc
            .as_object()
            .and_then(|o| o.get("keys"))
            .and_then(Value::as_array)
            .ok_or_else(|| "JWKS must be a JSON object with a \"keys\" array".to_string())?;

        let mut set = KeySet {
            named: HashMap::new(),
            unnamed: Vec::new(),
            len: 0,
            symmetric_allowed,
            source: {
                use sha2::Digest;
                sha2::Sha256::digest(json).into()
            },
        };
        let mut skipped = Vec::new();
        for (index, jwk) in keys.iter().enumerate() {
            let label = KeyLabel { index, jwk };
            let Some(obj) = jwk.as_object() else {
                return Err(format!("{label} is not a JSON object"));
            };
            match parse_jwk(obj, symmetric_allowed).map_err(|e| format!("{label}: {e}"))? {
                Parsed::Usable(kid, key) => {
                    set.len += 1;
                    match kid {
                        Some(kid) => set.named.entry(kid).or_default().push(key),
                        None => set.unnamed.push(key),
                    }
                }
                Parsed::Skipped(why) => skipped.push(format!("{label}: {why}")),
            }
        }
        if set.len == 0 {
            let mut msg = "JWKS holds no usable signing keys".to_string();
            if !skipped.is_empty() {
                msg.push_str(" (");
                msg.push_str(&skipped.join("; "));
                msg.push(')');
            }
            return Err(msg);
        }
        Ok(set)
    }

    /// Whether both sets were parsed from the same document.
    pub fn same_source(&self, other: &KeySet) -> bool {
        self.source == other.source && self.symmetric_allowed == other.symmetric_allowed
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true for a set returned by [`KeySet::from_jwks`].
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this set was parsed with `oct` keys allowed.
    pub fn symmetric_allowed(&self) -> bool {
        self.symmetric_allowed
    }

    /// Whether at least one key could verify a token signed with `alg`.
    pub fn supports(&self, alg: Algorithm) -> bool {
        self.all_keys().any(|k| k.accepts(alg))
    }

    fn all_keys(&self) -> impl Iterator<Item = &Key> {
        self.named.values().flatten().chain(self.unnamed.iter())
    }

    /// The keys a token with this header may be checked against.
    ///
    /// A `kid` is binding only when the set uses kids at all: a set made of
    /// keys without kids (a single Secret, say) must still accept tokens
    /// from issuers that always stamp one.
    pub(crate) fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<&Key>, Miss> {
        if let Some(kid) = kid
            && !self.named.is_empty()
        {
            let keys = self.named.get(kid).ok_or(Miss::UnknownKid)?;
            let fitting: Vec<&Key> = keys
                .iter()
                .filter(|k| k.accepts(alg))
                .take(MAX_UNNAMED_CANDIDATES)
                .collect();
            return if fitting.is_empty() {
                Err(Miss::NoFit)
            } else {
                Ok(fitting)
            };
        }
        let mut fitting = Vec::new();
        for key in self.all_keys().filter(|k| k.accepts(alg)) {
            if fitting.len() == MAX_UNNAMED_CANDIDATES {
                return Err(Miss::TooMany);
            }
            fitting.push(key);
        }
        if fitting.is_empty() {
            Err(Miss::NoFit)
        } else {
            Ok(fitting)
        }
    }
}

impl fmt::Debug for KeySet {
    // Key material stays out of logs; kids are enough to tell sets apart.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.named.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("KeySet")
            .field("len", &self.len)
            .field("kids", &kids)
            .field("without_kid", &self.unnamed.len())
            .finish()
    }
}

struct KeyLabel<'a> {
    index: usize,
    jwk: &'a Value,
}

impl fmt::Display for KeyLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {}", self.index)?;
        if let Some(kid) = self.jwk.get("kid").and_then(Value::as_str) {
            write!(f, " (kid {kid:?})")?;
        }
        Ok(())
    }
}

enum Parsed {
    Usable(Option<String>, Key),
    Skipped(String),
}

fn parse_jwk(obj: &Map<String, Value>, symmetric_allowed: bool) -> Result<Parsed, String> {
    let kty = string_member(obj, "kty")?.ok_or("missing \"kty\"")?;
    let kid = string_member(obj, "kid")?.map(str::to_owned);

    if let Some(usage) = string_member(obj, "use")?
        && usage != "sig"
    {
        return Ok(Parsed::Skipped(format!(
            "\"use\" is {usage:?}, not \"sig\""
        )));
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops
            .as_array()
            .ok_or("\"key_ops\" must be an array of strings")?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Ok(Parsed::Skipped("\"key_ops\" lacks \"verify\"".into()));
        }
    }
    let alg = match string_member(obj, "alg")? {
        None => None,
        Some(name) => match name.parse::<Algorithm>() {
            Ok(alg) => Some(alg),
            // Keys for algorithms a gateway never accepts cannot verify
            // anything here, but their presence does not make the set wrong.
            Err(_) => {
                return Ok(Parsed::Skipped(format!(
                    "\"alg\" {name:?} is not supported"
                )));
            }
        },
    };

    let (kind, decoding) = match kty {
        "RSA" => {
            let n = strip_leading_zeros(b64_member(obj, "n")?);
            let e = strip_leading_zeros(b64_member(obj, "e")?);
            let bits = bit_len(&n);
            if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
                return Err(format!(
                    "RSA modulus is {bits} bits; {RSA_MIN_BITS} to {RSA_MAX_BITS} are supported"
                ));
            }
            if e.is_empty() || e.len() > 4 || e.last().is_some_and(|b| b & 1 == 0) || e == [1] {
                return Err("RSA public exponent is not usable".into());
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            let crv = string_member(obj, "crv")?.ok_or("missing \"crv\"")?;
            let (kind, size) = match crv {
                "P-256" => (KeyKind::P256, 32),
                "P-384" => (KeyKind::P384, 48),
                other => return Ok(Parsed::Skipped(format!("curve {other:?} is not supported"))),
            };
            let x = b64_member(obj, "x")?;
            let y = b64_member(obj, "y")?;
            if x.len() != size || y.len() != size {
                return Err(format!("{crv} coordinates must be {size} bytes each"));
            }
            // ring takes the SEC1 uncompressed point.
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (kind, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            let crv = string_member(obj, "crv")?.ok_or("missing \"crv\"")?;
            if crv != "Ed25519" {
                return Ok(Parsed::Skipped(format!("curve {crv:?} is not supported")));
            }
            let x = b64_member(obj, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 public key must be 32 bytes".into());
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_der(&x))
        }
        "oct" => {
            if !symmetric_allowed {
                return Err(
                    "symmetric (oct) keys are accepted only from a Kubernetes Secret".into(),
                );
            }
            let k = b64_member(obj, "k")?;
            if k.len() < HS256_MIN_BYTES {
                return Err(format!(
                    "symmetric key is {} bytes; at least {HS256_MIN_BYTES} are required",
                    k.len()
                ));
            }
            (KeyKind::Oct, DecodingKey::from_secret(&k))
        }
        other => {
            return Ok(Parsed::Skipped(format!(
                "key type {other:?} is not supported"
            )));
        }
    };

    if let Some(alg) = alg
        && !kind.fits(alg)
    {
        return Err(format!("\"alg\" {alg} does not match the key type"));
    }
    Ok(Parsed::Usable(
        kid,
        Key {
            kind,
            alg,
            decoding,
        },
    ))
}

fn string_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" must be a string")),
    }
}

fn b64_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = string_member(obj, name)?.ok_or_else(|| format!("missing \"{name}\""))?;
    b64::decode(text).ok_or_else(|| format!("\"{name}\" is not unpadded base64url"))
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}

fn bit_len(bytes: &[u8]) -> usize {
    match bytes.first() {
        None => 0,
        Some(first) => bytes.len() * 8 - first.leading_zeros() as usize,
    }
}
