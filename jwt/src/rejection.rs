use std::fmt;

/// Why a token was refused. Every variant means "401", never a server error:
/// even a key set that could not be fetched is the client's problem to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Not three unpadded base64url segments, or header/claims not the expected JSON.
    Malformed,
    /// Longer than `Settings::max_token_bytes`.
    TooLarge,
    /// Header `alg` missing, `none`, or not on the allow-list.
    Algorithm,
    /// No configured key fits the token's `kid` and algorithm.
    UnknownKey,
    /// The remote key set has not been fetched yet.
    NoKeys,
    /// No candidate key verified the signature.
    Signature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    MissingExpiration,
    Issuer,
    Audience,
}

impl Rejection {
    /// Short text for the `error_description` of a `WWW-Authenticate`
    /// challenge (RFC 6750 §3); it never contains `"` or `\`, so it can be
    /// placed in a quoted-string as is.
    pub fn description(&self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed token",
            Rejection::TooLarge => "token too large",
            Rejection::Algorithm => "signing algorithm not accepted",
            Rejection::UnknownKey => "no matching signing key",
            Rejection::NoKeys => "signing keys unavailable",
            Rejection::Signature => "invalid signature",
            Rejection::Expired => "token expired",
            Rejection::NotYetValid => "token not yet valid",
            Rejection::IssuedInFuture => "token issued in the future",
            Rejection::MissingExpiration => "token has no expiration",
            Rejection::Issuer => "issuer not accepted",
            Rejection::Audience => "audience not accepted",
        }
    }

    /// Every variant, for exhaustive tests and metric label pre-registration.
    pub const ALL: [Rejection; 12] = [
        Rejection::Malformed,
        Rejection::TooLarge,
        Rejection::Algorithm,
        Rejection::UnknownKey,
        Rejection::NoKeys,
        Rejection::Signature,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::IssuedInFuture,
        Rejection::MissingExpiration,
        Rejection::Issuer,
        Rejection::Audience,
    ];
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_fit_in_a_quoted_string() {
        for r in Rejection::ALL {
            let d = r.description();
            assert!(!d.is_empty());
            assert!(
                d.bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'),
                "{d:?}"
            );
        }
    }
}
