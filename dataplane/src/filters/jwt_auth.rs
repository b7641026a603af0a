//! `jwtAuth`: a bearer token verified by `gatehouse_jwt`, its claims copied
//! to request headers. Failures answer 401 with `WWW-Authenticate: Bearer`
//! (RFC 6750 §3: no error code when no credentials came, `invalid_token`
//! with a description when they were bad).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatehouse_jwt::{Claims, Credential, KeySet, Keys, RemoteJwks, Settings, Verifier};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::Local;

#[derive(Debug)]
pub struct JwtAuth {
    verifier: Verifier,
    required: bool,
    claims_to_headers: Box<[(Box<str>, HeaderName)]>,
    strip_authorization: bool,
    verified: VerifiedTokens,
}

/// Tokens whose signature and claims were verified, by SHA-256 of the
/// token, so that a client sending the same token again costs a hash and a
/// lookup instead of a signature check. An entry is used only while the
/// token's own time limits still hold and only against the keys it was
/// checked with; a full cache takes no new entries until expired ones are
/// swept out.
#[derive(Debug, Default)]
struct VerifiedTokens {
    entries: papaya::HashMap<[u8; 32], Verified>,
    /// When a full cache was last swept (seconds): at most one sweep per
    /// `SWEEP_EVERY_SECONDS`, so a full cache costs a miss nothing more.
    swept: std::sync::atomic::AtomicU64,
}

const SWEEP_EVERY_SECONDS: u64 = 10;

#[derive(Debug)]
struct Verified {
    identity: Arc<Identity>,
    /// `exp` + skew, or never.
    until: u64,
    /// `nbf` - skew, or 0.
    from: u64,
    keys_generation: u64,
}

/// A verified token's claims, and the request headers they become (built
/// once per token, not per request).
#[derive(Debug)]
pub struct Identity {
    pub claims: Claims,
    headers: Box<[(HeaderName, HeaderValue)]>,
}

const MAX_VERIFIED_TOKENS: usize = 10_000;
const MAX_VERIFIED_SECONDS: u64 = 300;

impl VerifiedTokens {
    fn get(&self, digest: &[u8; 32], now: u64, keys_generation: u64) -> Option<Arc<Identity>> {
        let entries = self.entries.pin();
        let hit = entries.get(digest)?;
        (hit.keys_generation == keys_generation && hit.from <= now && now <= hit.until)
            .then(|| Arc::clone(&hit.identity))
    }

    fn insert(&self, digest: [u8; 32], verified: Verified, now: u64) {
        use std::sync::atomic::Ordering;
        let entries = self.entries.pin();
        if entries.len() >= MAX_VERIFIED_TOKENS {
            let last = self.swept.load(Ordering::Relaxed);
            let due = now >= last.saturating_add(SWEEP_EVERY_SECONDS);
            if due
                && self
                    .swept
                    .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                entries.retain(|_, v| v.until >= now);
            }
            if entries.len() >= MAX_VERIFIED_TOKENS {
                return;
            }
        }
        entries.insert(digest, verified);
    }
}

impl JwtAuth {
    /// `remote` gives the key set of an earlier table for the same URL and
    /// options, so that a new snapshot does not refetch keys.
    pub fn build(
        spec: &gatehouse_snapshot::JwtAuth,
        remote: impl FnOnce(&gatehouse_snapshot::RemoteJwks) -> Option<Arc<RemoteJwks>>,
    ) -> Result<Self, String> {
        use gatehouse_snapshot::jwt_auth::Jwks;
        let algorithms = spec
            .algorithms
            .iter()
            .map(|a| a.parse())
            .collect::<Result<Vec<_>, _>>()?;
        let settings = Settings {
            issuer: (!spec.issuer.is_empty()).then(|| spec.issuer.clone()),
            audiences: spec.audiences.clone(),
            algorithms,
            clock_skew: Duration::from_millis(u64::from(spec.clock_skew_ms)),
            require_expiration: spec.require_expiration,
            max_token_bytes: spec.max_token_bytes as usize,
        };
        let keys = match &spec.jwks {
            Some(Jwks::StaticJwks(jwks)) => {
                Keys::Static(Arc::new(KeySet::from_jwks(jwks, spec.symmetric_keys)?))
            }
            Some(Jwks::RemoteJwks(r)) => Keys::Remote(remote(r).unwrap_or_else(|| {
                let (refresh, timeout) = remote_timings(r);
                RemoteJwks::new(r.url.clone(), refresh, timeout)
            })),
            None => return Err("no JWKS".into()),
        };
        let claims_to_headers = spec
            .claims_to_headers
            .iter()
            .map(|c| {
                HeaderName::from_bytes(c.header.as_bytes())
                    .map(|h| (Box::from(c.claim.as_str()), h))
                    .map_err(|_| format!("header name {:?} is invalid", c.header))
            })
            .collect::<Result<_, _>>()?;
        Ok(JwtAuth {
            verifier: Verifier::new(settings, keys)?,
            required: spec.required,
            claims_to_headers,
            strip_authorization: spec.strip_authorization,
            verified: VerifiedTokens::default(),
        })
    }

