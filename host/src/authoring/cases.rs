//! Test cases of a skill: a JSON Lines file, one case per line.
//!
//! ```text
//! {"name": "two labels", "request": {"text": "I love it"}, "expect": {"labels": [...]},
//!  "tolerance": {"abs": 1e-4, "rel": 1e-4}, "ignore": ["timings"]}
//! {"name": "empty text", "request": {"text": ""}, "error": "invalid-request"}
//! {"name": "smoke", "request": {"text": "hello"}}
//! ```
//!
//! `expect` is the response the skill must give (numbers within the
//! tolerance, extra keys allowed: a skill may add keys), `error` the kind
//! of error it must answer with (or `{"kind", "message_contains"}`); a case
//! with neither only has to succeed, until `host test --record` fills in
//! what a trusted run answered. `ignore` names top-level response keys not
//! compared (`device`, `precision` and `timings` never are). Blank lines and
//! lines starting with `//` are skipped.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AuthoringError;
use crate::ErrorKind;

/// Keys never recorded or compared: set by the host, or timings.
pub const VOLATILE_KEYS: [&str; 3] = ["device", "precision", "timings"];

/// How far a number may be from its expected value: `|got - expected| <=
/// abs + rel * |expected|`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    #[serde(default = "default_abs")]
    pub abs: f64,
    #[serde(default = "default_rel")]
    pub rel: f64,
}

fn default_abs() -> f64 {
    1e-4
}

fn default_rel() -> f64 {
    1e-4
}

impl Default for Tolerance {
    /// fp32 fidelity (DESIGN: max-abs 1e-4), plus 1e-4 relative.
    fn default() -> Self {
        Tolerance {
            abs: default_abs(),
            rel: default_rel(),
        }
    }
}

/// What a case expects.
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    /// Any successful, schema-conformant response.
    Success,
    /// This response (within the tolerance).
    Response(Value),
    /// An error of this kind (`invalid-request`, ...), optionally with a
    /// message containing a text.
    Error {
        kind: ErrorKind,
        message_contains: Option<String>,
    },
}

/// One case.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub name: String,
    /// The request object.
    pub request: Value,
    pub expect: Expect,
    pub tolerance: Option<Tolerance>,
    /// Top-level response keys not compared.
    pub ignore: Vec<String>,
    /// 1-based line in the cases file.
    pub line: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    name: Option<String>,
    request: Value,
    #[serde(default)]
    expect: Option<Value>,
    #[serde(default)]
    error: Option<ErrorSpec>,
    #[serde(default)]
    tolerance: Option<Tolerance>,
    #[serde(default)]
    ignore: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorSpec {
    Kind(String),
    Full {
        kind: String,
        #[serde(default)]
        message_contains: Option<String>,
    },
}

/// Reads a cases file.
pub fn read(path: &Path) -> Result<Vec<Case>, AuthoringError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AuthoringError::io("cannot read the cases file", path, e))?;
    parse(path, &text)
}

/// Parses the text of a cases file (`path` names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<Vec<Case>, AuthoringError> {
    let mut cases = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with("//") {
            continue;
        }
        let fail = |message: String| AuthoringError::Cases {
            path: path.display().to_string(),
            message: format!("line {line}: {message}"),
        };
        let l: Line = serde_json::from_str(t).map_err(|e| {
            fail(format!(
                "{e} (a case is {{\"name\", \"request\", \"expect\" or \"error\", \"tolerance\", \"ignore\"}})"
            ))
        })?;
        if !l.request.is_object() {
            return Err(fail("`request` must be a JSON object".into()));
        }
        let expect = match (l.expect, l.error) {
            (Some(_), Some(_)) => {
                return Err(fail("give `expect` or `error`, not both".into()));
            }
            (Some(v), None) if v.is_object() => Expect::Response(v),
            (Some(_), None) => return Err(fail("`expect` must be a JSON object".into())),
            (None, Some(ErrorSpec::Kind(kind))) => Expect::Error {
                kind: error_kind(&kind).map_err(fail)?,
                message_contains: None,
            },
            (
                None,
                Some(ErrorSpec::Full {
                    kind,
                    message_contains,
                }),
            ) => Expect::Error {
                kind: error_kind(&kind).map_err(fail)?,
                message_contains,
            },
            (None, None) => Expect::Success,
        };
        if let Some(t) = &l.tolerance {
            if !(t.abs >= 0.0 && t.rel >= 0.0 && t.abs.is_finite() && t.rel.is_finite()) {
                return Err(fail("tolerances must be finite and non-negative".into()));
            }
        }
        cases.push(Case {
            name: l.name.unwrap_or_else(|| format!("line {line}")),
            request: l.request,
            expect,
            tolerance: l.tolerance,
            ignore: l.ignore,
            line,
        });
    }
    Ok(cases)
}

