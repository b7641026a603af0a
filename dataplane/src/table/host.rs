//! Hostname matching, Gateway API v1 `Listener.hostname` and
//! `HTTPRoute.spec.hostnames`: "Hostnames that are prefixed with a wildcard
//! label (`*.`) are interpreted as a suffix match. That means that a match for
//! `*.example.com` would match both `test.example.com`, and
//! `foo.test.example.com`, but not `example.com`."
//!
//! The request host follows RFC 9110 §7.2 (Host and :authority): port
//! stripped, compared case-insensitively, and a trailing dot (fully qualified
//! form) removed.

use std::borrow::Cow;

/// A listener or virtual host hostname, pre-digested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// "": any host.
    Any,
    /// Lower-case exact hostname.
    Exact(Box<str>),
    /// `*.example.com` stored as its suffix `.example.com`.
    Wildcard(Box<str>),
}

impl HostPattern {
    /// Parses a snapshot hostname; `None` when it is malformed.
    pub fn parse(hostname: &str) -> Option<Self> {
        if hostname.is_empty() {
            return Some(Self::Any);
        }
        let lower = hostname.to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        };
        match lower.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && valid(&suffix[1..]) => {
                Some(Self::Wildcard(suffix.into()))
            }
            Some(_) => None,
            None if valid(&lower) => Some(Self::Exact(lower.into())),
            None => None,
        }
    }

    /// `host` must already be normalized by [`normalize_host`].
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => **exact == *host,
            Self::Wildcard(suffix) => wildcard_matches(suffix, host),
        }
    }
}

/// `suffix` is `.example.com`: at least one label must precede it.
pub fn wildcard_matches(suffix: &str, host: &str) -> bool {
    host.len() > suffix.len() && host.ends_with(suffix) && !host.starts_with('.')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("request has no host")]
    Missing,
    #[error("request host is malformed")]
    Malformed,
}

/// The request host from an authority (`host[:port]`, `[v6]:port`): port
/// stripped, lower-cased, trailing dot removed. Borrows unless it has to
/// lower-case.
pub fn normalize_host(authority: &str) -> Result<Cow<'_, str>, HostError> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').ok_or(HostError::Malformed)?;
        &authority[..end + 2]
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            Some(_) => return Err(HostError::Malformed),
            None => authority,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(HostError::Missing);
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_needs_a_label_before_the_suffix() {
        let p = HostPattern::parse("*.example.com").unwrap();
        assert!(p.matches("test.example.com"));
        assert!(p.matches("foo.test.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches(".example.com"));
        assert!(!p.matches("badexample.com"));
    }

    #[test]
    fn parse_rejects_malformed_hostnames() {
        assert_eq!(HostPattern::parse("a*.b"), None);
        assert_eq!(HostPattern::parse("*"), None);
        assert_eq!(HostPattern::parse("a b"), None);
        assert_eq!(
            HostPattern::parse("Foo.COM"),
            Some(HostPattern::Exact("foo.com".into()))
        );
    }

    #[test]
    fn normalize_strips_port_case_and_trailing_dot() {
        assert_eq!(normalize_host("Example.COM.:8080").unwrap(), "example.com");
        assert_eq!(normalize_host("example.com").unwrap(), "example.com");
        assert_eq!(normalize_host("[::1]:80").unwrap(), "[::1]");
        assert_eq!(normalize_host(":80"), Err(HostError::Missing));
        assert_eq!(normalize_host("a:b"), Err(HostError::Malformed));
        assert_eq!(normalize_host("[::1"), Err(HostError::Malformed));
    }
}
