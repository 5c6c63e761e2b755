//! Decoder architectures as data: one [`DecoderSpec`] per architecture
//! (`families.rs`; the types in `spec.rs`), looked up by config.json's
//! `model_type`. The graph builder (`decoder.rs`, `layer.rs`) reads only
//! the spec.

mod families;
mod spec;

use skill_sdk::config::Json;

pub use families::DECODERS;
pub use spec::*;

/// The spec of a decoder config: the one serving its `model_type`, except
/// where the config sets the attention window null (a mistral config is
/// then LLaMA's graph: the same layers, no window; absent, the window is
/// the spec's default).
pub fn from_config(model_type: &str, c: &Json) -> Option<&'static DecoderSpec> {
    let spec = DECODERS
        .iter()
        .find(|s| s.model_types.contains(&model_type))?;
    match spec.window {
        Window::All {
            key, unwindowed, ..
        } if c.value.get(key).is_some_and(|v| v.is_null()) => Some(unwindowed),
        _ => Some(spec),
    }
}

/// The `model_type`s served, one per architecture (for error messages
/// and `describe`); with `llava_only`, those that may be a LLaVA's decoder
/// (rooted at the model base).
pub fn served(llava_only: bool) -> Vec<&'static str> {
    (DECODERS.iter())
        .filter(|s| !llava_only || s.root == Root::Base)
        .filter_map(|s| s.model_types.first().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_type_has_one_spec() {
        let mut seen = std::collections::HashSet::new();
        for s in DECODERS {
            for t in s.model_types {
                assert!(seen.insert(*t), "`{t}` is served by two specs");
            }
        }
    }

    #[test]
    fn a_null_window_is_the_unwindowed_spec() {
        let json = |v: serde_json::Value| Json {
            value: v,
            file: "config.json".into(),
        };
        let c = json(serde_json::json!({"sliding_window": null}));
        assert_eq!(from_config("mistral", &c).map(|s| s.name), Some("llama"));
        let c = json(serde_json::json!({"sliding_window": 6}));
        assert_eq!(from_config("mistral", &c).map(|s| s.name), Some("mistral"));
        let c = json(serde_json::json!({}));
        assert_eq!(from_config("qwen2_vl", &c).map(|s| s.name), Some("qwen2"));
        assert!(from_config("bert", &c).is_none());
    }

    #[test]
    fn llava_decoders_are_those_rooted_at_the_model_base() {
        assert_eq!(served(true), ["llama", "qwen2", "mistral"]);
        assert_eq!(served(false).len(), DECODERS.len());
    }
}
