use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Strict base64url without padding, as JWS compact form and JWK members use
/// (RFC 7515 §2). The engine also refuses non-zero trailing bits, so every
/// value has exactly one accepted spelling and tokens cannot be re-encoded
/// into look-alikes.
pub(crate) fn decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.as_bytes()).ok()
}

#[cfg(test)]
pub(crate) fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_padding_and_standard_alphabet() {
        assert_eq!(decode("YQ"), Some(b"a".to_vec()));
        assert_eq!(decode("YQ=="), None);
        assert_eq!(decode("+/8"), None);
        assert_eq!(decode("-_8"), Some(vec![0xfb, 0xff]));
        // "YR" carries non-zero trailing bits; only "YQ" spells "a".
        assert_eq!(decode("YR"), None);
        assert_eq!(decode("Y"), None);
    }
}
