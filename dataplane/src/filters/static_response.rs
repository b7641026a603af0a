//! `staticResponse`: an answer the gateway gives without a backend.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

use super::Local;

#[derive(Debug)]
pub struct StaticResponse {
    status: StatusCode,
    headers: Box<[(HeaderName, HeaderValue)]>,
    body: Bytes,
}

impl StaticResponse {
    pub fn build(spec: &gatehouse_snapshot::StaticResponse) -> Result<Self, String> {
        let status = u16::try_from(spec.status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .filter(|s| (200..=599).contains(&s.as_u16()))
            .ok_or_else(|| format!("status {} is outside 200..=599", spec.status))?;
        let mut headers = Vec::with_capacity(spec.headers.len() + 1);
        for h in &spec.headers {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("header name {:?} is invalid", h.name))?;
            let value = HeaderValue::from_str(&h.value)
                .map_err(|_| format!("header {:?} has an invalid value", h.name))?;
            headers.push((name, value));
        }
        if !headers.iter().any(|(n, _)| n == http::header::CONTENT_TYPE) {
            headers.push((
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            ));
        }
        Ok(StaticResponse {
            status,
            headers: headers.into(),
            body: Bytes::copy_from_slice(&spec.body),
        })
    }

    pub fn answer(&self) -> Local {
        Local {
            status: self.status,
            headers: self.headers.to_vec(),
            body: self.body.clone(),
        }
    }
}
