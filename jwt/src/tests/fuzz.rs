use proptest::prelude::*;

use super::*;
use crate::bearer_token;

fn verifier() -> &'static Verifier {
    &fixture().0
}

fn valid_token() -> &'static str {
    &fixture().1
}

fn fixture() -> &'static (Verifier, String) {
    static FIXTURE: OnceLock<(Verifier, String)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ed = ed_key();
        let hs = hmac_key();
        let ec = ec_key(Algorithm::ES256);
        let v = static_verifier(
            settings(&[Algorithm::EdDSA, Algorithm::HS256, Algorithm::ES256]),
            &jwks(&[ed.jwk_with_kid("ed"), hs.jwk_with_kid("hs"), ec.jwk]),
            true,
        );
        let t = sign(Algorithm::EdDSA, Some("ed"), &good_claims(), &ed.encoding);
        (v, t)
    })
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Pieces that steer random input towards the interesting parsing paths.
fn token_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[A-Za-z0-9_-]{0,40}",
        Just("eyJhbGciOiJFZERTQSJ9".to_string()),
        Just("eyJhbGciOiJIUzI1NiIsImtpZCI6ImhzIn0".to_string()),
        Just("eyJhbGciOiJub25lIn0".to_string()),
        Just(b64::encode(b"{\"alg\":\"ES256\",\"kid\":\"ed\"}")),
        Just(b64::encode(b"{\"exp\":\"x\",\"nbf\":[],\"iat\":{}}")),
        Just("=".to_string()),
        ".{0,8}",
    ];
    prop::collection::vec(piece, 0..6).prop_map(|parts| parts.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn verify_never_panics(token in token_like(), now in any::<u64>()) {
        let outcome = run(verifier().verify(&token, now));
        prop_assert!(outcome.is_err() || token == valid_token());
    }

    #[test]
    fn verify_never_panics_on_any_text(token in ".{0,300}") {
        let _ = run(verifier().verify(&token, NOW));
    }

    #[test]
    fn bearer_never_panics(value in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Some(token) = bearer_token(&value) {
            prop_assert!(!token.is_empty());
            prop_assert!(token.bytes().all(|b| b.is_ascii_graphic()));
        }
    }

    #[test]
    fn bearer_accepts_what_it_should(scheme in "[bB][eE][aA][rR][eE][rR]", gap in "[ \t]{1,3}", token in "[A-Za-z0-9._~+/-]{1,60}={0,2}") {
        let value = format!("{scheme}{gap}{token}");
        prop_assert_eq!(bearer_token(value.as_bytes()), Some(token.as_str()));
    }
}

/// Every single-character change to a valid token must be refused, and must
/// not panic on the way.
#[test]
fn single_character_mutations_are_refused() {
    let token = valid_token();
    assert!(run(verifier().verify(token, NOW)).is_ok());
    let replacements = [
        'A', 'z', '0', '-', '_', '.', '=', '+', '/', ' ', '\0', '\u{e9}',
    ];
    run(async {
        for i in 0..token.len() {
            for r in replacements {
                let mut mutated: String = token[..i].to_string();
                mutated.push(r);
                mutated.push_str(&token[i + 1..]);
                if mutated == token {
                    continue;
                }
                assert!(
                    verifier().verify(&mutated, NOW).await.is_err(),
                    "accepted {mutated}"
                );
            }
            let truncated = &token[..i];
            assert!(
                verifier().verify(truncated, NOW).await.is_err(),
                "accepted {truncated}"
            );
        }
    });
}
