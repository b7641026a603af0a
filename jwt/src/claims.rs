use serde_json::{Map, Value};

/// The verified payload of a token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims(Map<String, Value>);

impl Claims {
    /// A claim rendered so it can be copied into a request header.
    ///
    /// Strings come back as they are, numbers and booleans printed, and
    /// arrays of those joined with `,`. A path such as `realm.role` walks into
    /// nested objects, though a top-level claim whose own name contains dots
    /// (common for namespaced claims such as `https://example.com/roles`) wins
    /// over the walk. Absent claims, `null`, objects, arrays holding
    /// anything but scalars, and values with bytes an HTTP field value may
    /// not carry give `None`: forwarding a CR or LF would let a token author
    /// smuggle headers.
    pub fn get(&self, path: &str) -> Option<String> {
        let value = self.lookup(path)?;
        let text = match value {
            Value::Array(items) => {
                let parts = items.iter().map(scalar).collect::<Option<Vec<_>>>()?;
                parts.join(",")
            }
            other => scalar(other)?,
        };
        field_value_safe(&text).then_some(text)
    }

    /// The raw JSON value at `path`, under the same lookup rules as [`Claims::get`].
    pub fn value(&self, path: &str) -> Option<&Value> {
        self.lookup(path)
    }

    /// All claims.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    fn lookup(&self, path: &str) -> Option<&Value> {
        if let Some(v) = self.0.get(path) {
            return Some(v);
        }
        let mut segments = path.split('.');
        let mut current = self.0.get(segments.next()?)?;
        for segment in segments {
            current = current.as_object()?.get(segment)?;
        }
        Some(current)
    }
}

impl From<Map<String, Value>> for Claims {
    fn from(map: Map<String, Value>) -> Self {
        Claims(map)
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// RFC 9110 §5.5: field values are visible ASCII, SP, HTAB and obs-text.
fn field_value_safe(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        match v {
            Value::Object(m) => Claims(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn scalars_arrays_and_paths() {
        let c = claims(json!({
            "sub": "alice",
            "n": 42,
            "f": 1.5,
            "admin": true,
            "groups": ["a", "b", 3, false],
            "realm": {"role": "ops", "deep": {"x": "y"}, "list": ["p", "q"]},
            "https://example.com/tenant": "t1",
            "nothing": null,
            "mixed": ["a", {"b": 1}],
            "nested": [["a"]],
            "empty": [],
        }));
        assert_eq!(c.get("sub").as_deref(), Some("alice"));
        assert_eq!(c.get("n").as_deref(), Some("42"));
        assert_eq!(c.get("f").as_deref(), Some("1.5"));
        assert_eq!(c.get("admin").as_deref(), Some("true"));
        assert_eq!(c.get("groups").as_deref(), Some("a,b,3,false"));
        assert_eq!(c.get("realm.role").as_deref(), Some("ops"));
        assert_eq!(c.get("realm.deep.x").as_deref(), Some("y"));
        assert_eq!(c.get("realm.list").as_deref(), Some("p,q"));
        assert_eq!(c.get("https://example.com/tenant").as_deref(), Some("t1"));
        assert_eq!(c.get("empty").as_deref(), Some(""));
        for absent in [
            "realm",
            "realm.deep",
            "missing",
            "realm.missing",
            "sub.x",
            "nothing",
            "mixed",
            "nested",
            "",
            ".",
        ] {
            assert_eq!(c.get(absent), None, "{absent}");
        }
    }

    #[test]
    fn unsafe_bytes_give_none() {
        let c = claims(json!({
            "crlf": "a\r\nX-Admin: yes",
            "nul": "a\u{0}b",
            "del": "a\u{7f}",
            "bell": "a\u{7}",
            "arr": ["ok", "b\nad"],
            "tab": "a\tb",
            "utf8": "caf\u{e9}",
        }));
        for k in ["crlf", "nul", "del", "bell", "arr"] {
            assert_eq!(c.get(k), None, "{k}");
        }
        assert_eq!(c.get("tab").as_deref(), Some("a\tb"));
        assert_eq!(c.get("utf8").as_deref(), Some("caf\u{e9}"));
    }
}
