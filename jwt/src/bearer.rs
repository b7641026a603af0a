/// The token from an `Authorization` field value using the Bearer scheme.
///
/// The scheme name is case-insensitive (RFC 9110 §11.1); it is followed by
/// one run of spaces or tabs and a token68 (RFC 9110 §11.2), then nothing but
/// optional trailing whitespace. Anything else, including other schemes and
/// comma-separated parameters, gives `None`.
pub fn bearer_token(header_value: &[u8]) -> Option<&str> {
    const SCHEME: &[u8] = b"bearer";
    let value = trim_ows(header_value);
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = &value[SCHEME.len()..];
    let gap = rest.iter().take_while(|b| is_ows(**b)).count();
    if gap == 0 {
        // "Bearerabc" is another scheme name, not Bearer.
        return None;
    }
    let token = &rest[gap..];
    if !is_token68(token) {
        return None;
    }
    // token68 is ASCII by construction.
    std::str::from_utf8(token).ok()
}

/// What an `Authorization` field value holds, as a filter that accepts
/// Bearer tokens must judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    Bearer(&'a str),
    /// Starts like the Bearer scheme but is no valid Bearer credential
    /// ("Bearer<TAB>junk", "Bearerabc"): to be refused, never taken for
    /// another scheme an optional filter would let through unverified.
    MalformedBearer,
    /// Another scheme (Basic, ...), not a Bearer filter's to judge.
    Other,
}

/// Classifies an `Authorization` field value (see [`Credential`]).
pub fn credential(header_value: &[u8]) -> Credential<'_> {
    if let Some(token) = bearer_token(header_value) {
        return Credential::Bearer(token);
    }
    let value = trim_ows(header_value);
    if value
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer"))
    {
        Credential::MalformedBearer
    } else {
        Credential::Other
    }
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v
        && is_ows(*first)
    {
        v = rest;
    }
    while let [rest @ .., last] = v
        && is_ows(*last)
    {
        v = rest;
    }
    v
}

fn is_token68(v: &[u8]) -> bool {
    let body = v.iter().take_while(|b| **b != b'=').count();
    body > 0
        && v[..body].iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
        && v[body..].iter().all(|b| *b == b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anything_that_starts_like_bearer_is_judged_as_one() {
        assert_eq!(credential(b"Bearer a.b.c"), Credential::Bearer("a.b.c"));
        for v in ["Bearer\tjunk here", " bearer a b", "Bearerabc", "BEARER"] {
            assert_eq!(credential(v.as_bytes()), Credential::MalformedBearer, "{v}");
        }
        for v in ["Basic dXNlcjpwYXNz", "", "Digest x"] {
            assert_eq!(credential(v.as_bytes()), Credential::Other, "{v}");
        }
    }

    #[test]
    fn scheme_is_case_insensitive() {
        for v in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER abc.def.ghi",
            "BeArEr abc.def.ghi",
        ] {
            assert_eq!(bearer_token(v.as_bytes()), Some("abc.def.ghi"), "{v}");
        }
    }

    #[test]
    fn whitespace_run_and_trailing_ows() {
        assert_eq!(bearer_token(b"Bearer   a.b.c"), Some("a.b.c"));
        assert_eq!(bearer_token(b"Bearer\ta.b.c  "), Some("a.b.c"));
        assert_eq!(bearer_token(b"  Bearer a.b.c"), Some("a.b.c"));
        assert_eq!(bearer_token(b"Bearer abc=="), Some("abc=="));
    }

    #[test]
    fn refuses_everything_else() {
        for v in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Bearerabc",
            b"Basic dXNlcjpwYXNz",
            b"Bearer a b",
            b"Bearer a,b",
            b"Bearer a.b.c, realm=x",
            b"Bearer =abc",
            b"Bearer ab=c",
            b"Bearer a\"b",
            b"Bearer a\r\nb",
            b"Bearer \xff\xfe",
            b"Token a.b.c",
            b"Bearer\x0ba.b.c",
        ] {
            assert_eq!(bearer_token(v), None, "{:?}", String::from_utf8_lossy(v));
        }
    }
}
