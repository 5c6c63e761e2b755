//! The encoder families served: one [`FamilySpec`] each, and the parts
//! several share (BERT's config keys, block, embeddings and heads).

use super::spec::*;

const BERT_KEYS: ConfigKeys = ConfigKeys {
    hidden: "hidden_size",
    heads: "num_attention_heads",
    layers: "num_hidden_layers",
    eps: Some("layer_norm_eps"),
    eps_default: 1e-12,
    act: "hidden_act",
    act_default: "gelu",
};

const BERT_BLOCK: BlockSpec = BlockSpec {
    qkv: Qkv::Separate {
        query: "attention.self.query",
        key: "attention.self.key",
        value: "attention.self.value",
    },
    out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    ffn_norm: "output.LayerNorm",
};

const BERT_EMBEDDINGS: EmbeddingSpec = EmbeddingSpec {
    word: "embeddings.word_embeddings",
    position: "embeddings.position_embeddings",
    token_type: Some("embeddings.token_type_embeddings"),
    norm: "embeddings.LayerNorm",
    project: None,
    project_before_norm: false,
    positions: Positions::FromZero,
    boxes: None,
};

const BERT_MLM: MlmSpec = MlmSpec {
    dense: Some("cls.predictions.transform.dense"),
    act: HeadAct::Config,
    norm: Some("cls.predictions.transform.LayerNorm"),
    norm_eps: None,
    decoder: "cls.predictions.decoder",
    bias: &["cls.predictions.bias", "cls.predictions.decoder.bias"],
    extra: None,
};

const POOLED_CLASSIFIER: ClassifierSpec = ClassifierSpec {
    input: ClassifierInput::Pooler,
    dense: None,
    out: "classifier",
};

const ROBERTA_MLM: MlmSpec = MlmSpec {
    dense: Some("lm_head.dense"),
    act: HeadAct::Named("gelu"),
    norm: Some("lm_head.layer_norm"),
    norm_eps: None,
    decoder: "lm_head.decoder",
    bias: &["lm_head.bias", "lm_head.decoder.bias"],
    extra: None,
};

const ROBERTA_CLASSIFIER: ClassifierSpec = ClassifierSpec {
    input: ClassifierInput::FirstToken,
    dense: Some(("classifier.dense", HeadAct::Named("tanh"))),
    out: "classifier.out_proj",
};

/// DeBERTa's context pooler (dense and `pooler_hidden_act` on the first
/// token), then the output layer.
const DEBERTA_CLASSIFIER: ClassifierSpec = ClassifierSpec {
    input: ClassifierInput::FirstToken,
    dense: Some(("pooler.dense", HeadAct::Pooler)),
    out: "classifier",
};

