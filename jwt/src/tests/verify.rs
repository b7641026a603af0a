use std::time::Duration;

use super::*;
use crate::Rejection;

async fn verify_with(v: &Verifier, token: &str) -> Result<crate::Claims, Rejection> {
    v.verify(token, NOW).await
}

#[tokio::test]
async fn every_algorithm_verifies() {
    for alg in Algorithm::ALL {
        let key = key_for(alg);
        let v = static_verifier(
            settings(&[alg]),
            &jwks(&[key.jwk_with_kid("k1")]),
            alg.is_symmetric(),
        );
        let with_kid = sign(alg, Some("k1"), &good_claims(), &key.encoding);
        let without_kid = sign(alg, None, &good_claims(), &key.encoding);
        for token in [with_kid, without_kid] {
            let claims = verify_with(&v, &token)
                .await
                .unwrap_or_else(|r| panic!("{alg}: {r:?}"));
            assert_eq!(claims.get("sub").as_deref(), Some("alice"), "{alg}");
        }
    }
}

#[tokio::test]
async fn jwk_alg_narrows_the_key() {
    let key = key_for(Algorithm::RS256);
    let mut jwk = key.jwk_with_kid("k1");
    jwk["alg"] = json!("RS384");
    let v = static_verifier(
        settings(&[Algorithm::RS256, Algorithm::RS384]),
        &jwks(&[jwk]),
        false,
    );
    let rs256 = sign(Algorithm::RS256, Some("k1"), &good_claims(), &key.encoding);
    let rs384 = sign(Algorithm::RS384, Some("k1"), &good_claims(), &key.encoding);
    assert_eq!(verify_with(&v, &rs256).await, Err(Rejection::UnknownKey));
    assert!(verify_with(&v, &rs384).await.is_ok());
}

#[tokio::test]
async fn curves_only_sign_with_their_own_algorithm() {
    let p256 = ec_key(Algorithm::ES256);
    let p384 = ec_key(Algorithm::ES384);
    let v = static_verifier(
        settings(&[Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA]),
        &jwks(&[p256.jwk_with_kid("p256"), p384.jwk_with_kid("p384")]),
        false,
    );
    // A P-384 token that names the P-256 key, and the reverse.
    let t = sign(
        Algorithm::ES384,
        Some("p256"),
        &good_claims(),
        &p384.encoding,
    );
    assert_eq!(verify_with(&v, &t).await, Err(Rejection::UnknownKey));
    let t = sign(
        Algorithm::ES256,
        Some("p384"),
        &good_claims(),
        &p256.encoding,
    );
    assert_eq!(verify_with(&v, &t).await, Err(Rejection::UnknownKey));
    // EdDSA finds no OKP key at all.
    let ed = ed_key();
    let t = sign(Algorithm::EdDSA, None, &good_claims(), &ed.encoding);
    assert_eq!(verify_with(&v, &t).await, Err(Rejection::UnknownKey));
}

#[tokio::test]
async fn rsa_public_key_is_never_an_hmac_secret() {
    let key = rsa_test_key(0);
    let public = key.rsa_public.as_ref().expect("RSA fixture");
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let pem_spki = public.to_public_key_pem(LineEnding::LF).expect("SPKI PEM");
    let pem_pkcs1 = public.to_pkcs1_pem(LineEnding::LF).expect("PKCS#1 PEM");
    let der_pkcs1 = public.to_pkcs1_der().expect("PKCS#1 DER");
    let der_spki = public.to_public_key_der().expect("SPKI DER");
    let n = public.n().to_bytes_be();
    let jwk_text = serde_json::to_vec(&key.jwk).expect("jwk");
    let secrets: Vec<Vec<u8>> = vec![
        pem_spki.into_bytes(),
        pem_pkcs1.as_bytes().to_vec(),
        der_pkcs1.as_bytes().to_vec(),
        der_spki.as_bytes().to_vec(),
        n,
        jwk_text,
    ];
    // Even a verifier that allows HS256 and symmetric keys must not treat
    // the RSA key as one.
    let set = jwks(&[key.jwk_with_kid("rsa")]);
    let v = static_verifier(settings(&[Algorithm::RS256, Algorithm::HS256]), &set, true);
    for secret in secrets {
        let forged = EncodingKey::from_secret(&secret);
        for kid in [Some("rsa"), None] {
            let t = sign(Algorithm::HS256, kid, &good_claims(), &forged);
            assert_eq!(
                verify_with(&v, &t).await,
                Err(Rejection::UnknownKey),
                "kid {kid:?}"
            );
        }
    }
    // And with only HS256 allowed, configuration fails outright.
    let parsed = KeySet::from_jwks(&set, true).expect("parses");
    assert!(
        Verifier::new(
            settings(&[Algorithm::HS256]),
            Keys::Static(Arc::new(parsed))
        )
        .is_err()
    );
}

