//! Skill-declared limits: what a skill says it needs in `describe`
//! (`skill-info.limits`), the ceiling the operator set
//! ([`super::SandboxLimits`]), and what the host grants an instance.
//!
//! Each resource is granted `min(declared, ceiling)`, or
//! `min(default, ceiling)` when the skill declares nothing for it. A
//! declaration above the ceiling gets the ceiling and a warning: a skill
//! can lower its limits, never raise them past the operator's.

use super::SandboxLimits;
use super::SkillInfo;

/// Linear memory of a skill that declares none, bytes (also the default
/// ceiling).
pub const DEFAULT_MEMORY_BYTES: usize = 512 << 20;

/// Fuel per call of a skill that declares none (also the default ceiling).
pub const DEFAULT_FUEL_PER_CALL: u64 = 50_000_000_000;

/// What a skill declared it needs (`None`: the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Needs {
    /// Linear memory, bytes.
    pub memory_bytes: Option<usize>,
    /// Fuel per export call.
    pub fuel_per_call: Option<u64>,
}

impl Needs {
    /// The needs a `describe` answer declares.
    pub fn of(info: &SkillInfo) -> Needs {
        let Some(l) = &info.limits else {
            return Needs::default();
        };
        Needs {
            memory_bytes: l.memory_mib.map(|m| (m as usize) << 20),
            fuel_per_call: l.fuel_per_call,
        }
    }
}

/// One resource as granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Grant<T> {
    /// What the instance gets.
    pub granted: T,
    /// What the skill declared (`None`: it took the default).
    pub declared: Option<T>,
    /// The operator's ceiling.
    pub ceiling: T,
    /// The skill declared more than the ceiling and got the ceiling.
    pub capped: bool,
}

impl<T> Grant<T> {
    /// Where the grant came from: `declared`, `default`, or `declared above
    /// the ceiling, capped`.
    pub fn basis(&self) -> &'static str {
        match (self.capped, self.declared.is_some()) {
            (true, _) => "declared above the ceiling, capped",
            (false, true) => "declared",
            (false, false) => "default",
        }
    }
}

impl<T: Copy + Ord> Grant<T> {
    fn new(declared: Option<T>, default: T, ceiling: T) -> Grant<T> {
        Grant {
            granted: declared.unwrap_or(default).min(ceiling),
            declared,
            ceiling,
            capped: declared.is_some_and(|d| d > ceiling),
        }
    }
}

/// The limits one skill's instances get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Granted {
    /// Linear memory, bytes.
    pub memory_bytes: Grant<usize>,
    /// Fuel per export call.
    pub fuel_per_call: Grant<u64>,
}

impl Granted {
    /// What a skill with `needs` gets under the ceiling `ceiling`.
    pub fn new(needs: Needs, ceiling: &SandboxLimits) -> Granted {
        Granted {
            memory_bytes: Grant::new(
                needs.memory_bytes,
                DEFAULT_MEMORY_BYTES,
                ceiling.memory_bytes,
            ),
            fuel_per_call: Grant::new(
                needs.fuel_per_call,
                DEFAULT_FUEL_PER_CALL,
                ceiling.fuel_per_call,
            ),
        }
    }

    /// The ceiling itself (before a skill has declared anything).
    pub fn ceiling(ceiling: &SandboxLimits) -> Granted {
        Granted {
            memory_bytes: Grant::new(None, ceiling.memory_bytes, ceiling.memory_bytes),
            fuel_per_call: Grant::new(None, ceiling.fuel_per_call, ceiling.fuel_per_call),
        }
    }