/// Every encoder family served, in no particular order.
pub static FAMILIES: &[FamilySpec] = &[
    FamilySpec {
        model_types: &["bert"],
        bases: &["bert.", ""],
        body: "",
        keys: BERT_KEYS,
        embeddings: BERT_EMBEDDINGS,
        layers: Layers::PerLayer("encoder.layer."),
        block: Block::PostNorm(BERT_BLOCK),
        attention: AttentionKind::Dense,
        pooler: PoolerSpec::DenseTanh("pooler.dense"),
        embed_with_pooler: false,
        mlm: Some(BERT_MLM),
        classifier: Some(POOLED_CLASSIFIER),
        token_classifier: Some("classifier"),
    },
    FamilySpec {
        model_types: &["layoutlm"],
        bases: &["layoutlm.", ""],
        body: "",
        keys: BERT_KEYS,
        embeddings: EmbeddingSpec {
            boxes: Some([
                "embeddings.x_position_embeddings",
                "embeddings.y_position_embeddings",
                "embeddings.h_position_embeddings",
                "embeddings.w_position_embeddings",
            ]),
            ..BERT_EMBEDDINGS
        },
        layers: Layers::PerLayer("encoder.layer."),
        block: Block::PostNorm(BERT_BLOCK),
        attention: AttentionKind::Dense,
        pooler: PoolerSpec::DenseTanh("pooler.dense"),
        embed_with_pooler: false,
        mlm: Some(BERT_MLM),
        classifier: Some(POOLED_CLASSIFIER),
        token_classifier: Some("classifier"),
    },
    FamilySpec {
        model_types: &["roberta", "camembert", "xlm-roberta"],
        bases: &["roberta.", ""],
        body: "",
        keys: BERT_KEYS,
        embeddings: EmbeddingSpec {
            positions: Positions::AfterPadding,
            ..BERT_EMBEDDINGS
        },
        layers: Layers::PerLayer("encoder.layer."),
        block: Block::PostNorm(BERT_BLOCK),
        attention: AttentionKind::Dense,
        pooler: PoolerSpec::DenseTanh("pooler.dense"),
        embed_with_pooler: false,
        mlm: Some(ROBERTA_MLM),
        classifier: Some(ROBERTA_CLASSIFIER),
        token_classifier: Some("classifier"),
    },
    FamilySpec {
        // CLAP's text tower: RoBERTa under `text_model.` of a ClapModel, or
        // a ClapTextModel on its own.
        model_types: &["clap_text_model"],
        bases: &["text_model.", ""],
        body: "",
        keys: BERT_KEYS,
        embeddings: EmbeddingSpec {
            positions: Positions::AfterPadding,
            ..BERT_EMBEDDINGS
        },
        layers: Layers::PerLayer("encoder.layer."),
        block: Block::PostNorm(BERT_BLOCK),
        attention: AttentionKind::Dense,
        pooler: PoolerSpec::DenseTanh("pooler.dense"),
        embed_with_pooler: false,
        mlm: None,
        classifier: None,
        token_classifier: None,
    },
    FamilySpec {
        model_types: &["electra"],
        bases: &["electra.", ""],
        body: "",
        keys: BERT_KEYS,
        embeddings: EmbeddingSpec {
            project: Some("embeddings_project"),
            ..BERT_EMBEDDINGS
        },
        layers: Layers::PerLayer("encoder.layer."),
        block: Block::PostNorm(BERT_BLOCK),
        attention: AttentionKind::Dense,
        pooler: PoolerSpec::None,
        embed_with_pooler: false,
        mlm: Some(MlmSpec {
            dense: Some("generator_predictions.dense"),
            act: HeadAct::Named("gelu"),
            norm: Some("generator_predictions.LayerNorm"),
            norm_eps: None,
            decoder: "generator_lm_head",
            bias: &["generator_lm_head.bias"],
            extra: None,
        }),
        classifier: Some(ClassifierSpec {
            input: ClassifierInput::FirstToken,
            dense: Some(("classifier.dense", HeadAct::Named("gelu"))),
            out: "classifier.out_proj",
        }),
        token_classifier: Some("classifier"),
    },
    FamilySpec {
        model_types: &["distilbert"],
        bases: &["distilbert.", ""],
        body: "",
        keys: ConfigKeys {
            hidden: "dim",
            heads: "n_heads",
            layers: "n_layers",
            eps: None,
            eps_default: 1e-12,
            act: "activation",
            act_default: "gelu",
        },
        embeddings: EmbeddingSpec {
            token_type: None,
            ..BERT_EMBEDDINGS
        },
        layers: Layers::PerLayer("transformer.layer."),
        block: Block::PostNorm(BlockSpec {
            qkv: Qkv::Separate {
                query: "attention.q_lin",
                key: "attention.k_lin",
                value: "attention.v_lin",
            },
            out: "attention.out_lin",
            attn_norm: "sa_layer_norm",
            ffn_in: "ffn.lin1",
            ffn_out: "ffn.lin2",
            ffn_norm: "output_layer_norm",
        }),
        attention: AttentionKind::Dense,
        pooler: PoolerSpec::None,
        embed_with_pooler: false,
        mlm: Some(MlmSpec {
            dense: Some("vocab_transform"),
            act: HeadAct::Config,
            norm: Some("vocab_layer_norm"),
            norm_eps: Some(1e-12),
            decoder: "vocab_projector",
            bias: &["vocab_projector.bias"],
            extra: None,
        }),
        classifier: Some(ClassifierSpec {
            input: ClassifierInput::FirstToken,
            dense: Some(("pre_classifier", HeadAct::Named("relu"))),
            out: "classifier",
        }),
        token_classifier: Some("classifier"),
    },
    FamilySpec {
        model_types: &["albert"],
        bases: &["albert.", ""],
        body: "",
        keys: ConfigKeys {
            act_default: "gelu_new",
            ..BERT_KEYS
        },
        embeddings: EmbeddingSpec {
            project: Some("encoder.embedding_hidden_mapping_in"),
            ..BERT_EMBEDDINGS
        },
        layers: Layers::AlbertGroups,
        block: Block::PostNorm(BlockSpec {
            qkv: Qkv::Separate {
                query: "attention.query",
                key: "attention.key",
                value: "attention.value",
            },
            out: "attention.dense",
            attn_norm: "attention.LayerNorm",
            ffn_in: "ffn",
            ffn_out: "ffn_output",
            ffn_norm: "full_layer_layer_norm",
        }),
        attention: AttentionKind::Dense,
        pooler: PoolerSpec::DenseTanh("pooler"),
        embed_with_pooler: false,
        mlm: Some(MlmSpec {
            dense: Some("predictions.dense"),
            act: HeadAct::Config,
            norm: Some("predictions.LayerNorm"),
            norm_eps: None,
            decoder: "predictions.decoder",
            bias: &["predictions.bias", "predictions.decoder.bias"],
            extra: None,
        }),
        classifier: Some(POOLED_CLASSIFIER),
        token_classifier: Some("classifier"),
    },
    FamilySpec {
        model_types: &["mpnet"],
        bases: &["mpnet.", ""],
        body: "",
        keys: BERT_KEYS,
        embeddings: EmbeddingSpec {
            token_type: None,
            positions: Positions::AfterPadding,
            ..BERT_EMBEDDINGS
        },
        layers: Layers::PerLayer("encoder.layer."),
        block: Block::PostNorm(BlockSpec {
            qkv: Qkv::Separate {
                query: "attention.attn.q",
                key: "attention.attn.k",
                value: "attention.attn.v",
            },
            out: "attention.attn.o",
            attn_norm: "attention.LayerNorm",
            ffn_in: "intermediate.dense",
            ffn_out: "output.dense",
            ffn_norm: "output.LayerNorm",
        }),
        attention: AttentionKind::Buckets {
            table: "encoder.relative_attention_bias",
        },
        pooler: PoolerSpec::DenseTanh("pooler.dense"),
        embed_with_pooler: false,
        mlm: Some(ROBERTA_MLM),
        classifier: Some(ROBERTA_CLASSIFIER),
        token_classifier: Some("classifier"),
    },
    FamilySpec {
        model_types: &["deberta"],
        bases: &["deberta.", ""],
        body: "",
        keys: ConfigKeys {
            eps_default: 1e-7,
            ..BERT_KEYS
        },
        embeddings: EmbeddingSpec {
            project: Some("embeddings.embed_proj"),
            project_before_norm: true,
            ..BERT_EMBEDDINGS
        },
        layers: Layers::PerLayer("encoder.layer."),
        block: Block::PostNorm(BlockSpec {
            qkv: Qkv::PerHeadFused {
                weight: "attention.self.in_proj",
                q_bias: "attention.self.q_bias",
                v_bias: "attention.self.v_bias",
            },
            ..BERT_BLOCK
        }),
        attention: AttentionKind::Disentangled {
            table: "encoder.rel_embeddings",
            norm: "encoder.LayerNorm",
            c2p: "attention.self.pos_proj",
            p2c: "attention.self.pos_q_proj",
            shared: ("attention.self.pos_proj", "attention.self.pos_q_proj"),
        },
        pooler: PoolerSpec::None,
        embed_with_pooler: false,
        mlm: Some(BERT_MLM),
        classifier: Some(DEBERTA_CLASSIFIER),
        token_classifier: Some("classifier"),
    },
    FamilySpec {
        model_types: &["deberta-v2"],
        bases: &["deberta.", ""],
        body: "",
        keys: ConfigKeys {
            eps_default: 1e-7,
            ..BERT_KEYS
        },
        embeddings: EmbeddingSpec {
            project: Some("embeddings.embed_proj"),
            project_before_norm: true,
            ..BERT_EMBEDDINGS
        },
        layers: Layers::PerLayer("encoder.layer."),
        block: Block::PostNorm(BlockSpec {
            qkv: Qkv::Separate {
                query: "attention.self.query_proj",
                key: "attention.self.key_proj",
                value: "attention.self.value_proj",
            },
            ..BERT_BLOCK
        }),
        attention: AttentionKind::Disentangled {
            table: "encoder.rel_embeddings",
            norm: "encoder.LayerNorm",
            c2p: "attention.self.pos_key_proj",
            p2c: "attention.self.pos_query_proj",
            shared: ("attention.self.key_proj", "attention.self.query_proj"),
        },
        pooler: PoolerSpec::None,
        embed_with_pooler: false,
        mlm: Some(BERT_MLM),
        classifier: Some(DEBERTA_CLASSIFIER),
        token_classifier: Some("classifier"),
    },
    FamilySpec {
        model_types: &["squeezebert"],
        bases: &["transformer.", ""],
        body: "",
        keys: BERT_KEYS,
        embeddings: BERT_EMBEDDINGS,
        layers: Layers::PerLayer("encoder.layers."),
        // Every projection is a grouped pointwise Conv1d (see Graph::linear).
        block: Block::PostNorm(BlockSpec {
            qkv: Qkv::Separate {
                query: "attention.query",
                key: "attention.key",
                value: "attention.value",
            },
            out: "post_attention.conv1d",
            attn_norm: "post_attention.layernorm",
            ffn_in: "intermediate.conv1d",
            ffn_out: "output.conv1d",
            ffn_norm: "output.layernorm",
        }),
        attention: AttentionKind::Dense,
        pooler: PoolerSpec::DenseTanh("pooler.dense"),
        embed_with_pooler: false,
        mlm: Some(BERT_MLM),
        classifier: Some(POOLED_CLASSIFIER),
        token_classifier: Some("classifier"),
    },
    FamilySpec {
        model_types: &["mobilebert"],
        bases: &["mobilebert.", ""],
        body: "",
        keys: BERT_KEYS,
        embeddings: EmbeddingSpec {
            project: Some("embeddings.embedding_transformation"),
            ..BERT_EMBEDDINGS
        },
        layers: Layers::PerLayer("encoder.layer."),
        block: Block::MobileBert,
        attention: AttentionKind::Dense,
        pooler: PoolerSpec::DenseTanh("pooler.dense"),
        embed_with_pooler: false,
        mlm: Some(MlmSpec {
            extra: Some("cls.predictions.dense"),
            ..BERT_MLM
        }),
        classifier: Some(POOLED_CLASSIFIER),
        token_classifier: Some("classifier"),
    },
    FamilySpec {
        model_types: &["longformer"],
        bases: &["longformer.", ""],
        body: "",
        keys: BERT_KEYS,
        embeddings: EmbeddingSpec {
            positions: Positions::AfterPadding,
            ..BERT_EMBEDDINGS
        },
        layers: Layers::PerLayer("encoder.layer."),
        block: Block::PostNorm(BERT_BLOCK),
        attention: AttentionKind::SlidingWindow {
            global: [
                "attention.self.query_global",
                "attention.self.key_global",
                "attention.self.value_global",
            ],
        },
        pooler: PoolerSpec::DenseTanh("pooler.dense"),
        embed_with_pooler: false,
        mlm: Some(ROBERTA_MLM),
        classifier: Some(ROBERTA_CLASSIFIER),
        token_classifier: Some("classifier"),
    },
    FamilySpec {
        model_types: &["dpr"],
        bases: &["question_encoder.", "ctx_encoder."],
        body: "bert_model.",
        keys: BERT_KEYS,
        embeddings: BERT_EMBEDDINGS,
        layers: Layers::PerLayer("encoder.layer."),
        block: Block::PostNorm(BERT_BLOCK),
        attention: AttentionKind::Dense,
        pooler: PoolerSpec::ClsProjection("encode_proj"),
        embed_with_pooler: true,
        mlm: None,
        classifier: None,
        token_classifier: None,
    },
    FLAUBERT,
];

