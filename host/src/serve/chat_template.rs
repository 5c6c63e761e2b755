//! A model's chat template, rendered as transformers' `apply_chat_template`
//! does: the Jinja source from `chat_template.jinja`, `chat_template.json` or
//! `tokenizer_config.json` (a string, or named templates: `tool_use` when
//! tools are given and the model has one, else `default`), with
//! `trim_blocks` and `lstrip_blocks`, loop controls, Python string and dict
//! methods, `raise_exception`, `strftime_now`, transformers' `tojson`
//! (`json.dumps`: `", "`/`": "` separators, no HTML escaping, keys in their
//! order), and the special tokens of tokenizer_config.json as variables.
//! Templates come from model files, so rendering runs on a fuel budget.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Template instructions one rendering may execute.
const FUEL: u64 = 20_000_000;

/// Chat-template failures.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("the chat template does not compile: {0}")]
    Compile(String),
    /// The template refused the conversation (`raise_exception`) or failed
    /// on it (a missing key, a wrong type).
    #[error("the chat template refused the conversation: {0}")]
    Render(String),
}

/// A loaded chat template and the special tokens it may use.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Named templates besides the default (`tool_use`, ...).
    named: Vec<String>,
    /// `bos_token`, `eos_token`, ... as tokenizer_config.json names them.
    pub special_tokens: Vec<(String, String)>,
}