    /// One line per resource whose declaration was above the ceiling.
    pub fn warnings(&self, skill: &str) -> Vec<String> {
        let mut out = Vec::new();
        let m = &self.memory_bytes;
        if let (true, Some(d)) = (m.capped, m.declared) {
            out.push(format!(
                "skill `{skill}` declared {} MiB of memory, above the ceiling of {} MiB \
                 (HOST_SKILL_MEMORY_MB): granted {} MiB",
                d >> 20,
                m.ceiling >> 20,
                m.granted >> 20
            ));
        }
        let f = &self.fuel_per_call;
        if let (true, Some(d)) = (f.capped, f.declared) {
            out.push(format!(
                "skill `{skill}` declared {d} fuel per call, above the ceiling of {} \
                 (HOST_SKILL_FUEL): granted {}",
                f.ceiling, f.granted
            ));
        }
        out
    }

    /// One line for people: granted memory and fuel, and where they came
    /// from (`declared`, `default`, or capped at the ceiling).
    pub fn summary(&self) -> String {
        format!(
            "memory {} MiB ({}; ceiling {} MiB), fuel {:.1e} per call ({}; ceiling {:.1e})",
            self.memory_bytes.granted >> 20,
            self.memory_bytes.basis(),
            self.memory_bytes.ceiling >> 20,
            self.fuel_per_call.granted as f64,
            self.fuel_per_call.basis(),
            self.fuel_per_call.ceiling as f64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ceiling(mib: usize, fuel: u64) -> SandboxLimits {
        SandboxLimits {
            memory_bytes: mib << 20,
            fuel_per_call: fuel,
            ..SandboxLimits::default()
        }
    }

    #[test]
    fn undeclared_gets_the_defaults_capped_by_the_ceiling() {
        let g = Granted::new(Needs::default(), &SandboxLimits::default());
        assert_eq!(g.memory_bytes.granted, DEFAULT_MEMORY_BYTES);
        assert_eq!(g.fuel_per_call.granted, DEFAULT_FUEL_PER_CALL);
        assert!(!g.memory_bytes.capped && !g.fuel_per_call.capped);
        assert!(g.warnings("s").is_empty());
        // A raised ceiling does not raise an undeclared skill's limits.
        let g = Granted::new(Needs::default(), &ceiling(4096, 1 << 40));
        assert_eq!(g.memory_bytes.granted, DEFAULT_MEMORY_BYTES);
        assert_eq!(g.fuel_per_call.granted, DEFAULT_FUEL_PER_CALL);
        // A lowered one lowers them, without a warning.
        let g = Granted::new(Needs::default(), &ceiling(64, 1000));
        assert_eq!(
            (g.memory_bytes.granted, g.fuel_per_call.granted),
            (64 << 20, 1000)
        );
        assert!(!g.memory_bytes.capped && g.warnings("s").is_empty());
        assert!(
            g.summary().contains("memory 64 MiB (default"),
            "{}",
            g.summary()
        );
    }

    #[test]
    fn declared_is_granted_up_to_the_ceiling() {
        let needs = Needs {
            memory_bytes: Some(32 << 20),
            fuel_per_call: Some(1 << 40),
        };
        let g = Granted::new(needs, &ceiling(512, 1 << 30));
        assert_eq!(g.memory_bytes.granted, 32 << 20);
        assert!(!g.memory_bytes.capped);
        assert_eq!(g.fuel_per_call.granted, 1 << 30);
        assert!(g.fuel_per_call.capped);
        let w = g.warnings("big");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("`big` declared 1099511627776 fuel per call")
                && w[0].contains("granted 1073741824"),
            "{w:?}"
        );
        assert!(g.summary().contains("capped"), "{}", g.summary());
        // Above a raised ceiling's default, within the ceiling: granted.
        let needs = Needs {
            memory_bytes: Some(1024 << 20),
            fuel_per_call: None,
        };
        let g = Granted::new(needs, &ceiling(2048, DEFAULT_FUEL_PER_CALL));
        assert_eq!(g.memory_bytes.granted, 1024 << 20);
        let g = Granted::new(needs, &SandboxLimits::default());
        assert_eq!(g.memory_bytes.granted, DEFAULT_MEMORY_BYTES);
        assert!(g.warnings("big")[0].contains("declared 1024 MiB of memory"));
    }
}