/// FlauBERT (XLM's architecture): learned positions from 0, no segments
/// (its tokenizer makes no token types), a bare tied output projection, and
/// the sequence summary on the first token as its classifier.
const FLAUBERT: FamilySpec = FamilySpec {
    model_types: &["flaubert"],
    bases: &["transformer.", ""],
    body: "",
    keys: ConfigKeys {
        hidden: "emb_dim",
        heads: "n_heads",
        layers: "n_layers",
        eps: Some("layer_norm_eps"),
        eps_default: 1e-12,
        // `gelu_activation` (a boolean) is read by `encoder::xlm`.
        act: "hidden_act",
        act_default: "gelu",
    },
    embeddings: EmbeddingSpec {
        word: "embeddings",
        position: "position_embeddings",
        token_type: None,
        norm: "layer_norm_emb",
        project: None,
        project_before_norm: false,
        positions: Positions::FromZero,
        boxes: None,
    },
    layers: Layers::Xlm,
    block: Block::Xlm,
    attention: AttentionKind::Dense,
    pooler: PoolerSpec::None,
    embed_with_pooler: false,
    mlm: Some(MlmSpec {
        dense: None,
        act: HeadAct::Config,
        norm: None,
        norm_eps: None,
        decoder: "pred_layer.proj",
        bias: &["pred_layer.proj.bias"],
        extra: None,
    }),
    classifier: Some(ClassifierSpec {
        input: ClassifierInput::FirstToken,
        dense: None,
        out: "sequence_summary.summary",
    }),
    token_classifier: Some("classifier"),
};

/// The spec serving `model_type`.
pub fn family(model_type: &str) -> Option<&'static FamilySpec> {
    FAMILIES
        .iter()
        .find(|f| f.model_types.contains(&model_type))
}

/// Every `model_type` served.
pub fn model_types() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.model_types.iter().copied())
        .collect()
}