    /// Whether the Authorization header must go before the request is
    /// forwarded (done after routing, which may match on it).
    pub fn strips_authorization(&self) -> bool {
        self.strip_authorization
    }

    /// Whether it copies claims to request headers.
    pub fn writes_headers(&self) -> bool {
        !self.claims_to_headers.is_empty()
    }

    /// The request headers it writes claims to.
    pub fn claim_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.claims_to_headers.iter().map(|(_, name)| name)
    }

    /// The remote key set, for carrying over to the next table.
    pub fn remote(&self) -> Option<&Arc<RemoteJwks>> {
        match self.verifier.keys() {
            Keys::Remote(remote) => Some(remote),
            Keys::Static(_) => None,
        }
    }

    /// Verifies the request's token and rewrites its headers. `Ok(None)`:
    /// no token, and none is required.
    pub async fn apply(&self, headers: &mut HeaderMap) -> Result<Option<Arc<Identity>>, Local> {
        // Whatever happens next, a client never speaks for the gateway.
        for (_, name) in self.claims_to_headers.iter() {
            headers.remove(name);
        }
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (first, second) = (values.next(), values.next());
        let token = match (first, second) {
            (None, _) => None,
            (Some(_), Some(_)) => return Err(invalid("more than one Authorization header")),
            (Some(value), None) => match gatehouse_jwt::credential(value.as_bytes()) {
                Credential::Bearer(token) => Some(token),
                Credential::MalformedBearer => return Err(invalid("malformed bearer token")),
                Credential::Other => None,
            },
        };
        let Some(token) = token else {
            return if self.required {
                Err(challenge(None))
            } else {
                Ok(None)
            };
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let identity = self.verify(token, now).await?;
        for (name, value) in identity.headers.iter() {
            headers.insert(name.clone(), value.clone());
        }
        Ok(Some(identity))
    }
}

/// Refresh interval and fetch timeout of a remote key set, floored so that
/// a zero never turns into a busy loop.
pub fn remote_timings(r: &gatehouse_snapshot::RemoteJwks) -> (Duration, Duration) {
    (
        Duration::from_millis(u64::from(r.refresh_ms.max(1000))),
        Duration::from_millis(u64::from(r.timeout_ms.max(100))),
    )
}

impl JwtAuth {
    async fn verify(&self, token: &str, now: u64) -> Result<Arc<Identity>, Local> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let generation = self.verifier.keys_generation();
        if let Some(identity) = self.verified.get(&digest, now, generation) {
            return Ok(identity);
        }
        let claims = self
            .verifier
            .verify(token, now)
            .await
            .map_err(|rejection| invalid(rejection.description()))?;
        let headers = self
            .claims_to_headers
            .iter()
            .filter_map(|(claim, name)| {
                let value = HeaderValue::try_from(claims.get(claim)?).ok()?;
                Some((name.clone(), value))
            })
            .collect();
        let identity = Arc::new(Identity { claims, headers });
        let claims = &identity.claims;
        let skew = self.verifier.settings().clock_skew.as_secs();
        let time = |name: &str| {
            let value = claims.value(name)?;
            value.as_u64().or_else(|| value.as_f64().map(|f| f as u64))
        };
        let expires = time("exp").map_or(u64::MAX, |exp| exp.saturating_add(skew));
        self.verified.insert(
            digest,
            Verified {
                identity: Arc::clone(&identity),
                // Checked again at least every few minutes, whatever `exp`.
                until: expires.min(now + MAX_VERIFIED_SECONDS),
                from: time("nbf").map_or(0, |nbf| nbf.saturating_sub(skew)),
                keys_generation: generation,
            },
            now,
        );
        Ok(identity)
    }
}

fn invalid(description: &str) -> Local {
    challenge(Some(description))
}

fn challenge(error: Option<&str>) -> Local {
    let value = match error {
        None => "Bearer realm=\"gatehouse\"".to_owned(),
        Some(description) => format!(
            "Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"{description}\""
        ),
    };
    let mut local = Local::text(StatusCode::UNAUTHORIZED, "unauthorized");
    if let Ok(value) = HeaderValue::try_from(value) {
        local.headers.push((header::WWW_AUTHENTICATE, value));
    }
    local
}