#[tokio::test]
async fn alg_none_and_unlisted_algorithms_are_refused_before_keys() {
    let key = ed_key();
    let v = static_verifier(settings(&[Algorithm::EdDSA]), &key.set(), false);
    let payload = b64::encode(&serde_json::to_vec(&good_claims()).expect("claims"));
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64::encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        // Unsigned tokens have an empty third segment, which is malformed.
        assert_eq!(
            verify_with(&v, &format!("{header}.{payload}.")).await,
            Err(Rejection::Malformed)
        );
        let fake_sig = b64::encode(b"x");
        assert_eq!(
            verify_with(&v, &format!("{header}.{payload}.{fake_sig}")).await,
            Err(Rejection::Algorithm),
            "{alg}"
        );
    }
    for header in [
        json!({"typ": "JWT"}),
        json!({"alg": 256}),
        json!({"alg": null}),
        json!({"alg": "HS384"}),
        json!({"alg": "ES512"}),
    ] {
        let t = format!(
            "{}.{payload}.{}",
            b64::encode(&serde_json::to_vec(&header).expect("header")),
            b64::encode(b"sig")
        );
        assert_eq!(
            verify_with(&v, &t).await,
            Err(Rejection::Algorithm),
            "{header}"
        );
    }
    // Correctly signed, but with an algorithm this filter does not allow.
    let ec = ec_key(Algorithm::ES256);
    let t = sign(Algorithm::ES256, None, &good_claims(), &ec.encoding);
    assert_eq!(verify_with(&v, &t).await, Err(Rejection::Algorithm));
    let hs = hmac_key();
    let t = sign(Algorithm::HS256, None, &good_claims(), &hs.encoding);
    assert_eq!(verify_with(&v, &t).await, Err(Rejection::Algorithm));
}

#[tokio::test]
async fn embedded_and_remote_key_headers_are_ignored() {
    let trusted = ec_key(Algorithm::ES256);
    let attacker = ec_key(Algorithm::ES256);
    let v = static_verifier(
        settings(&[Algorithm::ES256]),
        &jwks(&[trusted.jwk_with_kid("trusted")]),
        false,
    );
    let mut attacker_jwk = attacker.jwk_with_kid("evil");
    for (kid, expected) in [
        (None, Rejection::Signature),
        (Some("evil"), Rejection::UnknownKey),
        (Some("trusted"), Rejection::Signature),
    ] {
        let mut header = json!({
            "alg": "ES256",
            "jwk": attacker_jwk,
            "jku": "https://attacker.example/jwks.json",
            "x5u": "https://attacker.example/cert.pem",
            "x5c": ["MIIB"],
        });
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let t = sign_raw(
            &header,
            &good_claims(),
            &attacker.encoding,
            Algorithm::ES256,
        );
        assert_eq!(verify_with(&v, &t).await, Err(expected), "kid {kid:?}");
    }
    // The same header is harmless when the key really is configured.
    attacker_jwk = trusted.jwk_with_kid("trusted");
    let header = json!({ "alg": "ES256", "kid": "trusted", "jwk": attacker_jwk });
    let t = sign_raw(&header, &good_claims(), &trusted.encoding, Algorithm::ES256);
    assert!(verify_with(&v, &t).await.is_ok());
}

#[tokio::test]
async fn crit_header_is_refused() {
    let key = ed_key();
    let v = static_verifier(settings(&[Algorithm::EdDSA]), &key.set(), false);
    let header = json!({ "alg": "EdDSA", "crit": ["b64"], "b64": false });
    let t = sign_raw(&header, &good_claims(), &key.encoding, Algorithm::EdDSA);
    assert_eq!(verify_with(&v, &t).await, Err(Rejection::Malformed));
}

