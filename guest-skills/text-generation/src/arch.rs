//! The decoder architectures text-generation builds, by `model_type`
//! (and, for Mistral, whether the config sets a sliding window).

use skill_sdk::config::Json;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arch {
    Gpt2,
    Opt,
    Llama,
    Qwen2,
    Bloom,
    /// GPT-J: partial interleaved rotary, attention and MLP in parallel.
    GptJ,
    /// GPT-Neo: unscaled attention, local (sliding-window) layers.
    GptNeo,
    /// CodeGen: GPT-J's block with a q/v/k projection fused across four
    /// shards.
    CodeGen,
    /// Mistral with a `sliding_window`: LLaMA's layers, every one attending
    /// within the window (with a null one, a mistral config is [`Arch::Llama`]).
    Mistral,
}

impl Arch {
    /// Whether the graphs read each cached key's position
    /// (`cache_positions`): ALiBi and sliding windows.
    pub fn key_positions(self) -> bool {
        matches!(self, Arch::Bloom | Arch::GptNeo | Arch::Mistral)
    }

    /// The architecture of a decoder config: [`Arch::from_model_type`],
    /// except that a mistral config with `sliding_window` null is LLaMA's
    /// graph (the same layers, no window; absent, the window is
    /// `MistralConfig`'s 4096).
    pub fn from_config(t: &str, c: &Json) -> Option<Arch> {
        match (t, c.value.get("sliding_window")) {
            ("mistral", Some(serde_json::Value::Null)) => Some(Arch::Llama),
            _ => Arch::from_model_type(t),
        }
    }

    pub fn from_model_type(t: &str) -> Option<Arch> {
        Some(match t {
            "gpt2" => Arch::Gpt2,
            "opt" => Arch::Opt,
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            // Qwen2-VL's decoder (with M-RoPE: `qwen2_vl.rs`).
            "qwen2_vl" | "qwen2_vl_text" => Arch::Qwen2,
            "bloom" => Arch::Bloom,
            "gptj" => Arch::GptJ,
            "gpt_neo" => Arch::GptNeo,
            "codegen" => Arch::CodeGen,
            "mistral" => Arch::Mistral,
            _ => return None,
        })
    }
}
