//! The conformance checks that need a loaded skill: response schema of
//! the cases' answers, answers in order (the batch reversed), bad requests
//! next to a good one, resources against the limits, and recovery after a
//! trap provoked with a tiny fuel budget. [`super::test`] runs them after
//! the cases.

use super::cases::{self, Case, Expect, Tolerance};
use super::compare::diff;
use super::conformance::{self, Schemas};
use super::report::{Outcome, Status};
use super::test::{tolerance, value, Answer, TestOptions};
use crate::runner::Runner;
use crate::sandbox::{Granted, Usage};
use crate::ErrorKind;

/// Fuel of the call that must trap (far below what answering takes).
const TRAP_FUEL: u64 = 1_000;

pub(super) fn check_schemas(
    schemas: Option<&Schemas>,
    cases: &[Case],
    answers: &[Answer],
) -> Outcome {
    const NAME: &str = "response schema";
    let Some(s) = schemas else {
        return Outcome::check(NAME, Status::Skip, "no valid schemas (see describe)");
    };
    let mut problems = Vec::new();
    let mut checked = 0;
    for (c, a) in cases.iter().zip(answers) {
        let Ok(o) = a else { continue };
        checked += 1;
        match value(o) {
            Ok(v) => {
                let skill_part = cases::comparable(&v, &[]);
                for p in conformance::violations(&s.response, &skill_part) {
                    problems.push(format!("case `{}`: response {p}", c.name));
                }
            }
            Err(e) => problems.push(format!("case `{}`: {e}", c.name)),
        }
        for p in conformance::violations(&s.request, &c.request) {
            problems.push(format!(
                "case `{}`: answered, but its request breaks the request schema {p}",
                c.name
            ));
        }
    }
    if checked == 0 {
        Outcome::check(NAME, Status::Skip, "no successful answer to check")
    } else if problems.is_empty() {
        Outcome::check(
            NAME,
            Status::Pass,
            format!("{checked} response(s) conform; their requests match the request schema"),
        )
    } else {
        Outcome::check(
            NAME,
            Status::Fail,
            format!("{} violation(s)", problems.len()),
        )
        .with_details(problems)
    }
}

/// Whether two answers to the same request agree (within the tolerance).
fn same(a: &Answer, b: &Answer, tol: Tolerance, ignore: &[String]) -> Result<(), String> {
    match (a, b) {
        (Ok(x), Ok(y)) => {
            let (x, y) = (value(x)?, value(y)?);
            let d = diff(
                &cases::comparable(&x, ignore),
                &cases::comparable(&y, ignore),
                tol,
            );
            match d.first() {
                None => Ok(()),
                Some(first) => Err(first.clone()),
            }
        }
        (Err(x), Err(y)) if x.kind == y.kind => Ok(()),
        (Err(x), Err(y)) => Err(format!("`{}` error, then `{}`", x.kind, y.kind)),
        (Ok(_), Err(e)) => Err(format!("answered, then `{}`: {}", e.kind, e.message)),
        (Err(e), Ok(_)) => Err(format!("`{}` error, then answered", e.kind)),
    }
}

pub(super) fn check_order(
    runner: &mut Runner,
    opts: &TestOptions,
    cases: &[Case],
    answers: &[Answer],
    isolated: bool,
) -> Outcome {
    const NAME: &str = "answers in order";
    if isolated {
        return Outcome::check(
            NAME,
            Status::Skip,
            "the batch of cases failed as a whole (a case traps); its cases ran one at a time",
        );
    }
    if cases.len() < 2 {
        return Outcome::check(NAME, Status::Skip, "needs two cases or more");
    }
    let reversed: Vec<String> = cases.iter().rev().map(|c| c.request.to_string()).collect();
    let back = match runner.try_handle(&reversed) {
        Ok(b) => b,
        Err(e) => {
            return Outcome::check(
                NAME,
                Status::Fail,
                format!("the reversed batch failed as a whole: {e}"),
            )
        }
    };
    let mut problems = Vec::new();
    for ((c, a), b) in cases.iter().zip(answers).zip(back.iter().rev()) {
        if let Err(why) = same(a, b, tolerance(opts, c), &c.ignore) {
            problems.push(format!("case `{}`: {why}", c.name));
        }
    }
    if problems.is_empty() {
        Outcome::check(
            NAME,
            Status::Pass,
            format!(
                "{} answers; the same per request in reverse order",
                cases.len()
            ),
        )
    } else {
        Outcome::check(
            NAME,
            Status::Fail,
            "answers depend on the request's place in the batch",
        )
        .with_details(problems)
    }
}

