use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What a `jwtAuth` filter demands of a token beyond a good signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// When set, the `iss` claim must equal it exactly.
    pub issuer: Option<String>,
    /// When non-empty, the `aud` claim (a string or an array) must contain one of these.
    pub audiences: Vec<String>,
    /// Allow-list of signature algorithms; the token header's `alg` must be one of them.
    pub algorithms: Vec<Algorithm>,
    /// Tolerance for clocks that disagree, applied to `exp`, `nbf` and `iat`.
    pub clock_skew: Duration,
    /// A token without `exp` is rejected when true.
    pub require_expiration: bool,
    /// Longer tokens are rejected before any decoding work is spent on them.
    pub max_token_bytes: usize,
}

/// Default for [`Settings::clock_skew`].
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Default for [`Settings::max_token_bytes`].
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Allows RS256 only, the one algorithm every OpenID provider must offer;
/// everything else takes the defaults described on the fields.
impl Default for Settings {
    fn default() -> Self {
        Settings {
            issuer: None,
            audiences: Vec::new(),
            algorithms: vec![Algorithm::RS256],
            clock_skew: DEFAULT_CLOCK_SKEW,
            require_expiration: true,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }
}

/// The JWS algorithms a gateway may accept.
///
/// Deliberately short: `none` cannot be expressed, and HS384/HS512 are left
/// out so that symmetric keys have a single, well-understood shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    ES256,
    ES384,
    EdDSA,
    HS256,
}

impl Algorithm {
    /// Every accepted algorithm, in a stable order (for messages and docs).
    pub const ALL: [Algorithm; 8] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ];

    /// The name used in JOSE headers and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::HS256 => "HS256",
        }
    }

    /// True for the one algorithm that needs a shared secret.
    pub fn is_symmetric(self) -> bool {
        self == Algorithm::HS256
    }

    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::RS384 => jsonwebtoken::Algorithm::RS384,
            Algorithm::RS512 => jsonwebtoken::Algorithm::RS512,
            Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    /// Case-sensitive, as JOSE algorithm names are (RFC 7515 §4.1.1).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "unsupported JWT algorithm {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.to_string().parse::<Algorithm>(), Ok(alg));
        }
    }

    #[test]
    fn other_names_are_refused() {
        for name in [
            "none", "None", "NONE", "HS384", "HS512", "rs256", "ES512", "PS384", "",
        ] {
            assert!(name.parse::<Algorithm>().is_err(), "{name} accepted");
        }
    }

    #[test]
    fn defaults() {
        let s = Settings::default();
        assert_eq!(s.clock_skew, Duration::from_secs(60));
        assert!(s.require_expiration);
        assert_eq!(s.max_token_bytes, 16 * 1024);
    }
}
