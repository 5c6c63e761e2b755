//! The host's own checks, which every skill must pass whatever its cases:
//! a valid `describe` (names, schemas that are JSON Schemas), responses
//! that conform to the declared response schema, and bad requests (derived
//! from the declared request schema) answered with typed errors. The checks
//! that need a running skill (answers in order, recovery from a trap,
//! resource limits) are driven by [`super::test`].

use serde_json::{json, Value};

use crate::sandbox::SkillInfo;

/// The compiled schemas of a skill.
pub struct Schemas {
    pub request: jsonschema::Validator,
    pub response: jsonschema::Validator,
    /// The request schema as JSON (bad requests are derived from it).
    pub request_json: Value,
}

/// Problems with what `describe` returned (empty: none), and the schemas
/// when they compile. `again` is a second call's answer, which must be the
/// same.
pub fn describe(info: &SkillInfo, again: &SkillInfo) -> (Vec<String>, Option<Schemas>) {
    let mut problems = Vec::new();
    if info.name.is_empty()
        || !info
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        problems.push(format!(
            "name {:?} must be non-empty lower-case letters, digits and '-'",
            info.name
        ));
    }
    if info.task.trim().is_empty() {
        problems.push("task is empty".into());
    }
    if info.version.trim().is_empty() {
        problems.push("version is empty".into());
    }
    if info.architectures.iter().any(|a| a.trim().is_empty()) {
        problems.push("an architecture (model_type) is empty".into());
    }
    if (
        &info.name,
        &info.task,
        &info.architectures,
        &info.request_schema,
        &info.response_schema,
        &info.version,
    ) != (
        &again.name,
        &again.task,
        &again.architectures,
        &again.request_schema,
        &again.response_schema,
        &again.version,
    ) {
        problems.push("a second `describe` answered differently".into());
    }
    let needs = crate::sandbox::Needs::of(info);
    if needs != crate::sandbox::Needs::of(again) {
        problems.push("a second `describe` declared other limits".into());
    }
    if needs.memory_bytes == Some(0) {
        problems.push("limits: memory-mib is 0 (leave it `none` for the default)".into());
    }
    if needs.fuel_per_call == Some(0) {
        problems.push("limits: fuel-per-call is 0 (leave it `none` for the default)".into());
    }
    let request = compile("request", &info.request_schema, &mut problems);
    let response = compile("response", &info.response_schema, &mut problems);
    let schemas = match (request, response) {
        (Some((request, request_json)), Some((response, _))) => Some(Schemas {
            request,
            response,
            request_json,
        }),
        _ => None,
    };
    (problems, schemas)
}

fn compile(
    which: &str,
    text: &str,
    problems: &mut Vec<String>,
) -> Option<(jsonschema::Validator, Value)> {
    let schema: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            problems.push(format!("{which} schema is not a JSON object"));
            return None;
        }
        Err(e) => {
            problems.push(format!("{which} schema is not JSON: {e}"));
            return None;
        }
    };
    if let Err(e) = jsonschema::meta::validate(&schema) {
        problems.push(format!("{which} schema is not a valid JSON Schema: {e}"));
        return None;
    }
    if schema.get("type").is_some_and(|t| t != "object") {
        problems.push(format!(
            "{which} schema must describe a JSON object (its `type` is {})",
            schema["type"]
        ));
    }
    match jsonschema::validator_for(&schema) {
        Ok(v) => Some((v, schema)),
        Err(e) => {
            problems.push(format!("{which} schema does not compile: {e}"));
            None
        }
    }
}

/// Why `instance` does not conform to `schema` (at most 5 reasons).
pub fn violations(schema: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    schema
        .iter_errors(instance)
        .take(5)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("at {}: {e}", if at.is_empty() { "/" } else { &at })
        })
        .collect()
}

