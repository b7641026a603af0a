//! The Date field value for the responses the proxy writes itself,
//! formatted once per second per thread rather than once per response.

use std::{
    cell::RefCell,
    time::{SystemTime, UNIX_EPOCH},
};

/// An IMF-fixdate (RFC 9110 §5.6.7) is always this long.
const LEN: usize = 29;

thread_local! {
    static CACHED: RefCell<(u64, [u8; LEN])> = const { RefCell::new((u64::MAX, [0; LEN])) };
}

/// Appends the current time as an HTTP date.
pub fn append(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(cached_second, text)| {
        if *cached_second != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == LEN {
                text.copy_from_slice(formatted.as_bytes());
                *cached_second = second;
            }
        }
        out.extend_from_slice(text);
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn is_the_current_http_date() {
        let mut out = Vec::new();
        super::append(&mut out);
        let parsed = httpdate::parse_http_date(std::str::from_utf8(&out).unwrap()).unwrap();
        let off = std::time::SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_default();
        assert!(off.as_secs() <= 1, "{off:?}");
    }
}
