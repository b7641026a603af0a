//! The gatehouse.dev `Filter` of type JWTAuth end to end: tokens minted here
//! with keys generated per run, sent through a standalone controller and its
//! data plane to an echo backend that records what reached it. Every refused
//! request must get 401 with a Bearer challenge (never a 5xx) and never reach
//! the backend; accepted ones carry their claims as headers the client cannot
//! forge.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_e2e::tokens::{JwksServer, Mode, Signer, b64, jwks, now, sign_raw};
use gatehouse_e2e::{
    ClosedPort, Echo, HttpClient, Reply, Request, Standalone, eventually, manifests,
};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

const HOST: &str = "jwt.test";
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "api";
const CHALLENGE: &str = r#"Bearer realm="gatehouse""#;
const INVALID: &str = r#"Bearer realm="gatehouse", error="invalid_token", error_description=""#;

// ---------------------------------------------------------------------------
// Keys and tokens

/// The RSA key of this test process, with the public forms an attacker
/// could know. Generated once: RSA key generation is slow without
/// optimisations.
struct RsaFixture {
    signer: Signer,
    public: rsa::RsaPublicKey,
}

fn rsa_key() -> &'static RsaFixture {
    static KEY: OnceLock<RsaFixture> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
            .expect("RSA key generation");
        let der = private.to_pkcs1_der().expect("PKCS#1 DER");
        let public = private.to_public_key();
        RsaFixture {
            signer: Signer {
                alg: Algorithm::RS256,
                encoding: EncodingKey::from_rsa_der(der.as_bytes()),
                jwk: json!({"kty": "RSA", "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())}),
            },
            public,
        }
    })
}

/// Claims that pass every check of the filters below.
fn claims(sub: &str) -> Value {
    let now = now();
    json!({
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now - 10,
        "exp": now + 600,
        "realm": {"role": "reader"},
    })
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().expect("claims object").remove(name);
    claims
}

/// The longest token of at most `limit` bytes and the shortest longer one
/// that `make` builds from a padding length.
fn tokens_around(limit: usize, make: impl Fn(usize) -> String) -> (String, String) {
    let mut pad = 0;
    let mut fits = make(pad);
    assert!(fits.len() <= limit);
    loop {
        pad += 1;
        let token = make(pad);
        if token.len() > limit {
            return (fits, token);
        }
        fits = token;
    }
}

// ---------------------------------------------------------------------------
// Manifests

/// A JWTAuth Filter `name` in `default` (JSON is YAML too).
fn filter(name: &str, jwt_auth: Value) -> String {
    json!({
        "apiVersion": "gatehouse.dev/v1alpha1",
        "kind": "Filter",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "JWTAuth", "jwtAuth": jwt_auth},
    })
    .to_string()
}

/// A Secret in `default` labelled as a JWKS, holding `jwks` under
/// `jwks.json`.
fn jwks_secret(name: &str, jwks: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default", "labels": {"gatehouse.dev/jwks": "true"}},
        "type": "Opaque",
        "stringData": {"jwks.json": jwks},
    })
    .to_string()
}

/// jwtAuth settings for an inline JWKS, with the issuer and audience every
/// fixture token carries; `extra` fields are merged in.
fn inline_auth(jwks: &str, extra: Value) -> Value {
    let mut spec = json!({
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "jwks": {"inline": jwks},
        "claimsToHeaders": [
            {"claim": "sub", "header": "x-user"},
            {"claim": "realm.role", "header": "x-role"},
        ],
    });
    merge(&mut spec, extra);
    spec
}

fn merge(spec: &mut Value, extra: Value) {
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            spec[k] = v;
        }
    }
}

/// HTTPRoute `jwt` on host [`HOST`]: per (path prefix, Filter name) one rule
/// naming the Filter by ExtensionRef and sending to Service `svc`.
fn route(rules: &[(&str, &str)]) -> String {
    let rules: String = rules
        .iter()
        .map(|(path, filter)| {
            format!(
                "  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    filters: [{{type: ExtensionRef, extensionRef: {{group: gatehouse.dev, kind: Filter, name: {filter}}}}}]\n    backendRefs: [{{name: svc, port: 80}}]\n"
            )
        })
        .collect();
    manifests::route_with_rules("jwt", HOST, &rules)
}

/// The Gateway, Service `svc` on `echo`, the route and `objects`.
fn all_yaml(echo: &Echo, rules: &[(&str, &str)], objects: &[String]) -> String {
    let mut docs = vec![
        manifests::gateway(),
        manifests::service("default", "svc", &[echo.port()]),
        route(rules),
    ];
    docs.extend(objects.iter().cloned());
    docs.join("\n---\n")
}

/// An echo backend that records every request it gets, and a standalone
/// controller serving `rules` with `objects`.
async fn start(rules: &[(&str, &str)], objects: &[String]) -> (Standalone, Echo) {
    let echo = Echo::start_with("backend", "127.0.0.1:0".parse().unwrap(), &["--record"]);
    let gw = Standalone::start(&[("all.yaml", all_yaml(&echo, rules, objects))]).await;
    (gw, echo)
}

// ---------------------------------------------------------------------------
// Requests and assertions

async fn send(gw: &Standalone, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(&gw.url(80, path)).host(Some(HOST));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    HttpClient::new()
        .send(request)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
}

async fn with_token(gw: &Standalone, path: &str, token: &str) -> Reply {
    send(gw, path, &[("authorization", &format!("Bearer {token}"))]).await
}