/// Requests that break the request schema, each with what is wrong:
/// an empty object (when fields are required), and `probe` (a request the
/// skill answered) with one string field given a number and one enum
/// field given a value outside it. Only requests the schema itself
/// rejects are returned.
pub fn bad_requests(schemas: &Schemas, probe: Option<&Value>) -> Vec<(String, Value)> {
    let schema = &schemas.request_json;
    let props = schema["properties"].as_object();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = vec![("an empty request".to_string(), json!({}))];
    let base = probe.cloned().unwrap_or_else(|| json!({}));
    if let Some(props) = props {
        // A string field: required ones first, then ones the probe uses.
        let mut strings: Vec<&String> = props
            .iter()
            .filter(|(_, p)| p["type"] == "string")
            .map(|(k, _)| k)
            .collect();
        strings.sort_by_key(|k| {
            (
                !required.contains(&k.as_str()),
                base.get(k.as_str()).is_none(),
            )
        });
        if let Some(k) = strings.first() {
            let mut r = base.clone();
            r[k.as_str()] = json!(12345);
            out.push((format!("`{k}` given a number instead of a string"), r));
        }
        let enum_field = props.iter().find(|(_, p)| {
            p["enum"]
                .as_array()
                .is_some_and(|e| !e.is_empty() && e.iter().all(Value::is_string))
        });
        if let Some((k, _)) = enum_field {
            let mut r = base.clone();
            r[k.as_str()] = json!("no-such-choice");
            out.push((format!("`{k}` outside its enum"), r));
        }
    }
    out.retain(|(_, r)| !schemas.request.is_valid(r));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(req: &str, resp: &str) -> SkillInfo {
        SkillInfo {
            name: "demo".into(),
            task: "text-classification".into(),
            architectures: vec!["bert".into()],
            request_schema: req.into(),
            response_schema: resp.into(),
            version: "0.1.0".into(),
            limits: None,
        }
    }

    #[test]
    fn describe_checks_names_and_schemas() {
        let good = info(
            r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string"},"mode":{"enum":["a","b"]}}}"#,
            r#"{"type":"object"}"#,
        );
        let (p, s) = describe(&good, &good);
        assert!(p.is_empty(), "{p:?}");
        let s = s.unwrap();
        let bad = bad_requests(&s, Some(&json!({"text": "hi"})));
        let labels: Vec<&str> = bad.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels.len(), 3, "{labels:?}");
        assert_eq!(bad[1].1, json!({"text": 12345}));
        assert_eq!(bad[2].1, json!({"text": "hi", "mode": "no-such-choice"}));
        let mut broken = info(r#"{"type":"wrong"}"#, "not json");
        broken.name = "Bad Name".into();
        let (p, s) = describe(&broken, &good);
        assert!(s.is_none());
        assert_eq!(p.len(), 4, "{p:?}");
    }

    #[test]
    fn describe_checks_declared_limits() {
        let mut a = info(r#"{"type":"object"}"#, r#"{"type":"object"}"#);
        a.limits = Some(crate::sandbox::ResourceNeeds {
            memory_mib: Some(64),
            fuel_per_call: None,
        });
        let (p, _) = describe(&a, &a.clone());
        assert!(p.is_empty(), "{p:?}");
        let mut zero = a.clone();
        zero.limits = Some(crate::sandbox::ResourceNeeds {
            memory_mib: Some(0),
            fuel_per_call: Some(0),
        });
        let (p, _) = describe(&zero, &a);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("declared other limits"), "{p:?}");
        assert!(p[1].contains("memory-mib is 0"), "{p:?}");
        assert!(p[2].contains("fuel-per-call is 0"), "{p:?}");
    }

    #[test]
    fn violations_name_the_place() {
        let v = jsonschema::validator_for(
            &json!({"type":"object","properties":{"labels":{"type":"array","items":{"type":"object","properties":{"score":{"type":"number"}}}}}}),
        )
        .unwrap();
        let e = violations(&v, &json!({"labels": [{"score": "high"}]}));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("at /labels/0/score"), "{e:?}");
    }
}
