//! Shared fixtures: keys are generated per test run, never stored in the source.

mod fuzz;
mod jwks;
mod remote;
mod server;
mod verify;

use std::sync::{Arc, OnceLock};

use jsonwebtoken::EncodingKey;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair,
};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use crate::b64;
use crate::{Algorithm, KeySet, Keys, Settings, Verifier};

/// An instant well inside every fixture token's validity window.
pub(crate) const NOW: u64 = 1_700_000_000;

/// A signing key and the public JWK that verifies it.
pub(crate) struct TestKey {
    pub(crate) encoding: EncodingKey,
    /// Public JWK without `kid`/`alg`; tests add those as they need.
    pub(crate) jwk: Value,
    /// Only for RSA: the public key, for key-confusion attempts.
    pub(crate) rsa_public: Option<rsa::RsaPublicKey>,
}

impl TestKey {
    /// A JWKS holding just this key, without `kid`.
    pub(crate) fn set(&self) -> Vec<u8> {
        jwks(std::slice::from_ref(&self.jwk))
    }

    pub(crate) fn jwk_with_kid(&self, kid: &str) -> Value {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = json!(kid);
        jwk
    }
}

pub(crate) fn jwks(keys: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).expect("serialise JWKS")
}

fn rsa_key() -> TestKey {
    let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA keygen");
    let der = private.to_pkcs1_der().expect("PKCS#1 DER");
    let public = private.to_public_key();
    TestKey {
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk: json!({
            "kty": "RSA",
            "n": b64::encode(&public.n().to_bytes_be()),
            "e": b64::encode(&public.e().to_bytes_be()),
        }),
        rsa_public: Some(public),
    }
}

/// RSA key generation takes seconds in unoptimised builds, so each of a
/// small pool of keys is made at most once per test process, on first use.
pub(crate) fn rsa_test_key(index: usize) -> &'static TestKey {
    static KEYS: [OnceLock<TestKey>; 2] = [OnceLock::new(), OnceLock::new()];
    KEYS[index].get_or_init(rsa_key)
}

pub(crate) fn ec_key(alg: Algorithm) -> TestKey {
    let rng = SystemRandom::new();
    let (signing, crv, size) = match alg {
        Algorithm::ES256 => (&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32),
        Algorithm::ES384 => (&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48),
        other => panic!("not an EC algorithm: {other}"),
    };
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("EC keygen");
    let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("EC parse");
    let point = pair.public_key().as_ref();
    TestKey {
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({
            "kty": "EC",
            "crv": crv,
            "x": b64::encode(&point[1..1 + size]),
            "y": b64::encode(&point[1 + size..]),
        }),
        rsa_public: None,
    }
}

pub(crate) fn ed_key() -> TestKey {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed25519 keygen");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 parse");
    TestKey {
        encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({ "kty": "OKP", "crv": "Ed25519", "x": b64::encode(pair.public_key().as_ref()) }),
        rsa_public: None,
    }
}

pub(crate) fn hmac_key() -> TestKey {
    let mut secret = [0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .expect("random secret");
    TestKey {
        encoding: EncodingKey::from_secret(&secret),
        jwk: json!({ "kty": "oct", "k": b64::encode(&secret) }),
        rsa_public: None,
    }
}

/// A key of the family `alg` needs; RSA ones come from the shared pool.
pub(crate) fn key_for(alg: Algorithm) -> TestKey {
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => ec_key(alg),
        Algorithm::EdDSA => ed_key(),
        Algorithm::HS256 => hmac_key(),
        _ => {
            let shared = rsa_test_key(0);
            TestKey {
                encoding: shared.encoding.clone(),
                jwk: shared.jwk.clone(),
                rsa_public: shared.rsa_public.clone(),
            }
        }
    }
}

/// Claims that pass the default checks at [`NOW`].
pub(crate) fn good_claims() -> Value {
    json!({ "sub": "alice", "iss": "https://issuer.example", "aud": "gatehouse", "iat": NOW - 10, "exp": NOW + 300 })
}

/// Signs arbitrary header JSON, so tests can craft headers the encoder
/// would never produce.
pub(crate) fn sign_raw(
    header: &Value,
    claims: &Value,
    key: &EncodingKey,
    alg: Algorithm,
) -> String {
    let input = format!(
        "{}.{}",
        b64::encode(&serde_json::to_vec(header).expect("header")),
        b64::encode(&serde_json::to_vec(claims).expect("claims")),
    );
    let sig =
        jsonwebtoken::crypto::sign(input.as_bytes(), key, alg.to_jsonwebtoken()).expect("sign");
    format!("{input}.{sig}")
}

/// The ordinary path: a header holding `alg` and an optional `kid`.
pub(crate) fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = jsonwebtoken::Header::new(alg.to_jsonwebtoken());
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("encode")
}

pub(crate) fn settings(algorithms: &[Algorithm]) -> Settings {
    Settings {
        algorithms: algorithms.to_vec(),
        ..Settings::default()
    }
}

pub(crate) fn static_verifier(settings: Settings, jwks_json: &[u8], symmetric: bool) -> Verifier {
    let set = KeySet::from_jwks(jwks_json, symmetric).expect("fixture JWKS parses");
    Verifier::new(settings, Keys::Static(Arc::new(set))).expect("fixture verifier")
}
