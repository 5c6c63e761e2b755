//! Comparing a response with its expectation: a readable list of
//! differences, each with its JSON path.
//!
//! Integers compare exactly, other numbers within a [`Tolerance`]; strings,
//! booleans and nulls exactly; arrays by length and element; objects by
//! the expected keys (a response may carry more keys). A long array of
//! numbers that differs is summarised in one line (how many elements are
//! out of tolerance, the largest difference and where, the cosine).

use serde_json::Value;

use super::cases::Tolerance;

/// Differences listed before the rest are counted.
const MAX_DIFFS: usize = 8;

/// Arrays of numbers at least this long are summarised, not listed.
const SUMMARY_LEN: usize = 8;

/// Differences between `expected` and `got`, empty when they match.
pub fn diff(expected: &Value, got: &Value, tol: Tolerance) -> Vec<String> {
    let mut out = Vec::new();
    walk("$", expected, got, tol, &mut out);
    if out.len() > MAX_DIFFS {
        let more = out.len() - MAX_DIFFS;
        out.truncate(MAX_DIFFS);
        out.push(format!("... and {more} more differences"));
    }
    out
}

fn within(e: f64, g: f64, tol: Tolerance) -> bool {
    (g - e).abs() <= tol.abs + tol.rel * e.abs() || (e.is_nan() && g.is_nan())
}

fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

/// A value in a diff line: JSON, cut to 60 characters.
fn show(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s,
    }
}

fn walk(path: &str, e: &Value, g: &Value, tol: Tolerance, out: &mut Vec<String>) {
    match (e, g) {
        (Value::Number(en), Value::Number(gn)) => {
            if is_integer(e) && is_integer(g) {
                if en != gn {
                    out.push(format!("{path}: expected {en}, got {gn}"));
                }
                return;
            }
            let (ef, gf) = (
                en.as_f64().unwrap_or(f64::NAN),
                gn.as_f64().unwrap_or(f64::NAN),
            );
            if !within(ef, gf, tol) {
                out.push(format!(
                    "{path}: expected {ef}, got {gf} (|diff| {:.3e} > {:.1e} + {:.1e} x |expected|)",
                    (gf - ef).abs(),
                    tol.abs,
                    tol.rel
                ));
            }
        }
        (Value::Array(ea), Value::Array(ga)) => {
            if ea.len() != ga.len() {
                out.push(format!(
                    "{path}: expected {} elements, got {}",
                    ea.len(),
                    ga.len()
                ));
                return;
            }
            let numeric = |a: &[Value]| a.iter().all(Value::is_number);
            if ea.len() >= SUMMARY_LEN && numeric(ea) && numeric(ga) {
                summarise(path, ea, ga, tol, out);
                return;
            }
            for (i, (x, y)) in ea.iter().zip(ga).enumerate() {
                walk(&format!("{path}[{i}]"), x, y, tol, out);
            }
        }
        (Value::Object(em), Value::Object(gm)) => {
            for (k, x) in em {
                let p = format!("{path}.{k}");
                match gm.get(k) {
                    Some(y) => walk(&p, x, y, tol, out),
                    None => out.push(format!("{p}: missing (expected {})", show(x))),
                }
            }
        }
        _ if e == g => {}
        _ => out.push(format!("{path}: expected {}, got {}", show(e), show(g))),
    }
}

fn summarise(path: &str, e: &[Value], g: &[Value], tol: Tolerance, out: &mut Vec<String>) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let (mut bad, mut worst, mut at) = (0usize, 0f64, 0usize);
    let (mut dot, mut ne, mut ng) = (0f64, 0f64, 0f64);
    for (i, (x, y)) in e.iter().zip(g).enumerate() {
        let (x, y) = (f(x), f(y));
        if !within(x, y, tol) {
            bad += 1;
        }
        let d = (y - x).abs();
        if d > worst || d.is_nan() {
            worst = d;
            at = i;
        }
        dot += x * y;
        ne += x * x;
        ng += y * y;
    }
    if bad > 0 {
        let cosine = dot / (ne.sqrt() * ng.sqrt()).max(f64::MIN_POSITIVE);
        out.push(format!(
            "{path}: {bad} of {} values out of tolerance; largest |diff| {worst:.3e} at [{at}] \
             (expected {}, got {}); cosine {cosine:.6}",
            e.len(),
            f(&e[at]),
            f(&g[at])
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_within_tolerance_match_and_integers_are_exact() {
        let t = Tolerance::default();
        assert!(diff(&json!({"s": 0.5}), &json!({"s": 0.50005, "extra": 1}), t).is_empty());
        assert_eq!(diff(&json!({"n": 3}), &json!({"n": 4}), t).len(), 1);
        let d = diff(&json!({"s": 0.5}), &json!({"s": 0.6}), t);
        assert!(d[0].starts_with("$.s: expected 0.5, got 0.6"), "{d:?}");
    }

    #[test]
    fn structure_and_long_vectors_are_reported_readably() {
        let t = Tolerance::default();
        let d = diff(
            &json!({"labels": [{"label": "A"}, {"label": "B"}], "gone": true}),
            &json!({"labels": [{"label": "B"}, {"label": "A"}]}),
            t,
        );
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].contains("$.gone: missing"), "{d:?}");
        assert!(d[1].contains("$.labels[0].label: expected \"A\", got \"B\""));
        let e: Vec<f64> = (0..16).map(|i| i as f64).collect();
        let mut g = e.clone();
        g[5] = 7.0;
        let d = diff(&json!({ "v": e }), &json!({ "v": g }), t);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].contains("1 of 16 values") && d[0].contains("at [5]"),
            "{d:?}"
        );
        assert_eq!(diff(&json!([1, 2]), &json!([1]), t).len(), 1);
    }

    #[test]
    fn many_differences_are_counted() {
        let e: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        let g: Vec<String> = (0..20).map(|i| format!("x{i}")).collect();
        let d = diff(&json!(e), &json!(g), Tolerance::default());
        assert_eq!(d.len(), MAX_DIFFS + 1);
        assert!(d[MAX_DIFFS].contains("12 more"));
    }
}
