use super::*;

/// A syntactically valid 2048-bit modulus; parsing never needs the private half.
fn fake_rsa(kid: &str) -> Value {
    let mut n = vec![0xc5u8; 256];
    n[255] = 0x01;
    json!({ "kty": "RSA", "kid": kid, "n": b64::encode(&n), "e": "AQAB" })
}

fn parse(keys: &[Value], symmetric: bool) -> Result<KeySet, String> {
    KeySet::from_jwks(&jwks(keys), symmetric)
}

#[test]
fn documents_that_are_not_a_jwks() {
    for doc in [
        &b""[..],
        b"{",
        b"[]",
        b"{}",
        b"{\"keys\":{}}",
        b"{\"keys\":[1]}",
        b"{\"keys\":[]}",
        b"null",
    ] {
        assert!(
            KeySet::from_jwks(doc, true).is_err(),
            "{}",
            String::from_utf8_lossy(doc)
        );
    }
}

#[test]
fn usable_keys_are_counted() {
    let set = parse(
        &[
            fake_rsa("r"),
            ec_key(Algorithm::ES256).jwk,
            ec_key(Algorithm::ES384).jwk_with_kid("e"),
            ed_key().jwk,
        ],
        false,
    )
    .expect("parses");
    assert_eq!(set.len(), 4);
    assert!(!set.is_empty());
    assert!(!set.symmetric_allowed());
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        assert!(set.supports(alg), "{alg}");
    }
    assert!(!set.supports(Algorithm::HS256));
}

#[test]
fn symmetric_keys_only_when_allowed() {
    let hs = hmac_key();
    let err = parse(std::slice::from_ref(&hs.jwk), false).expect_err("oct refused");
    assert!(err.contains("Secret"), "{err}");
    let set = parse(&[hs.jwk], true).expect("oct accepted");
    assert!(set.supports(Algorithm::HS256));
    let short = json!({ "kty": "oct", "k": b64::encode(&[7u8; 31]) });
    assert!(parse(&[short], true).is_err());
}

#[test]
fn keys_not_for_signatures_are_skipped() {
    let mut enc = fake_rsa("enc");
    enc["use"] = json!("enc");
    let mut wrap = fake_rsa("wrap");
    wrap["key_ops"] = json!(["wrapKey"]);
    let mut oaep = fake_rsa("oaep");
    oaep["alg"] = json!("RSA-OAEP-256");
    let p521 = json!({ "kty": "EC", "crv": "P-521", "x": "AA", "y": "AA" });
    let x25519 = json!({ "kty": "OKP", "crv": "X25519", "x": b64::encode(&[1u8; 32]) });
    let unknown = json!({ "kty": "AKP", "pub": "AA" });
    let skipped = [enc, wrap, oaep, p521, x25519, unknown];

    let err = parse(&skipped, false).expect_err("nothing usable");
    assert!(err.contains("no usable signing keys"), "{err}");
    assert!(err.contains("\"enc\"") && err.contains("P-521"), "{err}");

    let mut with_one = skipped.to_vec();
    let mut sig = fake_rsa("sig");
    sig["use"] = json!("sig");
    sig["key_ops"] = json!(["verify"]);
    with_one.push(sig);
    assert_eq!(parse(&with_one, false).expect("one usable").len(), 1);
}

#[test]
fn broken_signing_keys_are_errors() {
    let mut short = fake_rsa("short");
    short["n"] = json!(b64::encode(&[0xffu8; 128]));
    let mut padded = fake_rsa("padded");
    padded["n"] = json!(format!("{}=", padded["n"].as_str().unwrap_or_default()));
    let mut even_e = fake_rsa("even");
    even_e["e"] = json!(b64::encode(&[0x01, 0x00, 0x00]));
    let mut no_n = fake_rsa("no-n");
    no_n.as_object_mut().map(|o| o.remove("n"));
    let mut hs_rsa = fake_rsa("hs");
    hs_rsa["alg"] = json!("HS256");
    let mut es384_on_p256 = ec_key(Algorithm::ES256).jwk;
    es384_on_p256["alg"] = json!("ES384");
    let mut short_x = ec_key(Algorithm::ES256).jwk;
    short_x["x"] = json!(b64::encode(&[1u8; 31]));
    let mut numeric_kid = ed_key().jwk;
    numeric_kid["kid"] = json!(7);
    let mut bad_ed = ed_key().jwk;
    bad_ed["x"] = json!(b64::encode(&[1u8; 33]));
    let no_kty = json!({ "n": "AA", "e": "AQAB" });
    let mut bad_use = fake_rsa("use");
    bad_use["use"] = json!(["sig"]);

    for (what, key) in [
        ("1024-bit modulus", short),
        ("padded base64", padded),
        ("even exponent", even_e),
        ("missing n", no_n),
        ("RSA key labelled HS256", hs_rsa),
        ("P-256 key labelled ES384", es384_on_p256),
        ("short coordinate", short_x),
        ("numeric kid", numeric_kid),
        ("33-byte Ed25519 key", bad_ed),
        ("no kty", no_kty),
        ("non-string use", bad_use),
    ] {
        // One bad key spoils the document even next to good ones, so the
        // mistake is seen at configuration time rather than per request.
        let err = parse(&[ed_key().jwk, key], true).expect_err(what);
        assert!(err.starts_with("key 1"), "{what}: {err}");
    }
}

#[test]
fn debug_output_has_no_key_material() {
    let hs = hmac_key();
    let secret = hs.jwk["k"].as_str().expect("k").to_owned();
    let set = parse(&[hs.jwk_with_kid("shared")], true).expect("parses");
    let shown = format!("{set:?}");
    assert!(shown.contains("shared"), "{shown}");
    assert!(!shown.contains(&secret), "{shown}");
}

#[test]
fn a_refetched_identical_document_is_the_same_source_and_a_rotation_is_not() {
    let one = super::ec_key(Algorithm::ES256).jwk;
    let two = super::ec_key(Algorithm::ES256).jwk;
    let first = KeySet::from_jwks(&super::jwks(std::slice::from_ref(&one)), false).unwrap();
    let again = KeySet::from_jwks(&super::jwks(std::slice::from_ref(&one)), false).unwrap();
    let rotated = KeySet::from_jwks(&super::jwks(&[two]), false).unwrap();
    assert!(first.same_source(&again));
    assert!(!first.same_source(&rotated));
}
