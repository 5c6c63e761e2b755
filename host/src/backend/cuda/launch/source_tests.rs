//! Every [`Launch`] variant against the kernel source, without a GPU or
//! NVRTC: the source's macros are expanded by a small preprocessor, its
//! `extern "C"` kernels listed with their parameter types, and each
//! variant (for every dtype or element size it is instantiated for) must
//! name an existing kernel whose parameters match its argument list in
//! number and kind. The op codes must equal the source's `#define`s.

use std::collections::HashMap;

use super::codes::ACT_NONE;
use super::samples::{samples, variant, VARIANTS};
use super::*;
use crate::backend::cuda::kernels::SOURCE;
use crate::backend::cuda::plan::Arg;
use crate::ir::ops::Operands;

/// The source with comments removed.
fn strip_comments(src: &str) -> String {
    let (mut out, b) = (String::new(), src.as_bytes());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Function-like macros (parameters, body) and object-like ones (value).
#[derive(Default)]
struct Macros {
    functions: HashMap<String, (Vec<String>, String)>,
    objects: HashMap<String, String>,
}

/// Splits the source into its macros and the text outside directives.
fn preprocess(src: &str) -> (Macros, String) {
    let joined = strip_comments(src).replace("\\\n", " ");
    let (mut m, mut text) = (Macros::default(), String::new());
    for line in joined.lines() {
        let t = line.trim_start();
        let Some(def) = t.strip_prefix("#define ") else {
            if !t.starts_with('#') {
                text.push_str(line);
                text.push('\n');
            }
            continue;
        };
        let name: String = def.chars().take_while(|&c| is_ident(c)).collect();
        let rest = &def[name.len()..];
        match rest.strip_prefix('(') {
            Some(r) => {
                let close = r.find(')').unwrap_or(r.len());
                let params = r[..close].split(',').map(|p| p.trim().to_string());
                let body = r.get(close + 1..).unwrap_or("").trim().to_string();
                m.functions.insert(name, (params.collect(), body));
            }
            None => {
                m.objects.insert(name, rest.trim().to_string());
            }
        }
    }
    (m, text)
}

/// The text from `open` (just past a `(`) to its matching `)`, split at
/// top-level commas, and the position after the `)`.
fn call_args(s: &[char], open: usize) -> Option<(Vec<String>, usize)> {
    let (mut depth, mut args, mut cur) = (0usize, Vec::new(), String::new());
    for (i, &c) in s.iter().enumerate().skip(open) {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                args.push(cur.trim().to_string());
                return Some((args, i + 1));
            }
            ')' => depth -= 1,
            ',' if depth == 0 => {
                args.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    None
}

/// `body` with whole-identifier `params` replaced by `args`, `##` pasted.
fn substitute(body: &str, params: &[String], args: &[String]) -> String {
    let (mut out, mut word) = (String::new(), String::new());
    let flush = |word: &mut String, out: &mut String| {
        match params.iter().position(|p| p == word) {
            Some(k) => out.push_str(args.get(k).map_or("", String::as_str)),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in body.chars() {
        if is_ident(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    let mut pasted = String::new();
    for (k, part) in out.split("##").enumerate() {
        match k {
            0 => pasted.push_str(part.trim_end()),
            _ => pasted.push_str(part.trim()),
        }
    }
    pasted
}

/// `text` with its function-like macro calls expanded (recursively).
fn expand(text: &str, m: &Macros, depth: u32) -> String {
    assert!(depth < 16, "macro recursion too deep");
    let s: Vec<char> = text.chars().collect();
    let (mut out, mut i) = (String::new(), 0);
    while i < s.len() {
        if !is_ident(s[i]) || (i > 0 && is_ident(s[i - 1])) {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let end = (i..s.len()).find(|&k| !is_ident(s[k])).unwrap_or(s.len());
        let word: String = s[i..end].iter().collect();
        let open = (end..s.len()).find(|&k| !s[k].is_whitespace());
        match (m.functions.get(&word), open) {
            (Some((params, body)), Some(o)) if s[o] == '(' => {
                let (args, next) = call_args(&s, o + 1).expect("balanced macro call");
                out.push_str(&expand(&substitute(body, params, &args), m, depth + 1));
                i = next;
            }
            _ => {
                out.push_str(&word);
                i = end;
            }
        }
    }
    out
}

/// Every `extern "C"` kernel of the source with its parameter types.
fn kernels() -> (HashMap<String, Vec<String>>, Macros) {
    let (m, text) = preprocess(SOURCE);
    let text = expand(&text, &m, 0);
    let mut found = HashMap::new();
    for piece in text.split("extern \"C\" __global__ void").skip(1) {
        let mut rest = piece.trim_start();
        if let Some(r) = rest.strip_prefix("__launch_bounds__") {
            rest = r[r.find(')').map_or(0, |k| k + 1)..].trim_start();
        }
        let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        let chars: Vec<char> = rest.chars().collect();
        let (params, _) = call_args(&chars, name.len() + 1).expect("a parameter list");
        let types = params
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| {
                // The type is all but the parameter's name.
                let cut = p.trim_end_matches(is_ident);
                cut.trim().to_string()
            })
            .collect();
        assert!(
            found.insert(name.clone(), types).is_none(),
            "kernel `{name}` twice"
        );
    }
    (found, m)
}

/// Whether argument `a` can be passed for a parameter of C type `ty`.
fn fits(a: &Arg, ty: &str) -> bool {
    match a {
        Arg::Ptr(_) | Arg::Null => ty.ends_with('*'),
        Arg::I32(_) => ty == "int",
        Arg::I64(_) => ty == "i64",
        Arg::F32(_) => ty == "float",
        Arg::Idx(_) => ty == "Idx",
        Arg::Attn(_) => ty == "Attn",
    }
}

/// Every variant names a kernel of the source whose parameters take its
/// arguments, in number and kind.
#[test]
fn every_launch_matches_a_kernel_of_the_source() {
    let (kernels, _) = kernels();
    assert!(kernels.len() > 150, "only {} kernels parsed", kernels.len());
    let samples = samples();
    let mut seen = [false; VARIANTS];
    for l in &samples {
        seen[variant(l)] = true;
        let (name, args) = l.kernel();
        let Some(params) = kernels.get(&name) else {
            panic!("{l:?}: no kernel `{name}` in the source");
        };
        assert_eq!(params.len(), args.len(), "`{name}`: {params:?} vs {args:?}");
        for (k, (a, ty)) in args.iter().zip(params).enumerate() {
            assert!(fits(a, ty), "`{name}` argument {k}: {a:?} for a `{ty}`");
        }
    }
    let missing: Vec<usize> = (0..VARIANTS).filter(|&v| !seen[v]).collect();
    assert!(missing.is_empty(), "variants without samples: {missing:?}");
    // The kernels launched outside plans.
    for (name, params) in [("copy_many", 2), ("sleep_ns", 1)] {
        assert_eq!(kernels.get(name).map(Vec::len), Some(params), "{name}");
    }
}

/// [`Launch::for_each_ref`] visits exactly the buffer arguments of
/// [`Launch::kernel`], in order (the peepholes rewrite outputs with it).
#[test]
fn buffer_visits_follow_the_argument_list() {
    for mut l in samples() {
        let (name, args) = l.kernel();
        let want: Vec<Ref> = (args.iter())
            .filter_map(|a| match a {
                Arg::Ptr(r) => Some(*r),
                _ => None,
            })
            .collect();
        let mut got = Vec::new();
        l.for_each_ref(&mut |r| got.push(*r));
        assert_eq!(got, want, "`{name}`");
        for r in &want {
            assert!(l.refers_to(r.buf), "`{name}`");
        }
    }
}

/// The op codes equal the source's `#define`s, which the switches use.
#[test]
fn op_codes_match_the_source() {
    let (_, m) = kernels();
    let value = |name: &str| -> i32 {
        let v = m
            .objects
            .get(name)
            .unwrap_or_else(|| panic!("no #define {name}"));
        v.parse().unwrap_or_else(|_| panic!("#define {name} {v}"))
    };
    let mut named: Vec<(&str, i32)> = Vec::new();
    named.extend(UnaryCode::all().map(|c| (c.define(), c.code())));
    named.extend(BinaryCode::all().map(|c| (c.define(), c.code())));
    named.extend(CompareCode::all().map(|c| (c.define(), c.code())));
    named.extend(ReduceCode::all().map(|c| (c.define(), c.code())));
    for &(name, code) in &named {
        assert_eq!(value(name), code, "{name} (the op table in ir/ops.rs)");
    }
    assert_eq!(value("ACT_NONE"), ACT_NONE);
    // No code on the device side that the host does not know.
    for prefix in ["UN_", "BIN_", "CMP_", "RED_"] {
        for name in m.objects.keys().filter(|k| k.starts_with(prefix)) {
            assert!(
                named.iter().any(|(n, _)| n == name),
                "#define {name} has no host code"
            );
        }
    }
    // The switches name their cases by the defines: every float unary op
    // is a case of `un_f`, every one that takes integers also of `un_i`.
    let (un_f, un_i) = (function_body("un_f"), function_body("un_i"));
    for c in UnaryCode::all() {
        let case = format!("case {}:", c.define());
        let ops = c.op().operands();
        if ops != Operands::Bool {
            assert!(un_f.contains(&case), "un_f has no `{case}`");
        }
        if ops == Operands::Number {
            assert!(un_i.contains(&case), "un_i has no `{case}`");
        }
    }
    for c in BinaryCode::all() {
        let name = c.define();
        assert!(SOURCE.contains(&format!("case {name}:")), "{name}");
    }
    for c in CompareCode::all() {
        let name = c.define();
        assert!(SOURCE.contains(&format!("case {name}:")), "{name}");
    }
    for c in ReduceCode::all().skip(1) {
        let name = c.define();
        assert!(SOURCE.contains(&format!("op == {name}")), "{name}");
    }
}

/// The body of the device function `name` (from its signature to the next
/// function).
fn function_body(name: &str) -> &'static str {
    let sig = format!(" {name}(int op,");
    let start = SOURCE
        .find(&sig)
        .unwrap_or_else(|| panic!("no device function `{name}`"));
    let rest = &SOURCE[start..];
    let end = rest.find("\n}\n").unwrap_or(rest.len());
    &rest[..end]
}

/// Only plain gemvs of more than one block per multiprocessor switch to
/// the two-blocks-per-SM kernel, which takes the same parameters.
#[test]
fn wide_plain_gemvs_take_gemv_2b() {
    let (kernels, _) = kernels();
    let mut switched = 0;
    for l in samples() {
        let name = l.kernel().0;
        assert_eq!(l.kernel_on(132, 132), name, "one wave keeps `{name}`");
        let wide = l.kernel_on(133, 132);
        let plain = matches!(
            l,
            Launch::Gemv {
                kind: GemvKind::Plain,
                ..
            }
        );
        if !plain {
            assert_eq!(wide, name);
            continue;
        }
        assert_eq!(wide, name.replacen("gemv_", "gemv_2b_", 1));
        assert_eq!(kernels.get(&wide), kernels.get(&name), "`{wide}`");
        switched += 1;
    }
    assert_eq!(switched, 3, "one plain gemv per float type");
}
