//! `requestLimits`: header size and count (431), body size (413). The body
//! limit is checked against Content-Length at once and counted as the body
//! streams (see `proxy::request_body::Limited`), so a chunked or HTTP/2
//! body without a length is cut off as soon as it passes the limit.

use http::{HeaderMap, StatusCode};

#[derive(Debug)]
pub struct RequestLimits {
    max_header_bytes: usize,
    max_header_count: usize,
    pub max_body_bytes: Option<u64>,
}

/// Per header line: ": " and CRLF around name and value, as on the wire.
const LINE_OVERHEAD: usize = 4;

impl RequestLimits {
    pub fn build(spec: &gatehouse_snapshot::RequestLimits) -> Self {
        let limit = |v: u32| if v == 0 { usize::MAX } else { v as usize };
        RequestLimits {
            max_header_bytes: limit(spec.max_header_bytes),
            max_header_count: limit(spec.max_header_count),
            max_body_bytes: spec.max_body_bytes,
        }
    }

    /// The status refusing these headers, if they break a limit.
    pub fn check(&self, headers: &HeaderMap) -> Option<StatusCode> {
        if headers.len() > self.max_header_count {
            return Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        if self.max_header_bytes != usize::MAX {
            let bytes: usize = headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + LINE_OVERHEAD)
                .sum();
            if bytes > self.max_header_bytes {
                return Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
        }
        let max_body = self.max_body_bytes?;
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(length) if length > max_body => Some(StatusCode::PAYLOAD_TOO_LARGE),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(bytes: u32, count: u32, body: Option<u64>) -> RequestLimits {
        RequestLimits::build(&gatehouse_snapshot::RequestLimits {
            max_header_bytes: bytes,
            max_header_count: count,
            max_body_bytes: body,
        })
    }

    #[test]
    fn header_count_and_size_limits_answer_431() {
        let mut h = HeaderMap::new();
        h.insert("a", "1".parse().unwrap());
        h.insert("b", "2".parse().unwrap());
        assert_eq!(limits(0, 2, None).check(&h), None);
        assert_eq!(
            limits(0, 1, None).check(&h),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        // Each header is 1 + 1 + 4 bytes.
        assert_eq!(limits(12, 0, None).check(&h), None);
        assert_eq!(
            limits(11, 0, None).check(&h),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }

    #[test]
    fn declared_body_over_the_limit_answers_413() {
        let mut h = HeaderMap::new();
        h.insert("content-length", "11".parse().unwrap());
        assert_eq!(limits(0, 0, Some(11)).check(&h), None);
        assert_eq!(
            limits(0, 0, Some(10)).check(&h),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }
}
