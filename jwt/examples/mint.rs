//! Mints a throwaway ES256 key and one long-lived token signed with it, for
//! benchmarks and manual tests of the jwtAuth filter.
//!
//! ```sh
//! cargo run --release -p gatehouse-jwt --example mint -- --out DIR \
//!     [--issuer https://issuer.bench] [--subject bench-user] [--audience AUD] \
//!     [--kid bench] [--days 3650]
//! ```
//!
//! Writes `DIR/jwks.json` (the public key as a JWKS, for `jwks.inline`) and
//! `DIR/token.txt` (the compact JWT, no trailing newline). A fresh P-256 key
//! is generated on every run and the private half never leaves memory: there
//! is nothing secret to keep, and nothing to commit.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;

struct Options {
    out: PathBuf,
    issuer: String,
    subject: String,
    audience: Option<String>,
    kid: String,
    days: u64,
}

const USAGE: &str =
    "usage: mint --out DIR [--issuer URL] [--subject SUB] [--audience AUD] [--kid KID] [--days N]";

fn parse_args() -> Result<Options, String> {
    let mut out = None;
    let mut options = Options {
        out: PathBuf::new(),
        issuer: "https://issuer.bench".into(),
        subject: "bench-user".into(),
        audience: None,
        kid: "bench".into(),
        days: 3650,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(value)),
            "--issuer" => options.issuer = value,
            "--subject" => options.subject = value,
            "--audience" => options.audience = Some(value),
            "--kid" => options.kid = value,
            "--days" => {
                options.days = value
                    .parse()
                    .map_err(|_| format!("--days: not a number: {value}"))?
            }
            _ => return Err(format!("unknown argument: {arg}\n{USAGE}")),
        }
    }
    options.out = out.ok_or_else(|| format!("--out is required\n{USAGE}"))?;
    Ok(options)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse_args()?;

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "P-256 key generation failed")?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "P-256 key does not parse")?;
    // Uncompressed SEC1 point: 0x04, then x and y, 32 bytes each.
    let point = pair.public_key().as_ref();
    let jwks = json!({
        "keys": [{
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
            "kid": options.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]
    });

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = json!({
        "iss": options.issuer,
        "sub": options.subject,
        "iat": now,
        "exp": now + options.days * 86_400,
    });
    if let Some(audience) = &options.audience {
        claims["aud"] = json!(audience);
    }
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(options.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(pkcs8.as_ref()))?;

    std::fs::create_dir_all(&options.out)?;
    std::fs::write(options.out.join("jwks.json"), serde_json::to_vec(&jwks)?)?;
    std::fs::write(options.out.join("token.txt"), &token)?;
    eprintln!(
        "wrote {} and {} (ES256, kid {}, sub {}, expires in {} days)",
        options.out.join("jwks.json").display(),
        options.out.join("token.txt").display(),
        options.kid,
        options.subject,
        options.days
    );
    Ok(())
}