pub(super) fn check_bad_requests(
    runner: &mut Runner,
    opts: &TestOptions,
    schemas: Option<&Schemas>,
    probe: Option<(&Case, &Answer)>,
) -> Outcome {
    const NAME: &str = "bad requests";
    let Some(s) = schemas else {
        return Outcome::check(NAME, Status::Skip, "no valid request schema (see describe)");
    };
    let bad = conformance::bad_requests(s, probe.map(|(c, _)| &c.request));
    if bad.is_empty() {
        return Outcome::check(
            NAME,
            Status::Skip,
            "the request schema rejects none of the probes",
        );
    }
    let mut batch: Vec<String> = bad.iter().map(|(_, r)| r.to_string()).collect();
    if let Some((c, _)) = probe {
        batch.push(c.request.to_string());
    }
    let answers = match runner.try_handle(&batch) {
        Ok(a) => a,
        Err(e) => {
            return Outcome::check(
                NAME,
                Status::Fail,
                format!("the batch failed as a whole instead of one error per bad request: {e}"),
            )
        }
    };
    let mut problems = Vec::new();
    for ((what, req), a) in bad.iter().zip(&answers) {
        match a {
            Err(e) if e.kind.is_bad_request() => {}
            Err(e) => problems.push(format!(
                "{what} ({req}): `{}` error, expected `invalid-request`: {}",
                e.kind, e.message
            )),
            Ok(_) => problems.push(format!(
                "{what} ({req}): answered as if valid, expected an `invalid-request` error"
            )),
        }
    }
    if let (Some((c, first)), Some(again)) = (probe, answers.get(bad.len())) {
        if let Err(why) = same(first, again, tolerance(opts, c), &c.ignore) {
            problems.push(format!("case `{}` next to the bad requests: {why}", c.name));
        }
    }
    if problems.is_empty() {
        Outcome::check(
            NAME,
            Status::Pass,
            format!(
                "{} bad request(s) got typed errors{}",
                bad.len(),
                if probe.is_some() {
                    "; a good one in the same batch was answered as before"
                } else {
                    ""
                }
            ),
        )
    } else {
        Outcome::check(NAME, Status::Fail, format!("{} problem(s)", problems.len()))
            .with_details(problems)
    }
}

/// Usage against the limits the skill was `granted` (from its declaration,
/// capped by the ceiling); a declaration above the ceiling is named in the
/// details, without failing the check.
pub(super) fn check_limits(
    usage: &Usage,
    granted: Option<&Granted>,
    skill: &str,
    cases: &[Case],
    answers: &[Answer],
) -> Outcome {
    const NAME: &str = "resource limits";
    let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
    let (memory_basis, fuel_basis) = granted.map_or(("", ""), |g| {
        (g.memory_bytes.basis(), g.fuel_per_call.basis())
    });
    let summary = format!(
        "peak memory {:.1} MiB of {:.0} MiB granted{}; most fuel in one call {:.3e} of {:.1e} granted{} ({:.1}%)",
        mib(usage.peak_memory_bytes),
        mib(usage.memory_limit_bytes),
        granted.map_or(String::new(), |g| format!(
            " ({memory_basis}; ceiling {:.0} MiB)",
            mib(g.memory_bytes.ceiling)
        )),
        usage.max_fuel_per_call as f64,
        usage.fuel_limit_per_call as f64,
        granted.map_or(String::new(), |g| format!(
            " ({fuel_basis}; ceiling {:.1e})",
            g.fuel_per_call.ceiling as f64
        )),
        100.0 * usage.max_fuel_per_call as f64 / usage.fuel_limit_per_call.max(1) as f64
    );
    let warnings: Vec<String> = granted
        .map(|g| g.warnings(skill))
        .unwrap_or_default()
        .into_iter()
        .map(|w| format!("warning: {w}"))
        .collect();
    let exhausted: Vec<String> = cases
        .iter()
        .zip(answers)
        .filter(|(c, a)| {
            a.as_ref()
                .is_err_and(|e| e.kind == ErrorKind::ResourceExhausted)
                && !matches!(&c.expect, Expect::Error { kind, .. } if *kind == ErrorKind::ResourceExhausted)
        })
        .map(|(c, a)| {
            format!(
                "case `{}`: {}",
                c.name,
                a.as_ref().err().map(|e| e.message.as_str()).unwrap_or("")
            )
        })
        .collect();
    if exhausted.is_empty() {
        Outcome::check(NAME, Status::Pass, summary).with_details(warnings)
    } else {
        let details = exhausted.into_iter().chain(warnings).collect();
        Outcome::check(NAME, Status::Fail, format!("limits hit; {summary}")).with_details(details)
    }
}

pub(super) fn check_trap(
    runner: &mut Runner,
    opts: &TestOptions,
    probe: Option<(&Case, &Answer)>,
) -> Outcome {
    const NAME: &str = "recovers after a trap";
    let Some((case, first)) = probe else {
        return Outcome::check(NAME, Status::Skip, "needs a case the skill answers");
    };
    let request = [case.request.to_string()];
    if let Err(e) = runner.set_fuel_per_call(TRAP_FUEL) {
        return Outcome::check(NAME, Status::Fail, format!("no instance: {e}"));
    }
    match runner.try_handle(&request) {
        Err(e) if e.kind == ErrorKind::ResourceExhausted => {}
        Err(e) => {
            return Outcome::check(
                NAME,
                Status::Fail,
                format!(
                    "out of fuel should be `resource-exhausted`, got `{}`: {}",
                    e.kind, e.message
                ),
            )
        }
        Ok(_) => {
            return Outcome::check(
                NAME,
                Status::Pass,
                format!(
                    "case `{}` fit in {TRAP_FUEL} fuel units: no trap provoked",
                    case.name
                ),
            )
        }
    };
    let Some(again) = runner.handle(&request).pop() else {
        return Outcome::check(NAME, Status::Fail, "no answer after the trap");
    };
    match same(first, &again, tolerance(opts, case), &case.ignore) {
        Ok(()) => Outcome::check(
            NAME,
            Status::Pass,
            format!(
                "with {TRAP_FUEL} fuel units the call trapped (resource-exhausted); a fresh instance then answered case `{}` as before",
                case.name
            ),
        ),
        Err(why) => Outcome::check(
            NAME,
            Status::Fail,
            format!("after a trap, case `{}` was answered differently: {why}", case.name),
        ),
    }
}
