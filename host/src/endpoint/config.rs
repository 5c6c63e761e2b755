//! Endpoint configuration (from a JSON or TOML file, flags, or the admin API).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::EndpointError;
use crate::backend::{registry, Device, Precision};

/// How an endpoint forms batches.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchPolicy {
    /// Most requests per batch.
    pub max_batch_size: usize,
    /// Longest a request waits for companions before its batch starts, ms.
    pub max_wait_ms: u64,
    /// Most padded tokens per batch (longest request x batch size).
    pub max_batch_tokens: usize,
    /// Most requests waiting; beyond it calls fail at once with `overloaded`.
    pub queue_capacity: usize,
    /// Start a batch at once when a worker is idle (best latency for
    /// servers). Off, a batch waits up to `max_wait_ms` to fill (best for
    /// batch jobs whose requests are all queued at once).
    pub dispatch_when_idle: bool,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_batch_size: 32,
            max_wait_ms: 5,
            max_batch_tokens: 16_384,
            queue_capacity: 1024,
            dispatch_when_idle: true,
        }
    }
}

impl BatchPolicy {
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }

    /// No batching: one request per skill call.
    pub fn unbatched() -> Self {
        BatchPolicy {
            max_batch_size: 1,
            max_wait_ms: 0,
            ..Default::default()
        }
    }
}

/// One endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub name: String,
    /// Skill name or path to a .wasm component.
    pub skill: String,
    /// Model directory or hub id.
    pub model: String,
    /// Ordered device list (`["cuda:0", "openvino", "cpu"]` or `"openvino,cpu"`).
    #[serde(default = "default_devices", deserialize_with = "devices")]
    pub devices: Vec<Device>,
    #[serde(default = "default_precision", deserialize_with = "precision")]
    pub precision: Precision,
    /// Replicas: devices that each serve the endpoint with `instances`
    /// workers (`["cuda:0", "cuda:1"]`, `"cuda:*"` for every visible CUDA
    /// device; a device may repeat). Batches go to the least-loaded one;
    /// empty: the `devices` fallback list serves.
    #[serde(default, deserialize_with = "replica_list")]
    pub replicas: Vec<Device>,
    /// Skill instances (worker threads) serving batches in parallel (per
    /// replica, with replicas).
    #[serde(default = "default_instances")]
    pub instances: usize,
    #[serde(default)]
    pub batching: BatchPolicy,
    /// Pins the skill to a digest (`sha256:<hex>` or the IPFS CID): loading
    /// refuses a component with other bytes. `skill = "NAME@sha256:..."`
    /// pins the same way.
    #[serde(default)]
    pub skill_digest: Option<String>,
}

fn default_devices() -> Vec<Device> {
    vec![Device::Cpu]
}

fn default_precision() -> Precision {
    Precision::F32
}

fn default_instances() -> usize {
    1
}

/// A device list as a string (`"cuda,cpu"`) or a list of strings, joined.
fn list_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    Ok(match List::deserialize(d)? {
        List::One(s) => s,
        List::Many(v) => v.join(","),
    })
}

fn devices<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Device>, D::Error> {
    registry::parse_list(&list_text(d)?).map_err(serde::de::Error::custom)
}

fn replica_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Device>, D::Error> {
    super::replicas::parse_replicas(&list_text(d)?).map_err(serde::de::Error::custom)
}

fn precision<'de, D: Deserializer<'de>>(d: D) -> Result<Precision, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

impl EndpointConfig {
    /// A config with defaults for everything but the essentials.
    pub fn new(
        name: &str,
        skill: &str,
        model: &str,
        devices: Vec<Device>,
        precision: Precision,
    ) -> Self {
        EndpointConfig {
            name: name.into(),
            skill: skill.into(),
            model: model.into(),
            devices,
            precision,
            replicas: Vec::new(),
            instances: 1,
            batching: BatchPolicy::default(),
            skill_digest: None,
        }
    }

