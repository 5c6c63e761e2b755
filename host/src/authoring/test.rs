//! `host test`: a skill's cases and the conformance checks, run in the
//! sandbox on a model, into a [`Report`].
//!
//! Order of work: the component (digest, pin), `describe` (on an instance
//! without a model), `load` on the model, then the cases as one batch (a
//! batch that fails as a whole, e.g. a case that traps on purpose, is run
//! again one request at a time), the response schema, the answers of the
//! reversed batch (one answer per request, in order), bad requests mixed
//! with a good one, a trap provoked by a tiny fuel budget (the next call
//! must be answered by a fresh instance), and the resources used against
//! the limits the skill was granted (what it declared in `describe`, capped
//! by the sandbox's ceiling). With `record`, the answers become the cases'
//! expectations.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::cases::{self, Case, Expect, Tolerance};
use super::checks::{check_bad_requests, check_limits, check_order, check_schemas, check_trap};
use super::compare::diff;
use super::conformance::{self, Schemas};
use super::report::{Identity, Outcome, OutcomeKind, Report, Status};
use super::AuthoringError;
use crate::backend::{Device, Precision};
use crate::digest::Digest;
use crate::model::Model;
use crate::runner::{Output, RequestError, Runner};
use crate::sandbox::{Sandbox, SkillComponent, SkillContext, Usage};

/// What to test and how.
#[derive(Clone, Debug)]
pub struct TestOptions {
    /// Skill name or path, optionally pinned (`@sha256:...`).
    pub skill: String,
    /// Model directory or hub id.
    pub model: String,
    pub cases: Option<PathBuf>,
    pub devices: Vec<Device>,
    pub precision: Precision,
    /// Write the answers into the cases file as expectations first.
    pub record: bool,
    /// Overrides every case's tolerance.
    pub tolerance: Option<Tolerance>,
}

/// A request's answer, as the runner gives it.
pub(super) type Answer = Result<Output, RequestError>;

