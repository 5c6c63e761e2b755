//! Skill `zero-shot-image-classification`: how well each candidate label
//! describes an image, with the semantics of transformers'
//! `zero-shot-image-classification` pipeline, for CLIP.
//!
//! Request: `{"image": "<base64 or data URL>", "candidate_labels": ["a cat",
//! "a dog"], "hypothesis_template": "This is a photo of {}."}`. Response:
//! `{"labels": [{"label", "score"}]}`, best first (ties keep the given
//! order): the softmax over the labels of the image's logits.
//!
//! Images of a batch run through the image tower together, and every
//! distinct hypothesis of the batch through the text tower once, unless an
//! earlier call embedded it (`TextCache`: the same labels come back); the
//! towers' outputs are unit vectors (the text ones times CLIP's logit
//! scale), so the logits are their dot products.

use std::cell::RefCell;

use skill_sdk::image as img;
use skill_sdk::requests::Request;
use skill_sdk::scores::{distinct_hypotheses, zero_shot_answers, Candidates, TextCache};
use skill_sdk::tensors::{f32_values, take};
use skill_sdk::vision::clip::{Loaded, Output};
use skill_sdk::{Error, Guest, NamedTensor, Response, SkillInfo};

const DEFAULT_TEMPLATE: &str = "This is a photo of {}.";

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
    static TEXTS: RefCell<TextCache> = RefCell::new(TextCache::default());
}

struct ZeroShotRequest {
    image: img::Rgb,
    candidates: Candidates,
}

struct ZeroShot;

impl Guest for ZeroShot {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "zero-shot-image-classification".into(),
            task: "zero-shot-image-classification".into(),
            architectures: vec!["clip".into()],
            request_schema: r#"{"type":"object","required":["image","candidate_labels"],"properties":{"image":{"type":"string"},"candidate_labels":{"type":"array","items":{"type":"string"},"minItems":1},"hypothesis_template":{"type":"string"}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"labels":{"type":"array","items":{"type":"object","properties":{"label":{"type":"string"},"score":{"type":"number"}}}}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // The defaults (512 MiB, 5e10 fuel per call): decoding inputs
            // (images, audio) may need them (docs/skills.md).
            limits: None,
        }
    }

    fn load() -> Result<(), Error> {
        skill_sdk::state::set(&STATE, Loaded::open(Output::Logits, "embeds")?);
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse_request, classify)
    }
}

fn parse_request(req: Request) -> Result<ZeroShotRequest, Error> {
    req.only(&["image", "candidate_labels", "hypothesis_template"])?;
    let candidates = Candidates::read(&req, DEFAULT_TEMPLATE)?;
    Ok(ZeroShotRequest {
        image: img::from_base64("image", req.str("image")?)?,
        candidates,
    })
}

fn classify(reqs: Vec<ZeroShotRequest>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |l| {
        // Image embeddings [n, d].
        let images: Vec<img::Rgb> = reqs.iter().map(|r| r.image.clone()).collect();
        let pixels = NamedTensor {
            name: "pixel_values".into(),
            value: l.pre.batch(&images)?,
        };
        let image = f32_values(&take(l.image.run(&[pixels])?, "embeds")?)?;
        let batch: Vec<&Candidates> = reqs.iter().map(|r| &r.candidates).collect();
        let (texts, index) = distinct_hypotheses(batch.iter().copied());
        let text = TEXTS.with(|cache| {
            cache.borrow_mut().embed(&texts, |missing| {
                let enc = l.tokenizer.encode_batch(missing)?;
                let inputs = l.clip.text_inputs(&enc)?;
                f32_values(&take(l.text.run(&inputs)?, "embeds")?)
            })
        })?;
        zero_shot_answers(&image, &text, &index, &batch)
    })
}

skill_sdk::export_skill!(ZeroShot);
