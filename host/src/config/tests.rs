//! Tests of the configuration: variables, flags and their errors.

use super::*;
use std::collections::HashMap;

fn config(vars: &[(&str, &str)]) -> Result<HostConfig, ConfigError> {
    let map: HashMap<String, OsString> = (vars.iter())
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    HostConfig::from_lookup(|v| map.get(v).cloned())
}

#[test]
fn defaults_without_variables() {
    let c = config(&[]).unwrap();
    assert_eq!(c, HostConfig::default());
    assert!(c.backends.cuda.graphs && c.backends.cuda.pdl && c.trim_memory);
    assert_eq!(c.backends.openvino_hint.as_openvino(), "LATENCY");
}

#[test]
fn variables_are_typed() {
    let c = config(&[
        ("HOME", "/h"),
        ("HOST_SKILLS_DIR", "/a::/b"),
        ("HOST_CPU_THREADS", "3"),
        ("HOST_OPENVINO_HINT", "throughput"),
        ("HOST_CUDA_GRAPHS", "0"),
        ("HOST_CUDA_TRACE", "2"),
        ("HOST_SKILL_MEMORY_MB", "16"),
        ("HOST_FIXED_SHAPES", "0"),
        ("HOST_LOG", "host=debug"),
        ("HF_HUB_OFFLINE", "1"),
        ("HOST_TRIM_MEMORY", "0"),
        ("HOST_OPENVINO_CACHE_MB", "0"),
    ])
    .unwrap();
    assert_eq!(
        c.cache_dir,
        Some(PathBuf::from("/h/.cache/wasm-skill-host"))
    );
    assert_eq!(c.skills_dirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
    assert_eq!(c.backends.cpu_threads.map(NonZeroUsize::get), Some(3));
    assert_eq!(c.backends.openvino_hint, PerformanceHint::Throughput);
    assert!(!c.backends.cuda.graphs);
    assert_eq!(c.backends.cuda.trace, CudaTrace::Profile);
    assert_eq!(c.limits.memory_bytes, 16 << 20);
    assert_eq!(c.fixed_shapes, Some(false));
    assert_eq!(c.skill_log, SkillLogLevel::Warn);
    assert!(c.hub_offline && !c.trim_memory);
    assert_eq!(c.backends.openvino_cache_bytes(), 0);
    assert_eq!(
        HostConfig::default().backends.openvino_cache_bytes(),
        4 << 30
    );
    let x = config(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]).unwrap();
    assert_eq!(x.cache_dir, Some(PathBuf::from("/x/wasm-skill-host")));
}

#[test]
fn bad_values_are_errors_naming_the_variable() {
    for (var, value) in [
        ("HOST_CPU_THREADS", "0"),
        ("HOST_CPU_THREADS", "many"),
        ("HOST_CUDA_TRACE", "9"),
        ("HOST_OPENVINO_HINT", "fast"),
        ("HOST_SKILL_FUEL", "-1"),
        ("HOST_TRIM_MEMORY", "maybe"),
        ("HOST_OPENVINO_CACHE_MB", "-5"),
    ] {
        let e = config(&[(var, value)]).unwrap_err().to_string();
        assert!(e.starts_with(var) && e.contains(value), "{e}");
    }
    // Empty is unset.
    assert_eq!(
        config(&[("HOST_CPU_THREADS", "")]).unwrap(),
        HostConfig::default()
    );
}

#[test]
fn flags_override_variables() {
    let mut c = config(&[("HOST_CPU_THREADS", "3")]).unwrap();
    let args = ConfigArgs {
        cpu_threads: NonZeroUsize::new(5),
        offline: true,
        ..ConfigArgs::default()
    };
    args.apply(&mut c);
    assert_eq!(c.backends.cpu_threads.map(NonZeroUsize::get), Some(5));
    assert!(c.hub_offline);
    assert_eq!(c.backend_options().cpu_threads(), 5);
}