/// Runs everything; `Err` only when the test itself cannot run (no such
/// skill or model, unreadable cases file), a skill's failures are in the
/// report.
pub fn run(sandbox: Arc<Sandbox>, opts: &TestOptions) -> Result<Report, AuthoringError> {
    if opts.record && opts.cases.is_none() {
        return Err(AuthoringError::Usage(
            "--record writes into the cases file: give --cases FILE".into(),
        ));
    }
    let config = sandbox.config().clone();
    let (name, path, pin) = crate::skills::resolve_pinned(&opts.skill, &config.skills_dirs)?;
    let mut cases = match &opts.cases {
        Some(p) => cases::read(p)?,
        None => Vec::new(),
    };
    let mut report = Report {
        skill: Identity {
            name: name.clone(),
            path: path.display().to_string(),
            ..Default::default()
        },
        model: opts.model.clone(),
        precision: opts.precision.to_string(),
        cases_file: opts.cases.as_ref().map(|p| p.display().to_string()),
        ..Default::default()
    };
    let t = Instant::now();
    let component = match sandbox.load_pinned(&name, &path, pin.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            if let Ok(d) = Digest::of_file(&path) {
                set_digest(&mut report, &d);
            }
            report
                .results
                .push(Outcome::check("component", Status::Fail, e.to_string()).timed(t));
            return Ok(report);
        }
    };
    set_digest(&mut report, &component.digest);
    report.results.push(
        Outcome::check(
            "component",
            Status::Pass,
            format!(
                "a `skill` world component{}",
                if pin.is_some() {
                    ", digest as pinned"
                } else {
                    ""
                }
            ),
        )
        .timed(t),
    );
    let schemas = check_describe(&sandbox, &component, &mut report);

    let model = Model::open_with(&opts.model, config.hub_offline);
    let model = Arc::new(model.map_err(crate::HostError::from)?);
    let t = Instant::now();
    // The very bytes checked above (the runner loads the file again).
    let spec = format!("{}@{}", path.display(), component.digest);
    let opened = Runner::open_model(sandbox.clone(), &spec, model, &opts.devices, opts.precision);
    // What the skill declared, capped by the ceiling (known once an
    // instance was made).
    report.limits = sandbox.granted(&component.digest);
    let mut runner = match opened {
        Ok(r) => r,
        Err(e) => {
            report
                .results
                .push(Outcome::check("load", Status::Fail, e.to_string()).timed(t));
            for c in &cases {
                let skipped = "not run: the skill did not load".to_string();
                report.results.push(case_outcome(c, Status::Skip, skipped));
            }
            return Ok(report);
        }
    };
    report.device = Some(runner.device.clone());
    report.results.push(
        Outcome::check(
            "load",
            Status::Pass,
            format!("loaded on {} ({})", runner.device, runner.precision),
        )
        .timed(t),
    );

    let requests: Vec<String> = cases.iter().map(|c| c.request.to_string()).collect();
    let t = Instant::now();
    let mut usage = Usage::default();
    let (answers, isolated) = answer(&mut runner, &requests, &mut usage);
    let per_case_ms = t.elapsed().as_secs_f64() * 1e3 / requests.len().max(1) as f64;
    if opts.record {
        record(&mut cases, &answers);
        if let Some(p) = &opts.cases {
            cases::write(p, &cases)?;
        }
    }
    for (case, a) in cases.iter().zip(&answers) {
        let mut o = judge(case, a, tolerance(opts, case));
        o.time_ms = per_case_ms;
        report.results.push(o);
    }
    if cases.is_empty() {
        report.results.push(Outcome::check(
            "cases",
            Status::Skip,
            "no cases: give --cases FILE (JSON Lines of {\"name\", \"request\", \"expect\"})",
        ));
    }

    let t = Instant::now();
    report
        .results
        .push(check_schemas(schemas.as_ref(), &cases, &answers).timed(t));
    let t = Instant::now();
    report
        .results
        .push(check_order(&mut runner, opts, &cases, &answers, isolated).timed(t));
    usage = usage.merge(runner.usage().unwrap_or_default());
    let probe = cases
        .iter()
        .zip(&answers)
        .find(|(c, a)| a.is_ok() && !matches!(c.expect, Expect::Error { .. }));
    let t = Instant::now();
    report
        .results
        .push(check_bad_requests(&mut runner, opts, schemas.as_ref(), probe).timed(t));
    usage = usage.merge(runner.usage().unwrap_or_default());
    report.results.push(check_limits(
        &usage,
        report.limits.as_ref(),
        &name,
        &cases,
        &answers,
    ));
    report.usage = Some(usage);
    let t = Instant::now();
    report
        .results
        .push(check_trap(&mut runner, opts, probe).timed(t));
    Ok(report)
}

fn set_digest(report: &mut Report, d: &Digest) {
    report.skill.sha256 = d.to_string();
    report.skill.cid = d.cid();
}

pub(super) fn tolerance(opts: &TestOptions, case: &Case) -> Tolerance {
    opts.tolerance.or(case.tolerance).unwrap_or_default()
}

/// Answers a batch; a batch that fails as a whole is answered one request
/// at a time (`true`), so each case gets its own answer. What each
/// instance used is added to `usage` (a trapped instance is replaced at the
/// next call, so it is read after every call).
fn answer(runner: &mut Runner, requests: &[String], usage: &mut Usage) -> (Vec<Answer>, bool) {
    if requests.is_empty() {
        return (Vec::new(), false);
    }
    let batch = runner.try_handle(requests);
    *usage = usage.merge(runner.usage().unwrap_or_default());
    match batch {
        Ok(a) => (a, false),
        Err(_) => {
            let mut each = Vec::with_capacity(requests.len());
            for r in requests {
                let mut a = runner.handle(std::slice::from_ref(r));
                *usage = usage.merge(runner.usage().unwrap_or_default());
                each.push(
                    a.pop()
                        .unwrap_or_else(|| Err(RequestError::internal("no answer"))),
                );
            }
            (each, true)
        }
    }
}