    /// The skill as the runner loads it: with `@digest` when pinned.
    pub fn pinned_skill(&self) -> String {
        match (&self.skill_digest, crate::digest::split_pin(&self.skill).1) {
            (Some(d), None) => match crate::digest::Digest::parse(d) {
                Ok(d) => format!("{}@{d}", self.skill),
                Err(_) => self.skill.clone(),
            },
            _ => self.skill.clone(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), EndpointError> {
        let bad = |message: String| EndpointError::Config {
            name: self.name.clone(),
            message,
        };
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(bad("names use letters, digits, '-', '_' and '.'".into()));
        }
        let b = &self.batching;
        if b.max_batch_size == 0 || b.max_batch_size > 4096 {
            return Err(bad(format!(
                "max_batch_size must be 1..=4096, got {}",
                b.max_batch_size
            )));
        }
        if b.queue_capacity == 0 || b.queue_capacity > 1_000_000 {
            return Err(bad(format!(
                "queue_capacity must be 1..=1000000, got {}",
                b.queue_capacity
            )));
        }
        if b.max_wait_ms > 10_000 {
            return Err(bad(format!(
                "max_wait_ms must be at most 10000, got {}",
                b.max_wait_ms
            )));
        }
        if b.max_batch_tokens == 0 {
            return Err(bad("max_batch_tokens must be positive".into()));
        }
        if self.instances == 0 || self.instances > 64 {
            return Err(bad(format!(
                "instances must be 1..=64, got {}",
                self.instances
            )));
        }
        if self.devices.is_empty() {
            return Err(bad("the device list is empty".into()));
        }
        if let Some(d) = &self.skill_digest {
            let d = crate::digest::Digest::parse(d).map_err(|e| bad(e.to_string()))?;
            if let Some(p) = crate::digest::split_pin(&self.skill).1 {
                if p != d {
                    return Err(bad(format!(
                        "`skill` is pinned to {p} but `skill_digest` is {d}"
                    )));
                }
            }
        }
        if self.replicas.len() > 64 {
            return Err(bad(format!(
                "at most 64 replicas, got {}",
                self.replicas.len()
            )));
        }
        if !self.replicas.is_empty() && self.devices != default_devices() {
            return Err(bad(
                "give `replicas` (devices that each serve) or `devices` (an ordered fallback \
                 list), not both: a batch a replica fails moves to another replica"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A file of endpoints: `{"endpoints": [...]}` in JSON, or `[[endpoints]]`
/// tables in TOML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsFile {
    pub endpoints: Vec<EndpointConfig>,
}

impl EndpointsFile {
    /// Parses by extension (`.toml`, else JSON).
    pub fn parse(path: &std::path::Path, text: &str) -> Result<Self, String> {
        if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(text).map_err(|e| format!("{}: {e}", path.display()))
        } else {
            serde_json::from_str(text).map_err(|e| format!("{}: {e}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_and_toml() {
        let j = r#"{"endpoints":[{"name":"e","skill":"text-embedding","model":"m","devices":"openvino,cpu","batching":{"max_batch_size":8}}]}"#;
        let f = EndpointsFile::parse(std::path::Path::new("x.json"), j).unwrap();
        assert_eq!(f.endpoints[0].devices.len(), 2);
        assert_eq!(f.endpoints[0].batching.max_batch_size, 8);
        assert_eq!(f.endpoints[0].batching.queue_capacity, 1024);
        let t = "[[endpoints]]\nname = \"e\"\nskill = \"s\"\nmodel = \"m\"\ndevices = [\"cpu\"]\nprecision = \"f32\"\n";
        let f = EndpointsFile::parse(std::path::Path::new("x.toml"), t).unwrap();
        assert_eq!(f.endpoints[0].devices, vec![Device::Cpu]);
        assert!(EndpointsFile::parse(
            std::path::Path::new("x.json"),
            r#"{"endpoints":[{"name":"e","skill":"s","model":"m","devices":"tpu"}]}"#
        )
        .is_err());
        assert!(EndpointsFile::parse(
            std::path::Path::new("x.json"),
            r#"{"endpoints":[{"name":"e","skill":"s","model":"m","typo":1}]}"#
        )
        .is_err());
    }

    #[test]
    fn validation_rejects_nonsense() {
        let mut c = EndpointConfig::new("e", "s", "m", vec![Device::Cpu], Precision::F32);
        assert!(c.validate().is_ok());
        c.batching.max_batch_size = 0;
        assert!(c.validate().is_err());
        c.batching.max_batch_size = 4;
        c.name = "bad name".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn skill_digest_pins_the_skill() {
        let d = crate::digest::Digest::of(b"component");
        let t = format!(
            "[[endpoints]]\nname = \"e\"\nskill = \"s\"\nmodel = \"m\"\nskill_digest = \"{d}\"\n"
        );
        let f = EndpointsFile::parse(std::path::Path::new("x.toml"), &t).unwrap();
        let c = &f.endpoints[0];
        assert!(c.validate().is_ok());
        assert_eq!(c.pinned_skill(), format!("s@{d}"));
        let mut c = c.clone();
        c.skill_digest = Some("sha256:12".into());
        assert!(c.validate().is_err());
        c.skill_digest = Some(d.cid());
        c.skill = format!("s@{}", crate::digest::Digest::of(b"other"));
        assert!(c.validate().is_err());
    }
}
