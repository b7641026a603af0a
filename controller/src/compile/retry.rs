//! `HTTPRouteRule.retry` (Gateway API GEP-1731, experimental channel):
//! `codes` (400..=599; 500, 502, 503 and 504 must be supported), `attempts`
//! (retries after the first request, at least 1) and `backoff` (a Gateway
//! API Duration, the least wait before a retry).
//!
//! What the spec leaves to implementations: without `attempts`, a request is
//! retried [`DEFAULT_ATTEMPTS`] times; without `backoff`, the first retry
//! waits [`DEFAULT_BACKOFF_MS`]; `attempts` above [`MAX_ATTEMPTS`] is held
//! to it, so that one client request never turns into an unbounded number
//! of upstream requests.

use gatehouse_snapshot::{MAX_RETRY_ATTEMPTS as MAX_ATTEMPTS, MAX_RETRY_BACKOFF_MS, Retry};

use crate::compile::timeouts::parse_duration;
use crate::k8s::Retry as RetrySpec;

pub const DEFAULT_ATTEMPTS: u32 = 2;
pub const DEFAULT_BACKOFF_MS: u32 = 25;

/// The rule's retry policy, `None` without a `retry` stanza. `Err` names
/// the field.
pub fn rule_retry(index: usize, retry: Option<&RetrySpec>) -> Result<Option<Retry>, String> {
    let Some(retry) = retry else {
        return Ok(None);
    };
    let field = |key: &str| format!("spec.rules[{index}].retry.{key}");
    let mut codes = Vec::new();
    for (i, &code) in retry.codes.iter().flatten().enumerate() {
        let code = u32::try_from(code)
            .ok()
            .filter(|c| (400..=599).contains(c))
            .ok_or_else(|| {
                format!(
                    "{}: {code} is not an HTTP status code in 400..=599",
                    field(&format!("codes[{i}]"))
                )
            })?;
        codes.push(code);
    }
    // A set: order and repeats carry no meaning, and the snapshot stays
    // the same for the same set.
    codes.sort_unstable();
    codes.dedup();
    let attempts = match retry.attempts {
        None => DEFAULT_ATTEMPTS,
        Some(n) if n >= 1 => u32::try_from(n).unwrap_or(u32::MAX).min(MAX_ATTEMPTS),
        Some(n) => return Err(format!("{}: {n} is less than 1", field("attempts"))),
    };
    let backoff_ms = match retry.backoff.as_deref() {
        None => DEFAULT_BACKOFF_MS,
        Some(value) => parse_duration(value)
            .ok_or_else(|| {
                format!(
                    "{}: {value:?} is not a Gateway API duration",
                    field("backoff")
                )
            })?
            .min(MAX_RETRY_BACKOFF_MS),
    };
    Ok(Some(Retry {
        codes,
        attempts,
        backoff_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(codes: &[i64], attempts: Option<i64>, backoff: Option<&str>) -> RetrySpec {
        RetrySpec {
            codes: Some(codes.to_vec()),
            attempts,
            backoff: backoff.map(str::to_owned),
        }
    }

    #[test]
    fn a_retry_stanza_becomes_a_sorted_set_of_codes_with_defaults() {
        let retry = rule_retry(0, Some(&spec(&[503, 500, 503], None, None)))
            .unwrap()
            .unwrap();
        assert_eq!(retry.codes, [500, 503]);
        assert_eq!(retry.attempts, DEFAULT_ATTEMPTS);
        assert_eq!(retry.backoff_ms, DEFAULT_BACKOFF_MS);
        assert_eq!(rule_retry(0, None), Ok(None));
    }

    #[test]
    fn attempts_and_backoff_are_taken_and_attempts_held_to_the_cap() {
        let retry = rule_retry(0, Some(&spec(&[500], Some(3), Some("1s100ms"))))
            .unwrap()
            .unwrap();
        assert_eq!((retry.attempts, retry.backoff_ms), (3, 1_100));
        let many = rule_retry(0, Some(&spec(&[500], Some(1_000_000), Some("9999h"))))
            .unwrap()
            .unwrap();
        assert_eq!(many.attempts, MAX_ATTEMPTS);
        assert_eq!(many.backoff_ms, MAX_RETRY_BACKOFF_MS);
    }

    #[test]
    fn invalid_values_name_their_field() {
        let err = rule_retry(2, Some(&spec(&[500, 200], None, None))).unwrap_err();
        assert!(
            err.starts_with("spec.rules[2].retry.codes[1]: 200"),
            "{err}"
        );
        let err = rule_retry(0, Some(&spec(&[], Some(0), None))).unwrap_err();
        assert!(err.starts_with("spec.rules[0].retry.attempts"), "{err}");
        let err = rule_retry(0, Some(&spec(&[], None, Some("1.5s")))).unwrap_err();
        assert!(err.starts_with("spec.rules[0].retry.backoff"), "{err}");
    }
}