/// A response as JSON: the skill's keys, its tensors, `device`, `precision`.
pub(super) fn value(o: &Output) -> Result<Value, String> {
    let line = o.to_json_line().map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| e.to_string())
}

fn record(cases: &mut [Case], answers: &[Answer]) {
    for (c, a) in cases.iter_mut().zip(answers) {
        c.expect = match a {
            Ok(o) => match value(o) {
                Ok(v) => Expect::Response(cases::comparable(&v, &c.ignore)),
                Err(_) => Expect::Success,
            },
            Err(e) => Expect::Error {
                kind: e.kind,
                message_contains: None,
            },
        };
    }
}

fn case_outcome(case: &Case, status: Status, summary: String) -> Outcome {
    Outcome {
        kind: OutcomeKind::Case,
        name: case.name.clone(),
        status,
        summary,
        details: Vec::new(),
        time_ms: 0.0,
    }
}

fn judge(case: &Case, answer: &Answer, tol: Tolerance) -> Outcome {
    let fail = |s: String| case_outcome(case, Status::Fail, s);
    match (&case.expect, answer) {
        (Expect::Success, Ok(_)) => case_outcome(
            case,
            Status::Pass,
            "answered (no expectation: record one with --record)".into(),
        ),
        (Expect::Response(expected), Ok(o)) => match value(o) {
            Err(e) => fail(format!("response is not JSON: {e}")),
            Ok(got) => {
                let d = diff(expected, &cases::comparable(&got, &case.ignore), tol);
                if d.is_empty() {
                    case_outcome(case, Status::Pass, "matches the expected response".into())
                } else {
                    fail(format!(
                        "{} difference(s) from the expected response",
                        d.len()
                    ))
                    .with_details(d)
                }
            }
        },
        (
            Expect::Error {
                kind,
                message_contains,
            },
            Err(e),
        ) => {
            let text_ok = message_contains
                .as_ref()
                .is_none_or(|m| e.message.contains(m.as_str()));
            if e.kind == *kind && text_ok {
                case_outcome(case, Status::Pass, format!("{}: {}", e.kind, e.message))
            } else {
                fail(format!(
                    "expected a `{kind}` error{}, got `{}`: {}",
                    message_contains
                        .as_ref()
                        .map(|m| format!(" containing {m:?}"))
                        .unwrap_or_default(),
                    e.kind,
                    e.message
                ))
            }
        }
        (Expect::Error { kind, .. }, Ok(o)) => fail(format!(
            "expected a `{kind}` error, got a response: {}",
            value(o)
                .map(|v| v.to_string().chars().take(120).collect::<String>())
                .unwrap_or_default()
        )),
        (_, Err(e)) => fail(format!("`{}` error: {}", e.kind, e.message)),
    }
}

fn check_describe(
    sandbox: &Sandbox,
    component: &SkillComponent,
    report: &mut Report,
) -> Option<Schemas> {
    let t = Instant::now();
    let infos = sandbox
        .instantiate(component, Arc::new(SkillContext::empty()))
        .and_then(|mut i| Ok((i.describe()?, i.describe()?)));
    let (info, again) = match infos {
        Ok(pair) => pair,
        Err(e) => {
            report.results.push(
                Outcome::check("describe", Status::Fail, format!("without a model: {e}")).timed(t),
            );
            return None;
        }
    };
    report.skill.task = info.task.clone();
    report.skill.version = info.version.clone();
    let (problems, schemas) = conformance::describe(&info, &again);
    let o = if problems.is_empty() {
        Outcome::check(
            "describe",
            Status::Pass,
            format!(
                "`{}` {} for {}: {} architecture(s), request and response schemas valid",
                info.name,
                info.version,
                info.task,
                info.architectures.len()
            ),
        )
    } else {
        Outcome::check(
            "describe",
            Status::Fail,
            format!("{} problem(s)", problems.len()),
        )
        .with_details(problems)
    };
    report.results.push(o.timed(t));
    schemas
}
