//! A composite model's `text_config` completed with its config class's
//! defaults: hub checkpoints (LLaVA 1.5, LLaVA-NeXT) save only the keys
//! that differ from `LlamaConfig` / `MistralConfig` / `Qwen2Config`
//! (transformers 5.25's defaults), and transformers fills in the rest; a
//! missing `model_type` is llama, as `LlavaConfig` assumes.

use serde_json::{json, Value};

/// The defaults of the decoder configs a LLaVA may embed.
fn defaults(model_type: &str) -> Option<Value> {
    Some(match model_type {
        "llama" => json!({
            "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
            "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu",
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": false,
        }),
        "mistral" => json!({
            "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "hidden_act": "silu", "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": false, "sliding_window": 4096,
        }),
        "qwen2" => json!({
            "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
            "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": false,
        }),
        _ => return None,
    })
}

/// `text` with the keys its config class defaults that it lacks (other
/// model types unchanged). A key present as `null` stays null (Mistral's
/// `sliding_window: null` turns the window off).
pub fn with_defaults(mut text: Value) -> Value {
    let Some(obj) = text.as_object_mut() else {
        return text;
    };
    let model_type = obj
        .entry("model_type")
        .or_insert_with(|| Value::String("llama".into()))
        .as_str()
        .unwrap_or("")
        .to_string();
    if let Some(Value::Object(d)) = defaults(&model_type) {
        for (k, v) in d {
            obj.entry(k).or_insert(v);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_hub_configs_get_their_class_defaults() {
        // llava-v1.6-mistral-7b-hf's text_config.
        let t = with_defaults(json!({
            "model_type": "mistral", "intermediate_size": 14336, "max_position_embeddings": 32768,
            "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
            "sliding_window": null, "vocab_size": 32064,
        }));
        assert_eq!(t["hidden_size"], 4096);
        assert_eq!(t["num_attention_heads"], 32);
        assert_eq!(t["max_position_embeddings"], 32768);
        assert_eq!(t["sliding_window"], Value::Null);
        // No model_type: llama, as LlavaConfig assumes.
        let t = with_defaults(json!({"vocab_size": 32064}));
        assert_eq!(t["model_type"], "llama");
        assert_eq!(t["intermediate_size"], 11008);
        assert_eq!(t["vocab_size"], 32064);
        let m = with_defaults(json!({"model_type": "mistral"}));
        assert_eq!(m["sliding_window"], 4096);
    }
}