/// The [`ErrorKind`] a case names, or why it names none.
fn error_kind(name: &str) -> Result<ErrorKind, String> {
    name.parse().map_err(|e| {
        let kinds: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("{e} (one of: {})", kinds.join(", "))
    })
}

/// A case as one JSON line (keys in a fixed order).
pub fn to_line(case: &Case) -> String {
    let mut parts = vec![
        format!("\"name\":{}", Value::from(case.name.clone())),
        format!("\"request\":{}", case.request),
    ];
    match &case.expect {
        Expect::Success => {}
        Expect::Response(v) => parts.push(format!("\"expect\":{v}")),
        Expect::Error {
            kind,
            message_contains: None,
        } => parts.push(format!("\"error\":{}", Value::from(kind.as_str()))),
        Expect::Error {
            kind,
            message_contains: Some(m),
        } => parts.push(format!(
            "\"error\":{}",
            serde_json::json!({ "kind": kind, "message_contains": m })
        )),
    }
    if let Some(t) = &case.tolerance {
        parts.push(format!(
            "\"tolerance\":{}",
            serde_json::json!({ "abs": t.abs, "rel": t.rel })
        ));
    }
    if !case.ignore.is_empty() {
        parts.push(format!("\"ignore\":{}", Value::from(case.ignore.clone())));
    }
    format!("{{{}}}", parts.join(","))
}

/// Writes `cases` to `path`, one line each (through a temporary file).
pub fn write(path: &Path, cases: &[Case]) -> Result<(), AuthoringError> {
    let mut text = String::new();
    for c in cases {
        text.push_str(&to_line(c));
        text.push('\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| AuthoringError::io("cannot write the cases file", path, e))
}

/// The part of a response a case records and compares: everything but
/// [`VOLATILE_KEYS`] and the case's `ignore` keys.
pub fn comparable(response: &Value, ignore: &[String]) -> Value {
    match response {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !VOLATILE_KEYS.contains(&k.as_str()) && !ignore.iter().any(|i| i == *k)
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_writes_it_back() {
        let text = r#"
// comment
{"name":"a","request":{"text":"x"},"expect":{"labels":[{"label":"A","score":0.5}]},"tolerance":{"abs":0.001}}
{"request":{"text":""},"error":"invalid-request"}
{"name":"c","request":{"text":"y"},"error":{"kind":"unsupported","message_contains":"pair"},"ignore":["tokens"]}
{"name":"d","request":{"text":"z"}}
"#;
        let p = Path::new("cases.jsonl");
        let cases = parse(p, text).unwrap();
        assert_eq!(cases.len(), 4);
        assert_eq!(cases[1].name, "line 4");
        assert_eq!(cases[0].tolerance.unwrap().rel, 1e-4);
        assert!(matches!(cases[3].expect, Expect::Success));
        let again: Vec<Case> = cases
            .iter()
            .map(|c| parse(p, &to_line(c)).unwrap().remove(0))
            .collect();
        for (a, b) in cases.iter().zip(&again) {
            assert_eq!(
                (&a.name, &a.request, &a.expect),
                (&b.name, &b.request, &b.expect)
            );
        }
    }

    #[test]
    fn bad_lines_name_their_line() {
        let p = Path::new("c.jsonl");
        for bad in [
            r#"{"request":"text"}"#,
            r#"{"request":{},"expect":{},"error":"x"}"#,
            r#"{"request":{},"expected":{}}"#,
            r#"{"request":{},"tolerance":{"abs":-1}}"#,
            "not json",
        ] {
            let e = parse(p, &format!("\n{bad}")).unwrap_err().to_string();
            assert!(e.contains("line 2"), "{e}");
        }
        let e = parse(p, r#"{"request":{},"error":{"kind":"oops"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown error kind `oops`"), "{e}");
        assert!(e.contains("invalid-request"), "{e}");
    }
}