#[tokio::test]
async fn kid_selects_and_unknown_kid_is_refused() {
    let a = ed_key();
    let b = ed_key();
    let v = static_verifier(
        settings(&[Algorithm::EdDSA]),
        &jwks(&[a.jwk_with_kid("a"), b.jwk_with_kid("b")]),
        false,
    );
    assert!(
        verify_with(
            &v,
            &sign(Algorithm::EdDSA, Some("b"), &good_claims(), &b.encoding)
        )
        .await
        .is_ok()
    );
    // Right key, wrong label: only the labelled key is tried.
    assert_eq!(
        verify_with(
            &v,
            &sign(Algorithm::EdDSA, Some("a"), &good_claims(), &b.encoding)
        )
        .await,
        Err(Rejection::Signature)
    );
    assert_eq!(
        verify_with(
            &v,
            &sign(Algorithm::EdDSA, Some("zzz"), &good_claims(), &b.encoding)
        )
        .await,
        Err(Rejection::UnknownKey)
    );
    // Without a kid every fitting key is tried.
    assert!(
        verify_with(
            &v,
            &sign(Algorithm::EdDSA, None, &good_claims(), &b.encoding)
        )
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn kid_is_not_binding_for_a_set_without_kids() {
    let key = ed_key();
    let v = static_verifier(settings(&[Algorithm::EdDSA]), &key.set(), false);
    let t = sign(
        Algorithm::EdDSA,
        Some("issuer-chosen"),
        &good_claims(),
        &key.encoding,
    );
    assert!(verify_with(&v, &t).await.is_ok());
}

#[tokio::test]
async fn too_many_candidate_keys_without_kid() {
    let keys: Vec<TestKey> = (0..9).map(|_| ed_key()).collect();
    let named: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| k.jwk_with_kid(&format!("k{i}")))
        .collect();
    let v = static_verifier(settings(&[Algorithm::EdDSA]), &jwks(&named), false);
    let last = &keys[8];
    assert_eq!(
        verify_with(
            &v,
            &sign(Algorithm::EdDSA, None, &good_claims(), &last.encoding)
        )
        .await,
        Err(Rejection::UnknownKey)
    );
    assert!(
        verify_with(
            &v,
            &sign(Algorithm::EdDSA, Some("k8"), &good_claims(), &last.encoding)
        )
        .await
        .is_ok()
    );
    // Eight is still fine.
    let v = static_verifier(settings(&[Algorithm::EdDSA]), &jwks(&named[1..]), false);
    assert!(
        verify_with(
            &v,
            &sign(Algorithm::EdDSA, None, &good_claims(), &last.encoding)
        )
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn tampering_breaks_the_signature() {
    let key = ec_key(Algorithm::ES384);
    let v = static_verifier(settings(&[Algorithm::ES384]), &key.set(), false);
    let t = sign(Algorithm::ES384, None, &good_claims(), &key.encoding);
    let mut claims = good_claims();
    claims["sub"] = json!("mallory");
    let forged_payload = b64::encode(&serde_json::to_vec(&claims).expect("claims"));
    let parts: Vec<&str> = t.split('.').collect();
    let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_eq!(verify_with(&v, &forged).await, Err(Rejection::Signature));
    let other = ec_key(Algorithm::ES384);
    let t = sign(Algorithm::ES384, None, &good_claims(), &other.encoding);
    assert_eq!(verify_with(&v, &t).await, Err(Rejection::Signature));
}

#[tokio::test]
async fn structure_is_checked_strictly() {
    let key = ed_key();
    let v = static_verifier(settings(&[Algorithm::EdDSA]), &key.set(), false);
    let t = sign(Algorithm::EdDSA, None, &good_claims(), &key.encoding);
    assert!(verify_with(&v, &t).await.is_ok());
    let (h, rest) = t.split_once('.').expect("dot");
    let (p, s) = rest.split_once('.').expect("dot");
    let cases = [
        String::new(),
        ".".into(),
        "..".into(),
        format!("{h}.{p}"),
        format!("{h}.{p}."),
        format!("{h}.{p}.{s}."),
        format!("{h}.{p}.{s}.{s}"),
        format!(".{p}.{s}"),
        format!("{h}..{s}"),
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}.{s}="),
        format!("{h}.{p}.{s}=="),
        format!("{h}.{p}.{}", &s[..s.len() - 1]),
        format!("{h}.{p}+.{s}"),
        // The standard alphabet's '+' and '/' are not base64url, whatever
        // characters the random signature happens to contain.
        format!("{h}.{p}.+{}", &s[1..]),
        format!("{h}.{p}./{}", &s[1..]),
        format!(" {t}"),
        format!("{t}\n"),
        format!("{}.{p}.{s}", b64::encode(b"not json")),
        format!("{}.{p}.{s}", b64::encode(b"[\"alg\"]")),
    ];
    for case in cases {
        let got = verify_with(&v, &case).await;
        assert!(
            matches!(got, Err(Rejection::Malformed) | Err(Rejection::Signature)),
            "{case:?} gave {got:?}"
        );
    }
    // Claims that are not a JSON object are malformed, even when signed.
    for payload in [json!([1, 2]), json!("text"), json!(null)] {
        let t = sign_raw(
            &json!({"alg": "EdDSA"}),
            &payload,
            &key.encoding,
            Algorithm::EdDSA,
        );
        assert_eq!(verify_with(&v, &t).await, Err(Rejection::Malformed));
    }
}

#[tokio::test]
async fn size_limit_applies_before_decoding() {
    let key = ed_key();
    let mut s = settings(&[Algorithm::EdDSA]);
    s.max_token_bytes = 200;
    let v = static_verifier(s, &key.set(), false);
    let mut claims = good_claims();
    claims["pad"] = json!("x".repeat(300));
    let t = sign(Algorithm::EdDSA, None, &claims, &key.encoding);
    assert_eq!(verify_with(&v, &t).await, Err(Rejection::TooLarge));
    // Garbage over the limit is "too large", not "malformed": no decoding happened.
    assert_eq!(
        verify_with(&v, &"!".repeat(201)).await,
        Err(Rejection::TooLarge)
    );
    assert_eq!(
        verify_with(&v, &"!".repeat(200)).await,
        Err(Rejection::Malformed)
    );
}

async fn claim_check(settings: Settings, claims: Value) -> Result<crate::Claims, Rejection> {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    let key = KEY.get_or_init(ed_key);
    let v = static_verifier(settings, &key.set(), false);
    let t = sign(Algorithm::EdDSA, None, &claims, &key.encoding);
    v.verify(&t, NOW).await
}

fn with(claims: &[(&str, Value)]) -> Value {
    let mut base = json!({ "sub": "alice" });
    for (k, v) in claims {
        base[*k] = v.clone();
    }
    base
}

#[tokio::test]
async fn expiry_with_skew() {
    let s = settings(&[Algorithm::EdDSA]);
    assert!(
        claim_check(s.clone(), with(&[("exp", json!(NOW - 60))]))
            .await
            .is_ok()
    );
    assert_eq!(
        claim_check(s.clone(), with(&[("exp", json!(NOW - 61))])).await,
        Err(Rejection::Expired)
    );
    assert!(
        claim_check(s.clone(), with(&[("exp", json!((NOW - 60) as f64 + 0.5))]))
            .await
            .is_ok()
    );
    let mut strict = s.clone();
    strict.clock_skew = Duration::ZERO;
    assert!(
        claim_check(strict.clone(), with(&[("exp", json!(NOW))]))
            .await
            .is_ok()
    );
    assert_eq!(
        claim_check(strict, with(&[("exp", json!(NOW - 1))])).await,
        Err(Rejection::Expired)
    );
}

#[tokio::test]
async fn missing_expiration() {
    let s = settings(&[Algorithm::EdDSA]);
    assert_eq!(
        claim_check(s.clone(), with(&[])).await,
        Err(Rejection::MissingExpiration)
    );
    let mut lax = s;
    lax.require_expiration = false;
    assert!(claim_check(lax, with(&[])).await.is_ok());
}

#[tokio::test]
async fn not_before_and_issued_at_with_skew() {
    let s = settings(&[Algorithm::EdDSA]);
    let exp = ("exp", json!(NOW + 600));
    assert!(
        claim_check(s.clone(), with(&[exp.clone(), ("nbf", json!(NOW + 60))]))
            .await
            .is_ok()
    );
    assert_eq!(
        claim_check(s.clone(), with(&[exp.clone(), ("nbf", json!(NOW + 61))])).await,
        Err(Rejection::NotYetValid)
    );
    assert!(
        claim_check(s.clone(), with(&[exp.clone(), ("iat", json!(NOW + 60))]))
            .await
            .is_ok()
    );
    assert_eq!(
        claim_check(s.clone(), with(&[exp.clone(), ("iat", json!(NOW + 61))])).await,
        Err(Rejection::IssuedInFuture)
    );
}

#[tokio::test]
async fn non_numeric_dates_are_malformed() {
    let s = settings(&[Algorithm::EdDSA]);
    for name in ["exp", "nbf", "iat"] {
        for bad in [
            json!("1700000000"),
            json!(null),
            json!(true),
            json!([NOW]),
            json!({"t": NOW}),
        ] {
            let mut claims = with(&[("exp", json!(NOW + 600))]);
            claims[name] = bad.clone();
            assert_eq!(
                claim_check(s.clone(), claims).await,
                Err(Rejection::Malformed),
                "{name}={bad}"
            );
        }
    }
}

#[tokio::test]
async fn issuer_must_match_exactly() {
    let mut s = settings(&[Algorithm::EdDSA]);
    s.issuer = Some("https://issuer.example".into());
    let exp = ("exp", json!(NOW + 600));
    assert!(
        claim_check(
            s.clone(),
            with(&[exp.clone(), ("iss", json!("https://issuer.example"))])
        )
        .await
        .is_ok()
    );
    for bad in [
        json!("https://issuer.example/"),
        json!("https://ISSUER.example"),
        json!(["https://issuer.example"]),
        json!(1),
    ] {
        assert_eq!(
            claim_check(s.clone(), with(&[exp.clone(), ("iss", bad.clone())])).await,
            Err(Rejection::Issuer),
            "{bad}"
        );
    }
    assert_eq!(claim_check(s, with(&[exp])).await, Err(Rejection::Issuer));
}

#[tokio::test]
async fn audience_string_or_array() {
    let mut s = settings(&[Algorithm::EdDSA]);
    s.audiences = vec!["api".into(), "gatehouse".into()];
    let exp = ("exp", json!(NOW + 600));
    for good in [
        json!("gatehouse"),
        json!("api"),
        json!(["other", "api"]),
        json!([1, "gatehouse"]),
    ] {
        assert!(
            claim_check(s.clone(), with(&[exp.clone(), ("aud", good.clone())]))
                .await
                .is_ok(),
            "{good}"
        );
    }
    for bad in [
        json!("other"),
        json!([]),
        json!(["other"]),
        json!("Gatehouse"),
        json!({"aud": "api"}),
        json!(null),
    ] {
        assert_eq!(
            claim_check(s.clone(), with(&[exp.clone(), ("aud", bad.clone())])).await,
            Err(Rejection::Audience),
            "{bad}"
        );
    }
    assert_eq!(
        claim_check(s.clone(), with(std::slice::from_ref(&exp))).await,
        Err(Rejection::Audience)
    );
    // Without configured audiences, aud is not looked at.
    s.audiences.clear();
    assert!(
        claim_check(s, with(&[exp, ("aud", json!("anything"))]))
            .await
            .is_ok()
    );
}

#[test]
fn verifier_configuration_errors() {
    let ed = ed_key();
    let ed_set = Arc::new(KeySet::from_jwks(&ed.set(), false).expect("parses"));
    let remote = crate::RemoteJwks::new(
        "https://idp.example/jwks".into(),
        Duration::from_secs(300),
        Duration::from_secs(5),
    );
    assert!(Verifier::new(settings(&[]), Keys::Static(ed_set.clone())).is_err());
    assert!(Verifier::new(settings(&[Algorithm::HS256]), Keys::Remote(remote.clone())).is_err());
    assert!(
        Verifier::new(
            settings(&[Algorithm::RS256, Algorithm::HS256]),
            Keys::Static(ed_set.clone())
        )
        .is_err()
    );
    assert!(Verifier::new(settings(&[Algorithm::RS256]), Keys::Static(ed_set.clone())).is_err());
    let mut zero = settings(&[Algorithm::EdDSA]);
    zero.max_token_bytes = 0;
    assert!(Verifier::new(zero, Keys::Static(ed_set.clone())).is_err());
    assert!(
        Verifier::new(
            settings(&[Algorithm::EdDSA, Algorithm::RS256]),
            Keys::Static(ed_set)
        )
        .is_ok()
    );
    assert!(Verifier::new(settings(&[Algorithm::RS256]), Keys::Remote(remote)).is_ok());
    let hs = hmac_key();
    let hs_set = Arc::new(KeySet::from_jwks(&hs.set(), true).expect("parses"));
    assert!(Verifier::new(settings(&[Algorithm::HS256]), Keys::Static(hs_set)).is_ok());
}

#[test]
fn verify_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let ed = ed_key();
    let v = static_verifier(settings(&[Algorithm::EdDSA]), &ed.set(), false);
    let fut = v.verify("a.b.c", NOW);
    assert_send(&fut);
}

#[tokio::test]
async fn claims_reach_the_caller() {
    let key = ed_key();
    let v = static_verifier(settings(&[Algorithm::EdDSA]), &key.set(), false);
    let mut claims = good_claims();
    claims["realm"] = json!({ "role": "ops" });
    claims["groups"] = json!(["a", "b"]);
    let t = sign(Algorithm::EdDSA, None, &claims, &key.encoding);
    let got = verify_with(&v, &t).await.expect("valid");
    assert_eq!(got.get("realm.role").as_deref(), Some("ops"));
    assert_eq!(got.get("groups").as_deref(), Some("a,b"));
    assert_eq!(got.get("exp"), Some((NOW + 300).to_string()));
}