/// A JSON value read with its object keys in document order (Python dicts
/// keep insertion order; templates and `tojson` show it).
pub struct Ordered(pub Value);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(n)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(n)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(s)))
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(())))
            }
            fn visit_none<E>(self) -> Result<Ordered, E> {
                Ok(Ordered(Value::from(())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(Ordered(x)) = a.next_element()? {
                    items.push(x);
                }
                Ok(Ordered(Value::from(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut pairs: Vec<(String, Value)> = Vec::new();
                while let Some((k, Ordered(x))) = a.next_entry::<String, Ordered>()? {
                    pairs.push((k, x));
                }
                Ok(Ordered(Value::from_pairs(pairs)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A special token of tokenizer_config.json: a string or an AddedToken
/// object with `content`.
fn token_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl ChatTemplate {
    /// The template of a model directory's files, given their texts (each
    /// `None` when absent); `Ok(None)` when the model has no chat template.
    pub fn from_files(
        jinja: Option<String>,
        json: Option<String>,
        tokenizer_config: Option<String>,
    ) -> Result<Option<ChatTemplate>, TemplateError> {
        let parse = |file: &str, text: &str| {
            serde_json::from_str::<serde_json::Value>(text).map_err(|e| TemplateError::File {
                file: file.into(),
                message: format!("not valid JSON: {e}"),
            })
        };
        let config = match &tokenizer_config {
            Some(t) => parse("tokenizer_config.json", t)?,
            None => serde_json::Value::Null,
        };
        let from_json = match &json {
            Some(t) => parse("chat_template.json", t)?
                .get("chat_template")
                .cloned()
                .unwrap_or(serde_json::Value::Null),
            None => serde_json::Value::Null,
        };
        let source = match jinja {
            Some(s) => serde_json::Value::String(s),
            None if !from_json.is_null() => from_json,
            None => config
                .get("chat_template")
                .cloned()
                .unwrap_or(serde_json::Value::Null),
        };
        let templates: Vec<(String, String)> = match source {
            serde_json::Value::Null => return Ok(None),
            serde_json::Value::String(s) => vec![("default".into(), s)],
            serde_json::Value::Array(list) => list
                .iter()
                .map(|t| {
                    let name = t.get("name").and_then(|n| n.as_str());
                    let src = t.get("template").and_then(|n| n.as_str());
                    match (name, src) {
                        (Some(n), Some(s)) => Ok((n.to_string(), s.to_string())),
                        _ => Err(TemplateError::File {
                            file: "tokenizer_config.json".into(),
                            message: "a `chat_template` list entry needs `name` and `template`"
                                .into(),
                        }),
                    }
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(TemplateError::File {
                    file: "tokenizer_config.json".into(),
                    message: "`chat_template` must be a string or a list of named templates".into(),
                })
            }
        };
        let special_tokens = [
            "bos_token",
            "eos_token",
            "unk_token",
            "pad_token",
            "sep_token",
            "cls_token",
            "mask_token",
        ]
        .iter()
        .filter_map(|k| Some((k.to_string(), token_text(config.get(*k)?)?)))
        .collect();
        let mut env = environment();
        let mut named = Vec::new();
        for (name, src) in templates {
            env.add_template_owned(name.clone(), src)
                .map_err(|e| TemplateError::Compile(describe(&e)))?;
            named.push(name);
        }
        Ok(Some(ChatTemplate {
            env,
            named,
            special_tokens,
        }))
    }

    /// The special token `name` (`bos_token`, ...), if the model has one.
    pub fn token(&self, name: &str) -> Option<&str> {
        self.special_tokens
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Renders a conversation (`messages`, and `tools` or none) with
    /// `add_generation_prompt`.
    pub fn render(
        &self,
        messages: Value,
        tools: Option<Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let has = |n: &str| self.named.iter().any(|x| x == n);
        let name = match (&tools, has("tool_use"), has("default")) {
            (Some(_), true, _) => "tool_use",
            (_, _, true) => "default",
            _ => self.named.first().map(String::as_str).unwrap_or("default"),
        };
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| TemplateError::Compile(describe(&e)))?;
        let mut ctx: Vec<(String, Value)> = vec![
            ("messages".into(), messages),
            ("tools".into(), tools.unwrap_or(Value::from(()))),
            ("documents".into(), Value::from(())),
            (
                "add_generation_prompt".into(),
                Value::from(add_generation_prompt),
            ),
        ];
        for (k, v) in &self.special_tokens {
            ctx.push((k.clone(), Value::from(v.as_str())));
        }
        tmpl.render(Value::from_pairs(ctx))
            .map_err(|e| TemplateError::Render(describe(&e)))
    }
}

/// An error's message without minijinja's source excerpt.
fn describe(e: &JinjaError) -> String {
    match (e.kind(), e.detail()) {
        (ErrorKind::InvalidOperation, Some(d)) => d.to_string(),
        (_, Some(d)) => format!("{}: {d}", e.kind()),
        (k, None) => k.to_string(),
    }
}

/// The environment transformers renders chat templates in.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.set_fuel(Some(FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<Value, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_function("strftime_now", |fmt: String| strftime(&fmt, unix_now()));
    env.add_filter("tojson", tojson);
    env
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent,
/// sort_keys=sort_keys)`.
fn tojson(v: Value, kwargs: Kwargs) -> Result<Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    dump(&v, indent, sort_keys.unwrap_or(false), 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn dump(
    v: &Value,
    indent: Option<usize>,
    sort: bool,
    depth: usize,
    out: &mut String,
) -> Result<(), JinjaError> {
    if depth > 64 {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            "tojson: nested too deeply",
        ));
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => match v.as_i64() {
            Some(i) if v.is_integer() => out.push_str(&i.to_string()),
            _ => out.push_str(&py_float(f64::try_from(v.clone()).unwrap_or(f64::NAN))),
        },
        ValueKind::String => out.push_str(&json_str(v.as_str().unwrap_or(""))),
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if sort {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                match k.as_str() {
                    Some(s) => out.push_str(&json_str(s)),
                    None => out.push_str(&json_str(&k.to_string())),
                }
                out.push_str(": ");
                dump(&v.get_item(k)?, indent, sort, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                dump(x, indent, sort, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        _ => {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialise a {} value", v.kind()),
            ))
        }
    }
    Ok(())
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Python's `repr` of a float, as `json.dumps` writes it.
fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        // Python: shortest digits in exponent form, two-digit exponent.
        let s = format!("{x:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{m}e{sign}{:02}", e.abs());
    }
    format!("{x:?}")
}

/// `strftime` for the UTC time `secs` (the directives chat templates use:
/// `%d %m %Y %y %B %b %A %a %H %M %S %j %%`).
fn strftime(fmt: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let day = doy_mar - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let mname = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('B') => out.push_str(mname),
            Some('b') => out.push_str(&mname[..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{:02}", tod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", tod / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", tod % 60)),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        template: String,
        bos_token: String,
        eos_token: String,
        messages: Ordered,
        tools: Option<Ordered>,
        expected: Option<String>,
        error: Option<String>,
    }

    /// Every case of tests/fixtures/chat_templates.json renders as
    /// transformers' `apply_chat_template` did (or fails where it failed).
    #[test]
    fn renders_as_transformers() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/chat_templates.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
        assert!(cases.len() >= 10);
        for c in cases {
            let config = serde_json::json!({
                "bos_token": c.bos_token, "eos_token": { "content": c.eos_token },
                "chat_template": c.template,
            });
            let t = ChatTemplate::from_files(None, None, Some(config.to_string()))
                .unwrap()
                .unwrap();
            let label = format!("{} {}", c.name, c.messages.0);
            let got = t.render(c.messages.0, c.tools.map(|t| t.0), true);
            match (c.expected, c.error) {
                (Some(want), _) => assert_eq!(got.map_err(|e| e.to_string()), Ok(want), "{label}"),
                (None, Some(msg)) => {
                    let e = got.expect_err("transformers failed here").to_string();
                    if msg.contains("alternate") || msg.contains("unknown role") {
                        assert!(e.contains(&msg), "{e} vs {msg}");
                    }
                }
                _ => panic!("case without expectation"),
            }
        }
    }

    #[test]
    fn files_and_named_templates() {
        assert!(ChatTemplate::from_files(None, None, Some("{}".into()))
            .unwrap()
            .is_none());
        let config = r#"{"chat_template": [{"name": "default", "template": "D{{ tools }}"},
            {"name": "tool_use", "template": "T"}], "bos_token": "<s>"}"#;
        let t = ChatTemplate::from_files(None, None, Some(config.into()))
            .unwrap()
            .unwrap();
        assert_eq!(t.render(Value::from(()), None, true).unwrap(), "DNone");
        assert_eq!(
            t.render(Value::from(()), Some(Value::from(1)), true)
                .unwrap(),
            "T"
        );
        assert_eq!(t.token("bos_token"), Some("<s>"));
        // chat_template.jinja wins over tokenizer_config.json.
        let t = ChatTemplate::from_files(Some("J".into()), None, Some(config.into()))
            .unwrap()
            .unwrap();
        assert_eq!(t.render(Value::from(()), None, true).unwrap(), "J");
        assert!(
            ChatTemplate::from_files(Some("{% for %}".into()), None, None).is_err(),
            "a bad template fails at load"
        );
        let t = ChatTemplate::from_files(
            Some("{% for i in range(100000000) %}x{% endfor %}".into()),
            None,
            None,
        )
        .unwrap()
        .unwrap();
        assert!(
            t.render(Value::from(()), None, true).is_err(),
            "fuel runs out"
        );
    }

    #[test]
    fn python_formats() {
        assert_eq!(py_float(2.5), "2.5");
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(1e20), "1e+20");
        assert_eq!(py_float(1.5e-7), "1.5e-07");
        // 2024-07-23 12:34:56 UTC, a Tuesday.
        assert_eq!(
            strftime("%d %b %Y %A %H:%M:%S %j %y %B %%", 1_721_738_096),
            "23 Jul 2024 Tuesday 12:34:56 205 24 July %"
        );
    }
}
