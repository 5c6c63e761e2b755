//! Skill `multimodal-embedding`: an embedding of a text or an image in
//! CLIP's shared projection space, as transformers' `get_text_features` /
//! `get_image_features` return them (not normalised; compare with cosine).
//!
//! Request: `{"text": "..."}` or `{"image": "<base64 or data URL>"}`.
//! Response: `{"embedding": [...]}` (plus `"tokens"` and `"truncated"`
//! for texts, longer ones cut at the text tower's positions). Texts and
//! images of one batch run through their towers together. So a CLIP
//! endpoint answers OpenAI's `/v1/embeddings` for texts as well.

use std::cell::RefCell;

use skill_sdk::image as img;
use skill_sdk::requests::Request;
use skill_sdk::tensors::{split_rows, take};
use skill_sdk::vision::clip::{Loaded, Output};
use skill_sdk::{invalid, Error, Guest, NamedTensor, Response, SkillInfo, Tensor};

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

enum Input {
    Text(String),
    Image(img::Rgb),
}

struct MultimodalEmbedding;

impl Guest for MultimodalEmbedding {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "multimodal-embedding".into(),
            task: "multimodal-embedding".into(),
            architectures: vec!["clip".into()],
            request_schema: r#"{"type":"object","oneOf":[{"required":["text"]},{"required":["image"]}],"properties":{"text":{"type":"string"},"image":{"type":"string"}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"embedding":{"type":"array","items":{"type":"number"}}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn load() -> Result<(), Error> {
        skill_sdk::state::set(&STATE, Loaded::open(Output::Features, "embedding")?);
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse_request, embed)
    }
}

fn parse_request(req: Request) -> Result<Input, Error> {
    req.only(&["text", "image"])?;
    match (req.opt_str("text")?, req.opt_str("image")?) {
        (Some(t), None) => Ok(Input::Text(t.to_string())),
        (None, Some(i)) => Ok(Input::Image(img::from_base64("image", i)?)),
        (Some(_), Some(_)) => Err(invalid("send `text` or `image`, not both")),
        (None, None) => Err(invalid("missing `text` or `image`")),
    }
}

fn response(row: Tensor, json: String) -> Result<Response, Error> {
    Ok(Response {
        json,
        tensors: vec![NamedTensor {
            name: "embedding".into(),
            value: row,
        }],
    })
}

fn embed(reqs: Vec<Input>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |l| {
        let mut out: Vec<Option<Result<Response, Error>>> = (0..reqs.len()).map(|_| None).collect();
        let (mut texts, mut text_at, mut images, mut image_at) = (vec![], vec![], vec![], vec![]);
        for (i, r) in reqs.into_iter().enumerate() {
            match r {
                Input::Text(t) => {
                    texts.push(t);
                    text_at.push(i);
                }
                Input::Image(im) => {
                    images.push(im);
                    image_at.push(i);
                }
            }
        }
        if !texts.is_empty() {
            let enc = l.tokenizer.encode_batch(&texts)?;
            let rows = split_rows(&take(l.text.run(&l.clip.text_inputs(&enc)?)?, "embedding")?)?;
            for (k, row) in rows.into_iter().enumerate() {
                let json = format!(
                    r#"{{"tokens":{},"truncated":{}}}"#,
                    enc.lengths[k], enc.truncated[k]
                );
                out[text_at[k]] = Some(response(row, json));
            }
        }
        if !images.is_empty() {
            let pixels = NamedTensor {
                name: "pixel_values".into(),
                value: l.pre.batch(&images)?,
            };
            let rows = split_rows(&take(l.image.run(&[pixels])?, "embedding")?)?;
            for (k, row) in rows.into_iter().enumerate() {
                out[image_at[k]] = Some(response(row, "{}".into()));
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(skill_sdk::internal("request lost"))))
            .collect())
    })
}

skill_sdk::export_skill!(MultimodalEmbedding);
