//! The result of `host test`: every case and conformance check with its
//! status, the skill's identity (digest, CID), and the resources it used;
//! rendered as a table for people, JSON for programs, JUnit XML for CI.

use std::fmt::Write as _;

use serde::Serialize;

use crate::sandbox::{Granted, Usage};

/// How one case or check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// What an [`Outcome`] is of (serialized `case` or `check`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeKind {
    /// A case of the skill's cases file.
    Case,
    /// One of the host's conformance checks.
    Check,
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutcomeKind::Case => "case",
            OutcomeKind::Check => "check",
        })
    }
}

/// One case or conformance check.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub name: String,
    pub status: Status,
    /// One line: what was seen.
    pub summary: String,
    /// Differences or reasons, one per line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    pub time_ms: f64,
}

impl Outcome {
    pub fn check(name: &str, status: Status, summary: impl Into<String>) -> Outcome {
        Outcome {
            kind: OutcomeKind::Check,
            name: name.into(),
            status,
            summary: summary.into(),
            details: Vec::new(),
            time_ms: 0.0,
        }
    }

    pub fn with_details(mut self, details: Vec<String>) -> Outcome {
        self.details = details;
        self
    }

    pub fn timed(mut self, since: std::time::Instant) -> Outcome {
        self.time_ms = since.elapsed().as_secs_f64() * 1e3;
        self
    }
}

/// Who was tested.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Identity {
    pub name: String,
    pub path: String,
    /// `sha256:<hex>` of the component.
    pub sha256: String,
    /// The equivalent IPFS CIDv1.
    pub cid: String,
    pub task: String,
    pub version: String,
}

/// Everything `host test` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub skill: Identity,
    pub model: String,
    /// The device that served (`None` when the skill did not load).
    pub device: Option<String>,
    pub precision: String,
    pub cases_file: Option<String>,
    pub results: Vec<Outcome>,
    pub usage: Option<Usage>,
    /// The limits the skill was granted: declared (or default), capped by
    /// the ceiling.
    pub limits: Option<Granted>,
}

impl Report {
    /// (passed, failed, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |s: Status| self.results.iter().filter(|r| r.status == s).count();
        (n(Status::Pass), n(Status::Fail), n(Status::Skip))
    }

    /// Whether nothing failed.
    pub fn ok(&self) -> bool {
        self.counts().1 == 0
    }

    /// The report as JSON, with the counts.
    pub fn json(&self) -> serde_json::Value {
        let (passed, failed, skipped) = self.counts();
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("passed".into(), passed.into());
            m.insert("failed".into(), failed.into());
            m.insert("skipped".into(), skipped.into());
        }
        v
    }

    /// A table for a terminal.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let id = &self.skill;
        let _ = writeln!(s, "skill   {} {} ({})", id.name, id.version, id.task);
        let _ = writeln!(s, "        {}", id.path);
        let _ = writeln!(s, "        {}", id.sha256);
        let _ = writeln!(s, "        cid {}", id.cid);
        let _ = writeln!(
            s,
            "model   {} on {} ({})",
            self.model,
            self.device.as_deref().unwrap_or("-"),
            self.precision
        );
        if let Some(c) = &self.cases_file {
            let _ = writeln!(s, "cases   {c}");
        }
        if let Some(g) = &self.limits {
            let _ = writeln!(s, "limits  {}", g.summary());
        }
        s.push('\n');
        let width = self
            .results
            .iter()
            .map(|r| r.name.chars().count() + 6)
            .max()
            .unwrap_or(10)
            .min(48);
        for r in &self.results {
            let mark = match r.status {
                Status::Pass => "PASS",
                Status::Fail => "FAIL",
                Status::Skip => "SKIP",
            };
            let label = format!("{} {}", r.kind, r.name);
            let _ = writeln!(
                s,
                "  {mark}  {label:<width$}  {:>8.1} ms  {}",
                r.time_ms, r.summary
            );
            for d in &r.details {
                let _ = writeln!(s, "          {d}");
            }
        }
        let (p, f, k) = self.counts();
        let _ = writeln!(s, "\n{p} passed, {f} failed, {k} skipped");
        s
    }

    /// JUnit XML: one test suite (the skill), one test case per case and
    /// check; the digest, CID, model and device as properties.
    pub fn junit(&self) -> String {
        let (_, failed, skipped) = self.counts();
        let total_s: f64 = self.results.iter().map(|r| r.time_ms).sum::<f64>() / 1e3;
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let suite = xml(&self.skill.name);
        let _ = writeln!(
            s,
            "<testsuites name=\"host test\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"{skipped}\" time=\"{total_s:.3}\">",
            self.results.len()
        );
        let _ = writeln!(
            s,
            "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"{skipped}\" time=\"{total_s:.3}\">",
            self.results.len()
        );
        s.push_str("    <properties>\n");
        let limits = self.limits.map(|g| g.summary()).unwrap_or_default();
        for (k, v) in [
            ("sha256", self.skill.sha256.as_str()),
            ("cid", self.skill.cid.as_str()),
            ("path", self.skill.path.as_str()),
            ("model", self.model.as_str()),
            ("device", self.device.as_deref().unwrap_or("")),
            ("precision", self.precision.as_str()),
            ("limits", limits.as_str()),
        ] {
            let _ = writeln!(s, "      <property name=\"{k}\" value=\"{}\"/>", xml(v));
        }
        s.push_str("    </properties>\n");
        for r in &self.results {
            let _ = write!(
                s,
                "    <testcase classname=\"{suite}.{}\" name=\"{}\" time=\"{:.3}\"",
                r.kind,
                xml(&r.name),
                r.time_ms / 1e3
            );
            match r.status {
                Status::Pass => s.push_str("/>\n"),
                Status::Skip => {
                    let _ = writeln!(
                        s,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml(&r.summary)
                    );
                }
                Status::Fail => {
                    let _ = writeln!(
                        s,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        xml(&r.summary),
                        xml(&r.details.join("\n"))
                    );
                }
            }
        }
        s.push_str("  </testsuite>\n</testsuites>\n");
        s
    }
}

/// Text escaped for XML attributes and content; characters XML 1.0 cannot
/// hold become U+FFFD.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            skill: Identity {
                name: "demo".into(),
                ..Default::default()
            },
            results: vec![
                Outcome::check("describe", Status::Pass, "ok"),
                Outcome::check("bad <requests>", Status::Fail, "accepted \"{}\"")
                    .with_details(vec!["a & b\u{1}".into()]),
                Outcome::check("trap", Status::Skip, "no case"),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn counts_table_and_json_agree() {
        let r = sample();
        assert_eq!(r.counts(), (1, 1, 1));
        assert!(!r.ok());
        assert!(r.table().contains("1 passed, 1 failed, 1 skipped"));
        assert_eq!(r.json()["failed"], 1);
    }

    #[test]
    fn junit_is_escaped() {
        let x = sample().junit();
        assert!(x.contains("name=\"bad &lt;requests&gt;\""), "{x}");
        assert!(x.contains("message=\"accepted &quot;{}&quot;\""));
        assert!(x.contains(">a &amp; b\u{FFFD}</failure>"));
        assert!(x.contains("<skipped message=\"no case\"/>"));
        assert_eq!(x.matches("<testcase ").count(), 3);
    }
}
