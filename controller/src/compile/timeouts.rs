//! `HTTPRouteRule.timeouts` (Gateway API GEP-1742): `request` and
//! `backendRequest` as Gateway API Durations, `^([0-9]{1,5}(h|m|s|ms)){1,4}$`
//! ("1h", "30s", "500ms", "1m30s"). "0s" disables a timeout, and
//! `backendRequest` may not be longer than `request` when both are set.

use crate::k8s::Timeouts;

/// (request, backendRequest) in milliseconds, 0 for none. `Err` names the
/// field.
pub fn rule_timeouts(index: usize, timeouts: Option<&Timeouts>) -> Result<(u32, u32), String> {
    let Some(t) = timeouts else {
        return Ok((0, 0));
    };
    let field = |key: &str| format!("spec.rules[{index}].timeouts.{key}");
    let parse = |key: &str, value: Option<&str>| {
        value
            .map(|v| {
                parse_duration(v)
                    .ok_or_else(|| format!("{}: {v:?} is not a Gateway API duration", field(key)))
            })
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let request = parse("request", t.request.as_deref())?;
    let backend = parse("backendRequest", t.backend_request.as_deref())?;
    if request != 0 && backend > request {
        return Err(format!(
            "{}: {backend} ms is longer than timeouts.request ({request} ms)",
            field("backendRequest")
        ));
    }
    Ok((request, backend))
}

/// Milliseconds of a Gateway API Duration, if it is one (saturating at
/// u32::MAX).
pub fn parse_duration(value: &str) -> Option<u32> {
    let mut rest = value.as_bytes();
    let mut total: u64 = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if !(1..=5).contains(&digits) {
            return None;
        }
        let number: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = match rest {
            [b'm', b's', ..] => (1, 2),
            [b'h', ..] => (3_600_000, 1),
            [b'm', ..] => (60_000, 1),
            [b's', ..] => (1_000, 1),
            _ => return None,
        };
        rest = &rest[len..];
        total += number * unit;
        parts += 1;
    }
    if !(1..=4).contains(&parts) {
        return None;
    }
    // Longer than u32 milliseconds (about 49 days) is as good as none.
    Some(u32::try_from(total).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_follow_the_gateway_api_format() {
        assert_eq!(parse_duration("500ms"), Some(500));
        assert_eq!(parse_duration("1s"), Some(1_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000));
        assert_eq!(parse_duration("0s"), Some(0));
        assert_eq!(parse_duration("1h1m1s1ms"), Some(3_661_001));
        assert_eq!(parse_duration("99999h"), Some(u32::MAX));
        for bad in [
            "",
            "1",
            "s",
            "1.5s",
            "123456s",
            "1d",
            "-1s",
            "1h1m1s1ms1ms",
            "10 s",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
