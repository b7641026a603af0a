//! JWTs for the end-to-end tests: keys generated per run, tokens signed with
//! them (honest or not), and a small JWKS server that counts its fetches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Base64url without padding, as JOSE spells it.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A private key to sign with and the public JWK that verifies it.
pub struct Signer {
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    /// Public JWK, without `kid`.
    pub jwk: Value,
}

impl Signer {
    pub fn es256() -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key generation");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("P-256 key");
        // Uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        Signer {
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])}),
        }
    }

    pub fn ed25519() -> Signer {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed25519 key generation");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key");
        Signer {
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}),
        }
    }

    pub fn hs256() -> Signer {
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .expect("random secret");
        Signer {
            alg: Algorithm::HS256,
            encoding: EncodingKey::from_secret(&secret),
            jwk: json!({"kty": "oct", "k": b64(&secret)}),
        }
    }

    /// The public JWK with `kid`.
    pub fn jwk(&self, kid: &str) -> Value {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = json!(kid);
        jwk
    }

    /// A token with header `{"alg", "typ", "kid"}`.
    pub fn token(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": alg_name(self.alg), "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        sign_raw(&header, claims, &self.encoding, self.alg)
    }
}

pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        other => panic!("no fixture uses {other:?}"),
    }
}

/// Signs any header JSON, including ones no honest encoder would produce.
pub fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).expect("header JSON")),
        b64(&serde_json::to_vec(claims).expect("claims JSON")),
    );
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("signing");
    format!("{input}.{signature}")
}

/// A JWKS document holding `keys`.
pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    Serve,
    /// Accept connections and never answer.
    Hang,
}

/// Serves one JWKS document over HTTP/1.1, closing each connection after
/// its answer, and counts the connections it accepted.
pub struct JwksServer {
    pub url: String,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(body: String, mode: Mode) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr: SocketAddr = listener.local_addr().expect("local address");
        let body = Arc::new(Mutex::new(body));
        let hits = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (body, hits) = (body.clone(), hits.clone());
            async move {
                let mut held = Vec::new();
                while let Ok((mut stream, _)) = listener.accept().await {
                    hits.fetch_add(1, Ordering::SeqCst);
                    if mode == Mode::Hang {
                        held.push(stream);
                        continue;
                    }
                    let body = body.lock().expect("not poisoned").clone();
                    tokio::spawn(async move {
                        // Read the request head, then answer and close.
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    });
                }
            }
        });
        JwksServer {
            url: format!("http://{addr}/jwks.json"),
            body,
            hits,
            task,
        }
    }

    pub fn set_body(&self, body: String) {
        *self.body.lock().expect("not poisoned") = body;
    }

    /// Connections accepted so far (one per fetch: every answer closes).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
