//! Serving a batch of JSON requests: parse each, run the valid ones
//! together, answer every request in order (a bad request gets its own
//! `invalid-request` error and does not fail the others).

use serde_json::{Map, Value};

use crate::{invalid, Error, Response};

/// A parsed request object with typed, named-key accessors.
pub struct Request(pub Map<String, Value>);

impl Request {
    /// Parses one request: a JSON object.
    pub fn parse(text: &str) -> Result<Request, Error> {
        match serde_json::from_str(text) {
            Ok(Value::Object(m)) => Ok(Request(m)),
            Ok(_) => Err(invalid("the request must be a JSON object")),
            Err(e) => Err(invalid(format!("not valid JSON: {e}"))),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A required string.
    pub fn str(&self, key: &str) -> Result<&str, Error> {
        self.opt_str(key)?
            .ok_or_else(|| invalid(format!("missing `{key}` (a string)")))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(format!("`{key}` must be a string"))),
        }
    }

    /// An optional non-negative integer.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| invalid(format!("`{key}` must be a non-negative integer"))),
        }
    }

    /// An optional list of strings (a single string is a list of one).
    pub fn opt_strings(&self, key: &str) -> Result<Option<Vec<String>>, Error> {
        let bad = || invalid(format!("`{key}` must be a string or a list of strings"));
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(bad()),
        }
    }

    /// Fails on keys outside `known` (a typo should not pass silently).
    pub fn only(&self, known: &[&str]) -> Result<(), Error> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(invalid(format!(
                "unknown key `{k}` (expected: {})",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

/// Answers `batch` in order: `parse` each request, then `run` the parsed
/// ones together; `run` returns one result per parsed request, or one error
/// that every one of them gets.
pub fn serve<R>(
    batch: Vec<String>,
    parse: impl Fn(Request) -> Result<R, Error>,
    run: impl FnOnce(Vec<R>) -> Result<Vec<Result<Response, Error>>, Error>,
) -> Vec<Result<Response, Error>> {
    let mut results: Vec<Option<Result<Response, Error>>> =
        (0..batch.len()).map(|_| None).collect();
    let mut parsed = Vec::new();
    let mut idx = Vec::new();
    for (i, req) in batch.iter().enumerate() {
        match Request::parse(req).and_then(&parse) {
            Ok(r) => {
                parsed.push(r);
                idx.push(i);
            }
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    if !parsed.is_empty() {
        match run(parsed) {
            Ok(answers) if answers.len() == idx.len() => {
                for (i, r) in idx.into_iter().zip(answers) {
                    results[i] = Some(r);
                }
            }
            Ok(answers) => {
                let e = crate::internal(format!(
                    "{} answers for {} requests",
                    answers.len(),
                    idx.len()
                ));
                for i in idx {
                    results[i] = Some(Err(e.clone()));
                }
            }
            Err(e) => {
                for i in idx {
                    results[i] = Some(Err(e.clone()));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(crate::internal("request lost"))))
        .collect()
}