fn challenges(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

fn assert_ok(reply: &Reply, case: &str) {
    assert_eq!(reply.status, 200, "{case}: {}", reply.text());
    assert_eq!(reply.backend(), Some("backend"), "{case}");
}

/// 401 with the bare challenge: no credentials were offered.
fn assert_challenged(reply: &Reply, case: &str) {
    assert_eq!(reply.status, 401, "{case}: {}", reply.text());
    assert_eq!(challenges(reply), [CHALLENGE], "{case}");
    assert_eq!(reply.backend(), None, "{case}: reached the backend");
}

/// 401 with `error="invalid_token"`, and when given, the exact
/// `error_description`.
fn assert_invalid(reply: &Reply, description: Option<&str>, case: &str) {
    assert_eq!(reply.status, 401, "{case}: {}", reply.text());
    let values = challenges(reply);
    assert_eq!(values.len(), 1, "{case}: {values:?}");
    let value = &values[0];
    let rest = value
        .strip_prefix(INVALID)
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{case}: challenge {value:?}"));
    assert!(!rest.is_empty(), "{case}: empty error_description");
    if let Some(description) = description {
        assert_eq!(rest, description, "{case}");
    }
    assert_eq!(reply.backend(), None, "{case}: reached the backend");
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_become_headers_and_client_copies_never_pass() {
    let key = Signer::es256();
    let auth = inline_auth(&jwks(&[key.jwk("k1")]), json!({}));
    let (gw, echo) = start(&[("/", "jwt")], &[filter("jwt", auth)]).await;

    let token = key.token(Some("k1"), &claims("alice"));
    let reply = send(
        &gw,
        "/claims",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user", "admin"),
            ("X-User", "root"),
            ("x-role", "superuser"),
        ],
    )
    .await;
    assert_ok(&reply, "valid ES256 token");
    assert_eq!(reply.echoed("x-user"), ["alice"], "spoofed x-user replaced");
    assert_eq!(
        reply.echoed("x-role"),
        ["reader"],
        "nested claim realm.role"
    );
    assert_eq!(
        reply.echoed("authorization"),
        [format!("Bearer {token}")],
        "Authorization is kept unless stripAuthorization"
    );

    // No realm claim: the client's x-role must be dropped, not passed on.
    let token = key.token(Some("k1"), &without(claims("bob"), "realm"));
    let reply = send(
        &gw,
        "/missing-claim",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-role", "superuser"),
            ("x-user", "admin"),
        ],
    )
    .await;
    assert_ok(&reply, "token without realm");
    assert_eq!(reply.echoed("x-user"), ["bob"]);
    assert!(reply.echoed("x-role").is_empty(), "{}", reply.text());

    // A claim that would smuggle a header is not copied at all.
    let token = key.token(
        Some("k1"),
        &with(claims("x"), "sub", json!("eve\r\nx-admin: true")),
    );
    let reply = send(
        &gw,
        "/crlf-claim",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user", "admin"),
        ],
    )
    .await;
    assert_ok(&reply, "token with CR LF in sub");
    assert!(reply.echoed("x-user").is_empty(), "{}", reply.text());
    assert!(reply.echoed("x-admin").is_empty(), "{}", reply.text());

    // A token without kid against a set whose keys all have one is still
    // checked (against every fitting key).
    let reply = with_token(&gw, "/no-kid", &key.token(None, &claims("carol"))).await;
    assert_ok(&reply, "token without kid");
    assert_eq!(reply.echoed("x-user"), ["carol"]);

    assert_eq!(echo.recorded().await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let key = Signer::es256();
    let auth = inline_auth(&jwks(&[key.jwk("k1")]), json!({}));
    let (gw, _echo) = start(&[("/", "jwt")], &[filter("jwt", auth)]).await;
    let token = key.token(Some("k1"), &claims("alice"));
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let reply = send(&gw, "/", &[("authorization", &format!("{scheme} {token}"))]).await;
        assert_ok(&reply, scheme);
        assert_eq!(reply.echoed("x-user"), ["alice"], "{scheme}");
    }
    // The scheme must be followed by whitespace; "Bearer<token>" is still
    // judged as a bearer attempt, and refused as malformed.
    let reply = send(&gw, "/", &[("authorization", &format!("Bearer{token}"))]).await;
    assert_invalid(
        &reply,
        Some("malformed bearer token"),
        "scheme glued to the token",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_tokens_get_401_and_never_reach_the_backend() {
    let rsa = rsa_key();
    let key = Signer::es256();
    let ed = Signer::ed25519();
    let attacker = Signer::es256();
    // The attacker's JWKS server, named by jku/x5u: must never be fetched.
    let attacker_jwks = JwksServer::start(jwks(&[attacker.jwk("k1")]), Mode::Serve).await;

    let main = inline_auth(
        &jwks(&[key.jwk("k1"), rsa.signer.jwk("rsa"), ed.jwk("ed")]),
        json!({"algorithms": ["RS256", "ES256"], "maxTokenBytes": 2048}),
    );
    let rs_only = inline_auth(
        &jwks(&[rsa.signer.jwk("rsa")]),
        json!({"algorithms": ["RS256"]}),
    );
    let mut rs_hs = inline_auth("", json!({"algorithms": ["RS256", "HS256"]}));
    rs_hs["jwks"] = json!({"secretRef": {"name": "rsa-only", "key": "jwks.json"}});
    let defaults = inline_auth(&jwks(&[key.jwk("k1")]), json!({}));
    let (gw, echo) = start(
        &[
            ("/es", "main"),
            ("/rs", "rs-only"),
            ("/rs-hs", "rs-hs"),
            ("/defaults", "defaults"),
        ],
        &[
            filter("main", main),
            filter("defaults", defaults),
            filter("rs-only", rs_only),
            filter("rs-hs", rs_hs),
            jwks_secret("rsa-only", &jwks(&[rsa.signer.jwk("rsa")])),
        ],
    )
    .await;

    // Each route lets a genuine token through, so the refusals below are
    // about the tokens, not a broken setup.
    let good = key.token(Some("k1"), &claims("alice"));
    assert_ok(&with_token(&gw, "/es", &good).await, "ES256");
    let rs_good = rsa.signer.token(Some("rsa"), &claims("alice"));
    for path in ["/es", "/rs", "/rs-hs"] {
        assert_ok(&with_token(&gw, path, &rs_good).await, path);
    }
    // Inside the default 60 s clock skew, and `aud` as an array.
    let now = now();
    for (case, claims) in [
        (
            "expired 30 s ago",
            with(claims("alice"), "exp", json!(now - 30)),
        ),
        (
            "valid in 30 s",
            with(claims("alice"), "nbf", json!(now + 30)),
        ),
        (
            "issued in 30 s",
            with(claims("alice"), "iat", json!(now + 30)),
        ),
        (
            "aud array",
            with(claims("alice"), "aud", json!(["other", AUDIENCE])),
        ),
    ] {
        assert_ok(
            &with_token(&gw, "/es", &key.token(Some("k1"), &claims)).await,
            case,
        );
    }
    // The default maxTokenBytes (16384): the longest token within it
    // passes, the shortest beyond it is refused before any key work.
    let (fits, too_long) = tokens_around(16_384, |pad| {
        key.token(
            Some("k1"),
            &with(claims("alice"), "pad", json!("p".repeat(pad))),
        )
    });
    assert_ok(
        &with_token(&gw, "/defaults", &fits).await,
        "16384-byte token",
    );
    assert_invalid(
        &with_token(&gw, "/defaults", &too_long).await,
        Some("token too large"),
        "token over 16384 bytes",
    );
    let passed = echo.recorded().await.len();
    assert_eq!(passed, 9);

    let good_claims = claims("alice");
    let [header, payload, signature]: [&str; 3] = good
        .split('.')
        .collect::<Vec<_>>()
        .try_into()
        .expect("three segments");
    let admin_payload = b64(&serde_json::to_vec(&claims("admin")).unwrap());
    let mut flipped = URL_SAFE_NO_PAD.decode(signature).unwrap();
    flipped[10] ^= 0x01;
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
            payload
        )
    };
    let big_claims = with(
        claims("alice"),
        "padding",
        json!("x".repeat(3000)), // well over maxTokenBytes 2048
    );
    let sign = |claims: &Value| key.token(Some("k1"), claims);
    let embedded = |member: &str, value: Value| {
        sign_raw(
            &json!({"alg": "ES256", "typ": "JWT", "kid": "k1", member: value}),
            &good_claims,
            &attacker.encoding,
            Algorithm::ES256,
        )
    };

    // (case, token, error_description when it is certain)
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        (
            "alg none, empty signature",
            unsigned("none"),
            Some("malformed token"),
        ),
        (
            "alg none with a signature",
            format!("{}{}", unsigned("none"), signature),
            Some("signing algorithm not accepted"),
        ),
        (
            "alg None",
            format!("{}{}", unsigned("None"), signature),
            Some("signing algorithm not accepted"),
        ),
        (
            "alg HS256 not allowed",
            sign_raw(
                &json!({"alg": "HS256", "kid": "k1"}),
                &good_claims,
                &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
                Algorithm::HS256,
            ),
            Some("signing algorithm not accepted"),
        ),
        (
            "allowed key, algorithm not listed (EdDSA)",
            ed.token(Some("ed"), &good_claims),
            Some("signing algorithm not accepted"),
        ),
        (
            "expired",
            sign(&with(claims("alice"), "exp", json!(now - 3600))),
            Some("token expired"),
        ),
        (
            "not yet valid",
            sign(&with(claims("alice"), "nbf", json!(now + 3600))),
            Some("token not yet valid"),
        ),
        (
            "issued in the future",
            sign(&with(claims("alice"), "iat", json!(now + 3600))),
            Some("token issued in the future"),
        ),
        (
            "no exp",
            sign(&without(claims("alice"), "exp")),
            Some("token has no expiration"),
        ),
        (
            "wrong issuer",
            sign(&with(claims("alice"), "iss", json!("https://evil.example"))),
            Some("issuer not accepted"),
        ),
        (
            "wrong audience",
            sign(&with(claims("alice"), "aud", json!(["other", "api2"]))),
            Some("audience not accepted"),
        ),
        (
            "no audience",
            sign(&without(claims("alice"), "aud")),
            Some("audience not accepted"),
        ),
        (
            "unknown kid",
            attacker.token(Some("nope"), &good_claims),
            Some("no matching signing key"),
        ),
        (
            "ES256 token naming the RSA key",
            key.token(Some("rsa"), &good_claims),
            Some("no matching signing key"),
        ),
        (
            "exp not a number",
            sign(&with(
                claims("alice"),
                "exp",
                json!((now + 600).to_string()),
            )),
            Some("malformed token"),
        ),
        (
            "known kid, another key",
            attacker.token(Some("k1"), &good_claims),
            Some("invalid signature"),
        ),
        (
            "no kid, another key",
            attacker.token(None, &good_claims),
            Some("invalid signature"),
        ),
        (
            "tampered payload",
            format!("{header}.{admin_payload}.{signature}"),
            Some("invalid signature"),
        ),
        (
            "flipped signature bit",
            format!("{header}.{payload}.{}", b64(&flipped)),
            Some("invalid signature"),
        ),
        (
            "signature of another token",
            format!(
                "{header}.{payload}.{}",
                sign(&claims("bob")).rsplit('.').next().unwrap()
            ),
            Some("invalid signature"),
        ),
        (
            "truncated signature",
            good[..good.len() - 8].to_owned(),
            None,
        ),
        (
            "two segments",
            format!("{header}.{payload}"),
            Some("malformed token"),
        ),
        (
            "empty signature",
            format!("{header}.{payload}."),
            Some("malformed token"),
        ),
        (
            "payload is not JSON",
            format!("{header}.{}.{signature}", b64(b"not json")),
            None,
        ),
        (
            "standard base64 alphabet (+)",
            format!("{header}.{payload}+.{signature}"),
            Some("malformed token"),
        ),
        (
            "non-base64 character ($)",
            format!("{header}.{payload}$.{signature}"),
            Some("malformed bearer token"),
        ),
        (
            "padding inside",
            format!("{header}.{payload}==.{signature}"),
            Some("malformed bearer token"),
        ),
        (
            "four segments",
            format!("{good}.{signature}"),
            Some("malformed token"),
        ),
        (
            "five segments (JWE shape)",
            format!("{header}.{payload}.{payload}.{payload}.{signature}"),
            Some("malformed token"),
        ),
        (
            "oversized but well signed",
            sign(&big_claims),
            Some("token too large"),
        ),
        (
            "crit header",
            sign_raw(
                &json!({"alg": "ES256", "kid": "k1", "crit": ["b64"], "b64": false}),
                &good_claims,
                &key.encoding,
                Algorithm::ES256,
            ),
            Some("malformed token"),
        ),
        (
            "embedded jwk",
            embedded("jwk", attacker.jwk("k1")),
            Some("invalid signature"),
        ),
        (
            "jku to the attacker's JWKS",
            embedded("jku", json!(attacker_jwks.url)),
            Some("invalid signature"),
        ),
        (
            "x5u to the attacker's server",
            embedded("x5u", json!(attacker_jwks.url)),
            Some("invalid signature"),
        ),
        (
            "x5c with garbage",
            embedded("x5c", json!(["MIIB"])),
            Some("invalid signature"),
        ),
    ];
    for (case, token, description) in &cases {
        assert_invalid(&with_token(&gw, "/es", token).await, *description, case);
    }

    // RS256/HS256 key confusion: HMAC keyed with what is public about the
    // RSA key, against a filter that allows RS256 only, and against one that
    // allows HS256 too, keyed by a Secret holding only the RSA key.
    let public_forms: Vec<(&str, Vec<u8>)> = {
        use rsa::pkcs1::EncodeRsaPublicKey;
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let spki = rsa.public.to_public_key_pem(LineEnding::LF).unwrap();
        let pkcs1 = rsa.public.to_pkcs1_pem(LineEnding::LF).unwrap();
        vec![
            ("SPKI PEM", spki.clone().into_bytes()),
            ("SPKI PEM, CRLF", spki.replace('\n', "\r\n").into_bytes()),
            ("PKCS#1 PEM", pkcs1.into_bytes()),
            (
                "PKCS#1 DER",
                rsa.public.to_pkcs1_der().unwrap().as_bytes().to_vec(),
            ),
            (
                "SPKI DER",
                rsa.public.to_public_key_der().unwrap().as_bytes().to_vec(),
            ),
            ("modulus n", rsa.public.n().to_bytes_be()),
            ("JWK JSON", rsa.signer.jwk("rsa").to_string().into_bytes()),
        ]
    };
    for (form, secret) in &public_forms {
        for kid in [Some("rsa"), None] {
            let mut header = json!({"alg": "HS256", "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let token = sign_raw(
                &header,
                &good_claims,
                &EncodingKey::from_secret(secret),
                Algorithm::HS256,
            );
            for (path, description) in [
                ("/rs", Some("signing algorithm not accepted")),
                ("/es", Some("signing algorithm not accepted")),
                ("/rs-hs", Some("no matching signing key")),
            ] {
                let case = format!("HS256 keyed with the RSA {form}, kid {kid:?}, {path}");
                assert_invalid(&with_token(&gw, path, &token).await, description, &case);
            }
        }
    }

    // Requests that offer no usable bearer credential.
    let basic = [("authorization", "Basic YWxpY2U6c2VjcmV0")];
    assert_challenged(&send(&gw, "/es", &[]).await, "no Authorization");
    assert_challenged(&send(&gw, "/es", &basic).await, "Basic credentials");
    assert_challenged(
        &send(&gw, "/es", &[("authorization", "")]).await,
        "empty Authorization",
    );
    let bearer = format!("Bearer {good}");
    let reply = send(
        &gw,
        "/es",
        &[("authorization", &bearer), ("authorization", &bearer)],
    )
    .await;
    assert_invalid(&reply, None, "two Authorization headers");
    let reply = send(
        &gw,
        "/es",
        &[("authorization", &bearer), ("authorization", basic[0].1)],
    )
    .await;
    assert_invalid(&reply, None, "Bearer and Basic");
    for value in ["Bearer", "Bearer ", "Bearer a b", "Bearer a.b.c, realm=x"] {
        let reply = send(&gw, "/es", &[("authorization", value)]).await;
        assert_eq!(reply.status, 401, "{value:?}: {}", reply.text());
        assert_eq!(reply.backend(), None, "{value:?}");
    }

    assert_eq!(
        echo.recorded().await.len(),
        passed,
        "a refused request reached the backend"
    );
    assert_eq!(attacker_jwks.hits(), 0, "the gateway followed jku/x5u");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_takes_its_key_from_a_secret_and_an_inline_one_invalidates_the_filter() {
    let (hmac, other) = (Signer::hs256(), Signer::hs256());
    let mut from_secret = inline_auth("", json!({"algorithms": ["HS256"]}));
    from_secret["jwks"] = json!({"secretRef": {"name": "hmac"}});
    let inline = inline_auth(&jwks(&[hmac.jwk("hs1")]), json!({"algorithms": ["HS256"]}));
    let (gw, echo) = start(
        &[("/secret", "hs-secret"), ("/inline", "hs-inline")],
        &[
            filter("hs-secret", from_secret),
            filter("hs-inline", inline),
            jwks_secret("hmac", &jwks(&[hmac.jwk("hs1")])),
        ],
    )
    .await;

    let token = hmac.token(Some("hs1"), &claims("alice"));
    let reply = with_token(&gw, "/secret", &token).await;
    assert_ok(&reply, "HS256 with the Secret's key");
    assert_eq!(reply.echoed("x-user"), ["alice"]);
    let forged = other.token(Some("hs1"), &claims("alice"));
    assert_invalid(
        &with_token(&gw, "/secret", &forged).await,
        Some("invalid signature"),
        "HS256 with another secret",
    );

    // The invalid filter closes its rule: 500 for every request, token or not.
    for token in [Some(&token), None] {
        let reply = match token {
            Some(token) => with_token(&gw, "/inline", token).await,
            None => send(&gw, "/inline", &[]).await,
        };
        assert_eq!(reply.status, 500, "{}", reply.text());
        assert_eq!(reply.backend(), None);
    }
    assert_eq!(echo.recorded().await.len(), 1);

    let route = gw.status_of("HTTPRoute", "default/jwt").await.unwrap();
    let conditions = route["status"]["parents"][0]["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("no parent conditions: {route}"))
        .clone();
    let partially = conditions
        .iter()
        .find(|c| c["type"] == "PartiallyInvalid")
        .unwrap_or_else(|| panic!("no PartiallyInvalid in {conditions:?}"));
    assert_eq!(partially["status"], "True", "{partially}");
    let message = partially["message"].as_str().unwrap();
    assert!(
        message.contains("hs-inline") && message.contains("HS256"),
        "{message}"
    );

    let status = gw.status_of("Filter", "default/hs-inline").await.unwrap();
    let accepted = status["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
        .unwrap_or_else(|| panic!("no Accepted in {status}"));
    assert_eq!(accepted["status"], "False", "{accepted}");
    assert_eq!(accepted["reason"], "Invalid", "{accepted}");
    assert!(
        accepted["message"].as_str().unwrap().contains("HS256"),
        "{accepted}"
    );
    let status = gw.status_of("Filter", "default/hs-secret").await.unwrap();
    let accepted = status["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
        .unwrap_or_else(|| panic!("no Accepted in {status}"));
    assert_eq!(accepted["status"], "True", "{accepted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_token_may_be_absent_but_not_bad() {
    let key = Signer::es256();
    let auth = inline_auth(&jwks(&[key.jwk("k1")]), json!({"required": false}));
    let (gw, echo) = start(&[("/", "jwt")], &[filter("jwt", auth)]).await;

    let reply = send(&gw, "/", &[("x-user", "admin"), ("x-role", "superuser")]).await;
    assert_ok(&reply, "no token");
    assert!(reply.echoed("x-user").is_empty(), "{}", reply.text());
    assert!(reply.echoed("x-role").is_empty(), "{}", reply.text());

    // Another scheme is not a bearer token: passed on, claims headers not.
    let reply = send(
        &gw,
        "/",
        &[
            ("authorization", "Basic YWxpY2U6c2VjcmV0"),
            ("x-user", "admin"),
        ],
    )
    .await;
    assert_ok(&reply, "Basic credentials");
    assert!(reply.echoed("x-user").is_empty(), "{}", reply.text());

    let token = key.token(Some("k1"), &claims("alice"));
    let reply = send(
        &gw,
        "/",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user", "admin"),
        ],
    )
    .await;
    assert_ok(&reply, "valid token");
    assert_eq!(reply.echoed("x-user"), ["alice"]);

    let expired = key.token(
        Some("k1"),
        &with(claims("alice"), "exp", json!(now() - 3600)),
    );
    for (case, token) in [
        ("expired", expired),
        (
            "forged",
            Signer::es256().token(Some("k1"), &claims("alice")),
        ),
        ("garbage", "abc.def.ghi".to_owned()),
    ] {
        assert_invalid(&with_token(&gw, "/", &token).await, None, case);
    }
    // A present token must be valid.
    for value in [
        "Bearer abc.def.ghi x",
        "bearer \tabc$def",
        "Bearer  abc$def",
    ] {
        let reply = send(&gw, "/", &[("authorization", value)]).await;
        assert_invalid(&reply, Some("malformed bearer token"), value);
    }
    assert_eq!(echo.recorded().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_authorization_keeps_the_token_from_the_backend() {
    let key = Signer::es256();
    let auth = inline_auth(&jwks(&[key.jwk("k1")]), json!({"stripAuthorization": true}));
    let (gw, _echo) = start(&[("/", "jwt")], &[filter("jwt", auth)]).await;
    let token = key.token(Some("k1"), &claims("alice"));
    let reply = with_token(&gw, "/", &token).await;
    assert_ok(&reply, "valid token");
    assert!(reply.echoed("authorization").is_empty(), "{}", reply.text());
    assert_eq!(reply.echoed("x-user"), ["alice"]);
    assert!(!reply.text().contains(&token), "the token leaked upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_jwks_is_fetched_and_follows_key_rotation() {
    let (k1, k2) = (Signer::es256(), Signer::es256());
    let server = JwksServer::start(jwks(&[k1.jwk("k1")]), Mode::Serve).await;
    let auth = inline_auth(
        "",
        json!({"jwks": {"remote": {"url": server.url, "refreshInterval": "5m", "timeout": "1s"}}}),
    );
    let (gw, echo) = start(&[("/", "jwt")], &[filter("jwt", auth)]).await;

    let t1 = k1.token(Some("k1"), &claims("alice"));
    let reply = with_token(&gw, "/", &t1).await;
    assert_ok(&reply, "k1 from the remote set");
    assert_eq!(reply.echoed("x-user"), ["alice"]);
    let before = server.hits();
    assert!(before >= 1);

    // The issuer rotates to k2. The first k2 token may trigger the early
    // refresh itself; until the set is fresh, it gets 401, never a 5xx.
    server.set_body(jwks(&[k2.jwk("k2")]));
    let t2 = k2.token(Some("k2"), &claims("bob"));
    let started = Instant::now();
    let reply = eventually(Duration::from_secs(15), || async {
        let reply = with_token(&gw, "/", &t2).await;
        match reply.status {
            200 => Ok(reply),
            401 => anyhow::bail!("still refused: {:?}", challenges(&reply)),
            other => panic!("k2 token answered {other}: {}", reply.text()),
        }
    })
    .await;
    assert_eq!(reply.echoed("x-user"), ["bob"]);
    let fetches = server.hits();
    assert_eq!(
        fetches - before,
        1,
        "one early refresh for the rotation (took {:?})",
        started.elapsed()
    );

    // k1 is gone from the set now.
    assert_invalid(
        &with_token(&gw, "/", &t1).await,
        Some("no matching signing key"),
        "k1 after rotation",
    );
    // Made-up kids do not turn the gateway into a load generator against
    // the identity provider: early refreshes are spaced.
    for i in 0..20 {
        let token = k2.token(Some(&format!("made-up-{i}")), &claims("mallory"));
        assert_invalid(
            &with_token(&gw, "/", &token).await,
            Some("no matching signing key"),
            "made-up kid",
        );
    }
    assert_eq!(
        server.hits(),
        fetches,
        "made-up kids within 10 s of the last early refresh fetched again"
    );
    assert_eq!(echo.recorded().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_silent_jwks_server_answers_401_quickly() {
    let key = Signer::es256();
    let silent = JwksServer::start(jwks(&[key.jwk("k1")]), Mode::Hang).await;
    // Bound but never listening: connections to it are refused.
    let closed = ClosedPort::new();
    let remote = |url: &str| {
        inline_auth(
            "",
            json!({"jwks": {"remote": {"url": url, "refreshInterval": "5m", "timeout": "1s"}}}),
        )
    };
    let (gw, echo) = start(
        &[("/down", "down"), ("/silent", "silent")],
        &[
            filter(
                "down",
                remote(&format!("http://127.0.0.1:{}/jwks.json", closed.port)),
            ),
            filter("silent", remote(&silent.url)),
        ],
    )
    .await;
    let token = key.token(Some("k1"), &claims("alice"));
    for path in ["/down", "/silent", "/down", "/silent"] {
        let started = Instant::now();
        let reply = with_token(&gw, path, &token).await;
        let took = started.elapsed();
        assert_invalid(&reply, Some("signing keys unavailable"), path);
        assert!(
            took < Duration::from_secs(5),
            "{path} answered after {took:?}"
        );
    }
    assert!(silent.hits() >= 1, "the silent server was never asked");
    // Without a token, the bare challenge, as ever.
    assert_challenged(&send(&gw, "/down", &[]).await, "no token, keys down");
    assert!(echo.recorded().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_inline_jwks_rotates_keys_without_a_restart() {
    let (k1, k2) = (Signer::es256(), Signer::es256());
    let echo = Echo::start_with("backend", "127.0.0.1:0".parse().unwrap(), &["--record"]);
    let manifest = |key: &Signer, kid: &str| {
        let auth = inline_auth(&jwks(&[key.jwk(kid)]), json!({}));
        all_yaml(&echo, &[("/", "jwt")], &[filter("jwt", auth)])
    };
    let gw = Standalone::start(&[("all.yaml", manifest(&k1, "k1"))]).await;

    let t1 = k1.token(Some("k1"), &claims("alice"));
    let t2 = k2.token(Some("k2"), &claims("bob"));
    assert_ok(&with_token(&gw, "/", &t1).await, "k1 before rotation");
    assert_invalid(
        &with_token(&gw, "/", &t2).await,
        Some("no matching signing key"),
        "k2 before rotation",
    );

    gw.write("all.yaml", &manifest(&k2, "k2"));
    let reply = eventually(Duration::from_secs(20), || async {
        let reply = with_token(&gw, "/", &t2).await;
        match reply.status {
            200 => Ok(reply),
            401 => anyhow::bail!("k2 still refused"),
            other => panic!("k2 token answered {other} during the reload"),
        }
    })
    .await;
    assert_eq!(reply.echoed("x-user"), ["bob"]);
    assert_invalid(
        &with_token(&gw, "/", &t1).await,
        Some("no matching signing key"),
        "k1 after rotation",
    );
    let recorded = echo.recorded().await.len();
    assert_eq!(recorded, 2, "only the two accepted requests passed");
}

/// A credential that starts like the Bearer scheme is always judged as a
/// bearer token: after a tab, junk must not pass for another scheme that an
/// optional filter would let through unverified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_after_bearer_does_not_hide_a_bad_token() {
    let key = Signer::es256();
    let auth = inline_auth(&jwks(&[key.jwk("k1")]), json!({"required": false}));
    let (gw, echo) = start(&[("/", "jwt")], &[filter("jwt", auth)]).await;
    let good = key.token(Some("k1"), &claims("alice"));
    assert_ok(
        &send(&gw, "/", &[("authorization", &format!("Bearer\t{good}"))]).await,
        "a good token after a tab",
    );
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(claims("admin").to_string().as_bytes())
    );
    for value in [
        format!("Bearer\t{unsigned} x"),
        "Bearer\tabc$def".to_owned(),
    ] {
        let reply = send(&gw, "/", &[("authorization", &value)]).await;
        assert_invalid(&reply, Some("malformed bearer token"), &value);
    }
    assert_eq!(echo.recorded().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_targeting_the_gateway_guards_every_route() {
    let key = Signer::es256();
    let echo = Echo::start_with("backend", "127.0.0.1:0".parse().unwrap(), &["--record"]);
    let mut auth = filter("jwt", inline_auth(&jwks(&[key.jwk("k1")]), json!({})));
    // Attached by targetRefs, not by the route's rules.
    let mut object: Value = serde_json::from_str(&auth).unwrap();
    object["spec"]["targetRefs"] = json!([
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "sectionName": "http"}
    ]);
    auth = object.to_string();
    let docs = [
        manifests::gateway(),
        manifests::service("default", "svc", &[echo.port()]),
        manifests::route("plain", "gw", &[HOST], "[{name: svc, port: 80}]"),
        auth,
    ];
    let gw = Standalone::start(&[("all.yaml", docs.join("\n---\n"))]).await;

    assert_challenged(&send(&gw, "/any", &[]).await, "no token");
    let forged = Signer::es256().token(Some("k1"), &claims("alice"));
    assert_invalid(
        &with_token(&gw, "/any", &forged).await,
        Some("invalid signature"),
        "forged",
    );
    let reply = with_token(&gw, "/any", &key.token(Some("k1"), &claims("alice"))).await;
    assert_ok(&reply, "valid token");
    assert_eq!(reply.echoed("x-user"), ["alice"]);
    assert_eq!(echo.recorded().await.len(), 1);

    let status = gw.status_of("Filter", "default/jwt").await.unwrap();
    let ancestor = &status["status"]["ancestors"][0];
    assert_eq!(ancestor["ancestorRef"]["kind"], "Gateway", "{status}");
    let accepted = ancestor["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
        .unwrap_or_else(|| panic!("no Accepted in {status}"));
    assert_eq!(accepted["status"], "True", "{status}");
}

/// A Gateway's jwtAuth runs before routing: routes match on the claim
/// headers it writes, and a client's own copy of such a header never picks
/// a route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_on_the_claims_a_gateway_filter_verified() {
    let key = Signer::es256();
    let gold = Echo::start("gold");
    let basic = Echo::start("basic");
    let mut object: Value = serde_json::from_str(&filter(
        "jwt",
        inline_auth(&jwks(&[key.jwk("k1")]), json!({"required": false})),
    ))
    .unwrap();
    object["spec"]["targetRefs"] = json!([
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
    ]);
    let rules = r#"  - matches: [{headers: [{name: x-role, value: gold}]}]
    backendRefs: [{name: gold, port: 80}]
  - backendRefs: [{name: basic, port: 80}]
"#;
    let docs = [
        manifests::gateway(),
        manifests::service("default", "gold", &[gold.port()]),
        manifests::service("default", "basic", &[basic.port()]),
        manifests::route_with_rules("tiers", HOST, rules),
        object.to_string(),
    ];
    let gw = Standalone::start(&[("all.yaml", docs.join("\n---\n"))]).await;

    let gold_claims = with(claims("alice"), "realm", json!({"role": "gold"}));
    let reply = with_token(&gw, "/", &key.token(Some("k1"), &gold_claims)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.backend(),
        Some("gold"),
        "the verified role picks the route"
    );
    assert_eq!(reply.echoed("x-role"), ["gold"]);

    let reply = with_token(&gw, "/", &key.token(Some("k1"), &claims("bob"))).await;
    assert_eq!(reply.backend(), Some("basic"), "role reader");

    // No token (allowed: required is false) but a spoofed role header: the
    // filter removes it before the route is chosen.
    let reply = send(&gw, "/", &[("x-role", "gold")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.backend(),
        Some("basic"),
        "a spoofed claim header picks nothing"
    );
    assert!(reply.echoed("x-role").is_empty());

    // A valid token for "reader" plus a spoofed gold header: still basic.
    let reply = send(
        &gw,
        "/",
        &[
            (
                "authorization",
                &format!("Bearer {}", key.token(Some("k1"), &claims("carol"))),
            ),
            ("x-role", "gold"),
        ],
    )
    .await;
    assert_eq!(reply.backend(), Some("basic"));
    assert_eq!(reply.echoed("x-role"), ["reader"]);
}

/// The data plane remembers tokens it verified, but never past their own
/// expiry: the same token, accepted while valid, is refused once it has
/// expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_token_is_refused_once_it_expires() {
    let key = Signer::es256();
    let auth = inline_auth(&jwks(&[key.jwk("k1")]), json!({"clockSkew": "0s"}));
    let (gw, _echo) = start(&[("/", "jwt")], &[filter("jwt", auth)]).await;
    let expires = now() + 5;
    let token = key.token(Some("k1"), &with(claims("alice"), "exp", json!(expires)));
    for _ in 0..3 {
        assert_ok(
            &with_token(&gw, "/", &token).await,
            "valid, maybe remembered",
        );
    }
    while now() <= expires {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_invalid(
        &with_token(&gw, "/", &token).await,
        Some("token expired"),
        "expired after being remembered",
    );
}

/// Claims route requests even when no route matches the request as the
/// client sent it, and only the Gateway's own filters run before routing:
/// a route-level ipAccess of the rule first matched does not judge a
/// request that ends up on another rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_routing_needs_no_catch_all_and_runs_only_gateway_filters_first() {
    let key = Signer::es256();
    let gold = Echo::start("gold");
    let other = Echo::start("other");
    let mut gateway_auth: Value = serde_json::from_str(&filter(
        "jwt",
        inline_auth(&jwks(&[key.jwk("k1")]), json!({"required": false})),
    ))
    .unwrap();
    gateway_auth["spec"]["targetRefs"] = json!([
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
    ]);
    // Only a gold role reaches `gold`; `/other` is guarded by an allow-list
    // nobody here is on.
    let nobody = json!({
        "apiVersion": "gatehouse.dev/v1alpha1",
        "kind": "Filter",
        "metadata": {"name": "nobody", "namespace": "default"},
        "spec": {"type": "IPAccess", "ipAccess": {"allow": ["192.0.2.0/24"]}},
    });
    let rules = r#"  - matches:
    - headers: [{name: x-role, value: gold}]
    - path: {type: PathPrefix, value: /other}
      headers: [{name: x-role, value: gold}]
    backendRefs: [{name: gold, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /other}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: gatehouse.dev, kind: Filter, name: nobody}
    backendRefs: [{name: other, port: 80}]
"#;
    let docs = [
        manifests::gateway(),
        manifests::service("default", "gold", &[gold.port()]),
        manifests::service("default", "other", &[other.port()]),
        manifests::route_with_rules("tiers", HOST, rules),
        gateway_auth.to_string(),
        nobody.to_string(),
    ];
    let gw = Standalone::start(&[("all.yaml", docs.join("\n---\n"))]).await;
    let gold_token = key.token(
        Some("k1"),
        &with(claims("alice"), "realm", json!({"role": "gold"})),
    );

    // The request as sent matches no rule; its verified role matches one.
    let reply = with_token(&gw, "/", &gold_token).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.backend(), Some("gold"));
    // As sent, `/other` matches the rule with the allow-list (which would
    // refuse it); with the verified role, the gold rule's match of the
    // same path plus the header wins, and that rule has no allow-list.
    let reply = with_token(&gw, "/other", &gold_token).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.backend(), Some("gold"));
    // Without the role: 404 on `/`, and `/other`'s allow-list applies.
    let reply = with_token(&gw, "/", &key.token(Some("k1"), &claims("bob"))).await;
    assert_eq!(reply.status, 404);
    let reply = with_token(&gw, "/other", &key.token(Some("k1"), &claims("bob"))).await;
    assert_eq!(reply.status, 403);
    // A spoofed role without a token picks nothing.
    let reply = send(&gw, "/", &[("x-role", "gold")]).await;
    assert_eq!(reply.status, 404);
}

/// A header any jwtAuth of the group writes is never taken from a client,
/// even on a route whose own jwtAuth writes other headers (so the filter
/// that names it does not run there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_headers_are_stripped_where_their_filter_does_not_run() {
    let key = Signer::es256();
    let echo = Echo::start("backend");
    let mut gateway_auth: Value = serde_json::from_str(&filter(
        "gateway-jwt",
        inline_auth(&jwks(&[key.jwk("k1")]), json!({})),
    ))
    .unwrap();
    gateway_auth["spec"]["targetRefs"] = json!([
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
    ]);
    let own = filter(
        "own-jwt",
        json!({
            "issuer": ISSUER,
            "jwks": {"inline": jwks(&[key.jwk("k1")])},
            "required": false,
            "claimsToHeaders": [{"claim": "sub", "header": "x-uid"}],
        }),
    );
    let rules = r#"  - filters:
    - type: ExtensionRef
      extensionRef: {group: gatehouse.dev, kind: Filter, name: own-jwt}
    backendRefs: [{name: svc, port: 80}]
"#;
    let docs = [
        manifests::gateway(),
        manifests::service("default", "svc", &[echo.port()]),
        manifests::route_with_rules("legacy", HOST, rules),
        gateway_auth.to_string(),
        own,
    ];
    let gw = Standalone::start(&[("all.yaml", docs.join("\n---\n"))]).await;
    let reply = send(&gw, "/", &[("x-user", "admin"), ("x-role", "root")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.echoed("x-user").is_empty(), "x-user passed through");
    assert!(reply.echoed("x-role").is_empty(), "x-role passed through");
}

/// A refusal by a Gateway's jwtAuth that runs before routing still carries
/// the CORS headers of the rule, so a browser can read the 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_refusal_keeps_the_rules_cors_headers() {
    let key = Signer::es256();
    let echo = Echo::start("backend");
    let mut gateway_auth: Value = serde_json::from_str(&filter(
        "jwt",
        inline_auth(&jwks(&[key.jwk("k1")]), json!({})),
    ))
    .unwrap();
    gateway_auth["spec"]["targetRefs"] = json!([
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
    ]);
    let rules = r#"  - filters:
    - type: CORS
      cors: {allowOrigins: ["https://app.example"], allowMethods: [GET]}
    backendRefs: [{name: svc, port: 80}]
"#;
    let docs = [
        manifests::gateway(),
        manifests::service("default", "svc", &[echo.port()]),
        manifests::route_with_rules("app", HOST, rules),
        gateway_auth.to_string(),
    ];
    let gw = Standalone::start(&[("all.yaml", docs.join("\n---\n"))]).await;
    let reply = send(&gw, "/", &[("origin", "https://app.example")]).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(
        reply
            .headers
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example"),
        "{:?}",
        reply.headers
    );
}

/// `stripAuthorization` removes the header only once the route is chosen:
/// a route matching on it is still found after a claims lookup, and the
/// backend never sees the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_stripped_after_routing_not_before() {
    let key = Signer::es256();
    let bearer = Echo::start("bearer");
    let mut gateway_auth: Value = serde_json::from_str(&filter(
        "jwt",
        inline_auth(&jwks(&[key.jwk("k1")]), json!({"stripAuthorization": true})),
    ))
    .unwrap();
    gateway_auth["spec"]["targetRefs"] = json!([
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
    ]);
    let rules = r#"  - matches: [{headers: [{name: authorization, type: RegularExpression, value: "Bearer .+"}]}]
    backendRefs: [{name: bearer, port: 80}]
"#;
    let docs = [
        manifests::gateway(),
        manifests::service("default", "bearer", &[bearer.port()]),
        manifests::route_with_rules("tokens", HOST, rules),
        gateway_auth.to_string(),
    ];
    let gw = Standalone::start(&[("all.yaml", docs.join("\n---\n"))]).await;
    let reply = with_token(&gw, "/", &key.token(Some("k1"), &claims("alice"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.backend(), Some("bearer"));
    assert!(
        reply.echoed("authorization").is_empty(),
        "the token went upstream"
    );
    assert_eq!(reply.echoed("x-user"), ["alice"]);
}
