//! Fidelity of `image-classification` against transformers on the tiny
//! vision fixtures (tests/fixtures/tiny-{vit,deit,deit-plain}, written by
//! tests/fixtures/gen_tiny_vision.py) from image bytes (PNG, JPEG with an
//! EXIF rotation, WebP, GIF, BMP, RGBA and palette images): raw logits
//! within 1e-4 of the model's on the slow (Pillow) processor's
//! `pixel_values` for the losslessly decoded formats (the decode, Pillow's
//! resize and the model are exact), within 5e-2 for JPEG (libjpeg-turbo's
//! IDCT and upsampling differ from ours by a few levels); the pipeline's
//! top-k labels identical and scores within 2e-3 (5e-3 for JPEG); on every
//! device.

mod common;

use common::*;
use host::backend::Precision;
use serde_json::Value;

fn b64(path: &std::path::Path) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).expect("image"))
}

/// Images whose pixel_values we reproduce exactly: the losslessly stored
/// ones (JPEG decoders differ from libjpeg-turbo by a few levels).
fn exact(file: &str) -> bool {
    !file.ends_with(".jpg")
}

fn reference(name: &str) -> Value {
    let text =
        std::fs::read_to_string(fixture(&format!("{name}/reference.json"))).expect("reference");
    serde_json::from_str(&text).expect("reference JSON")
}

fn check(name: &str, device: &str) {
    check_model(name, &fixture(name), device);
}

/// [`check`] with fixture `name`'s cases on `model` (the fixture or a copy).
fn check_model(name: &str, model: &std::path::Path, device: &str) {
    let r = reference(name);
    let images: Vec<String> = (r["images"].as_array().expect("images").iter())
        .map(|i| i.as_str().expect("name").to_string())
        .collect();
    let labels = r["id2label"].as_object().map_or(0, |m| m.len());
    let mut run = runner("image-classification", model, device, Precision::F32);
    let ask = |function: &str, top_k: usize| -> Vec<String> {
        images
            .iter()
            .map(|f| {
                let image = b64(&fixture(&format!("images/{f}")));
                serde_json::json!({"image": image, "top_k": top_k, "function_to_apply": function})
                    .to_string()
            })
            .collect()
    };
    let id = |label: &str| -> usize {
        (r["id2label"].as_object().expect("id2label").iter())
            .find(|(_, v)| v.as_str() == Some(label))
            .and_then(|(k, _)| k.parse().ok())
            .expect("label id")
    };
    // Raw logits, every label, in one batch of all images.
    let raw = run.handle(&ask("none", labels));
    for (i, (f, got)) in images.iter().zip(raw).enumerate() {
        let got = got.unwrap_or_else(|e| panic!("{name} {f}: {e}"));
        let want = r["logits"][i].as_array().expect("logits");
        // JPEG decoding differs from libjpeg-turbo by a few levels (below);
        // the tiny Swin amplifies that more than the ViTs.
        let tol = match (exact(f), name.starts_with("tiny-swin")) {
            (true, _) => 1e-4,
            (false, false) => 5e-2,
            (false, true) => 1e-1,
        };
        for l in got.json["labels"].as_array().expect("labels") {
            let k = id(l["label"].as_str().expect("label"));
            let (g, w) = (l["score"].as_f64().unwrap(), want[k].as_f64().unwrap());
            assert!(
                (g - w).abs() <= tol,
                "{name} {device} {f}: logit {k} {g} vs {w}"
            );
        }
    }
    // The pipeline's answer, one image at a time and all together.
    for bs in [1, images.len()] {
        let reqs = ask("softmax", 5);
        let mut answers = Vec::new();
        for chunk in reqs.chunks(bs) {
            answers.extend(run.handle(chunk));
        }
        for (i, (f, got)) in images.iter().zip(answers).enumerate() {
            let got = got.unwrap_or_else(|e| panic!("{name} {f}: {e}"));
            let (g, w) = (
                got.json["labels"].as_array().unwrap(),
                r["pipeline"][i].as_array().unwrap(),
            );
            assert_eq!(g.len(), w.len(), "{name} {f}");
            assert_eq!(
                g[0]["label"], w[0]["label"],
                "{name} {device} {f}: top-1 {g:?} vs {w:?}"
            );
            // JPEG: our decoder's IDCT and chroma upsampling differ from
            // libjpeg-turbo's by a few levels, which this random tiny model
            // amplifies; the label order must still agree at the top.
            let tol = if f.ends_with(".jpg") { 5e-3 } else { 2e-3 };
            for (a, b) in g.iter().zip(w) {
                let (x, y) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
                assert!(
                    (x - y).abs() <= tol,
                    "{name} {device} bs{bs} {f}: {a} vs {b}"
                );
            }
        }
    }
    eprintln!("{name} {device}: {} images ok", images.len());
}

fn every_fixture(device: &str) {
    if !available(device) {
        return;
    }
    for name in [
        "tiny-vit",
        "tiny-deit",
        "tiny-deit-plain",
        "tiny-swin",
        "tiny-swin-pad",
        "tiny-convnext",
    ] {
        check(name, device);
    }
}

#[test]
fn image_classification_matches_transformers_on_cpu() {
    every_fixture("cpu");
}

#[test]
fn image_classification_matches_transformers_on_openvino() {
    every_fixture("openvino");
}

#[test]
fn image_classification_matches_transformers_on_cuda() {
    every_fixture("cuda");
}

/// A model saved by transformers 5 keeps its image processor's settings in
/// processor_config.json (`image_processor`), with no
/// preprocessor_config.json: read as transformers reads them.
#[test]
fn image_processor_settings_nested_in_processor_config() {
    if available("cpu") {
        let dir = nested_processor_copy("tiny-vit", "image_processor");
        check_model("tiny-vit", dir.path(), "cpu");
    }
}

#[test]
fn bad_images_fail_their_own_request() {
    if !available("cpu") {
        return;
    }
    let mut run = runner(
        "image-classification",
        &fixture("tiny-vit"),
        "cpu",
        Precision::F32,
    );
    let good = b64(&fixture("images/gradient_64x48.png"));
    let truncated = {
        use base64::Engine;
        let bytes = std::fs::read(fixture("images/gradient_64x48.png")).unwrap();
        base64::engine::general_purpose::STANDARD.encode(&bytes[..bytes.len() / 2])
    };
    // A PNG header claiming 100000 x 100000 pixels (a decompression bomb).
    let bomb = {
        use base64::Engine;
        let mut chunk = b"IHDR".to_vec();
        chunk.extend_from_slice(&100_000u32.to_be_bytes());
        chunk.extend_from_slice(&100_000u32.to_be_bytes());
        chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\r".to_vec();
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
        base64::engine::general_purpose::STANDARD.encode(png)
    };
    let cases = [
        (
            serde_json::json!({"image": "not base64!"}),
            "not valid base64",
        ),
        (serde_json::json!({"image": "aGVsbG8="}), "not an image"),
        (serde_json::json!({"image": truncated}), "cannot decode"),
        (serde_json::json!({"image": bomb}), "outside the limits"),
        (
            serde_json::json!({"image": format!("data:image/png,{good}")}),
            "data URL",
        ),
        (
            serde_json::json!({"image": good.clone(), "top_k": 0}),
            "at least 1",
        ),
        (serde_json::json!({"text": "a cat"}), "unknown key `text`"),
        (serde_json::json!({"top_k": 3}), "missing `image`"),
    ];
    let mut batch: Vec<String> = cases.iter().map(|(c, _)| c.to_string()).collect();
    batch.push(serde_json::json!({"image": format!("data:image/png;base64,{good}")}).to_string());
    let answers = run.handle(&batch);
    for ((req, text), got) in cases.iter().zip(&answers) {
        let e = got
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("{req} must fail"))
            .to_string();
        assert!(e.contains(text), "{req}: {e}");
    }
    let ok = answers
        .last()
        .unwrap()
        .as_ref()
        .expect("a data URL image is answered");
    assert_eq!(ok.json["labels"].as_array().map(|l| l.len()), Some(5));
}

/// CRC-32 (IEEE) of a PNG chunk's type and data.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// CLIP zero-shot classification: the pipeline's labels and scores (and
/// the logits behind them, through `function_to_apply`-free softmax) for
/// every test image, in one batch and one at a time.
fn clip(device: &str) {
    let name = "tiny-clip";
    let r = reference(name);
    let z = &r["zero_shot"];
    let labels = z["candidate_labels"].clone();
    let mut run = runner(
        "zero-shot-image-classification",
        &fixture(name),
        device,
        Precision::F32,
    );
    let results = z["results"].as_array().expect("results");
    let reqs: Vec<String> = results
        .iter()
        .map(|res| {
            let f = res["file"].as_str().expect("file");
            let image = b64(&fixture(&format!("images/{f}")));
            serde_json::json!({"image": image, "candidate_labels": labels}).to_string()
        })
        .collect();
    for bs in [1, reqs.len()] {
        let mut answers = Vec::new();
        for chunk in reqs.chunks(bs) {
            answers.extend(run.handle(chunk));
        }
        for (res, got) in results.iter().zip(answers) {
            let f = res["file"].as_str().unwrap();
            let got = got.unwrap_or_else(|e| panic!("{name} {f}: {e}"));
            let (g, w) = (
                got.json["labels"].as_array().unwrap(),
                res["scores"].as_array().unwrap(),
            );
            assert_eq!(g.len(), w.len());
            assert_eq!(
                g[0]["label"], w[0]["label"],
                "{name} {device} {f}: {g:?} vs {w:?}"
            );
            let tol = if f.ends_with(".jpg") || !exact(f) {
                5e-3
            } else {
                1e-4
            };
            for b in w {
                let a = g
                    .iter()
                    .find(|a| a["label"] == b["label"])
                    .expect("label answered");
                let (x, y) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
                assert!(
                    (x - y).abs() <= tol,
                    "{name} {device} bs{bs} {f}: {a} vs {b}"
                );
            }
        }
    }
    // A template without a slot and a bad label list are answered or refused clearly.
    let image = b64(&fixture("images/gradient_64x48.png"));
    let bad = serde_json::json!({"image": image, "candidate_labels": []}).to_string();
    let e = match run.handle(&[bad]).remove(0) {
        Ok(_) => panic!("empty labels must fail"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("non-empty list"), "{e}");
    eprintln!("{name} {device}: {} images ok", results.len());
}

#[test]
fn clip_zero_shot_matches_transformers() {
    for device in ["cpu", "openvino", "cuda"] {
        if available(device) {
            clip(device);
        }
    }
}

/// CLIP's text and image features (`get_text_features` /
/// `get_image_features`), mixed in one batch: fp32 cosine >= 0.99999 and
/// max-abs <= 1e-4 (JPEG: cosine >= 0.999).
#[test]
fn clip_embeddings_match_transformers() {
    let name = "tiny-clip";
    let r = reference(name);
    let vecs = |k: &str| -> Vec<Vec<f32>> {
        (r[k].as_array().expect(k).iter())
            .map(|v| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect()
    };
    let (text_want, image_want) = (vecs("text_embeds"), vecs("image_embeds"));
    let texts: Vec<&str> = r["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let images: Vec<&str> = r["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for device in ["cpu", "openvino", "cuda"] {
        if !available(device) {
            continue;
        }
        let mut run = runner(
            "multimodal-embedding",
            &fixture(name),
            device,
            Precision::F32,
        );
        let mut reqs: Vec<String> = texts
            .iter()
            .map(|t| serde_json::json!({"text": t}).to_string())
            .collect();
        reqs.extend(images.iter().map(|f| {
            serde_json::json!({"image": b64(&fixture(&format!("images/{f}")))}).to_string()
        }));
        let answers = run.handle(&reqs);
        let want = text_want.iter().chain(&image_want);
        let names = texts.iter().chain(&images);
        for ((got, want), what) in answers.into_iter().zip(want).zip(names) {
            let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
            let v = got
                .tensor("embedding")
                .unwrap()
                .to_f32("embedding")
                .unwrap();
            let (cos, max) = compare(&v, want);
            let ok = match what.ends_with(".jpg") {
                true => cos >= 0.999,
                false => cos >= 0.99999 && max <= 1e-4,
            };
            assert!(ok, "{name} {device} {what}: cosine {cos}, max-abs {max}");
        }
        eprintln!(
            "{name} {device}: {} texts and {} images ok",
            texts.len(),
            images.len()
        );
    }
}

/// VideoMAE fixtures (tests/fixtures/gen_tiny_video.py): the clip of PNG
/// frames and the animated GIF, logits within 1e-4 and the softmax
/// ranking of transformers, each clip alone and both in one batch.
fn videomae(device: &str) {
    if !available(device) {
        return;
    }
    for name in ["tiny-videomae", "tiny-videomae-cls"] {
        let r = reference(name);
        let mut run = runner(
            "video-classification",
            &fixture(name),
            device,
            Precision::F32,
        );
        let frames: Vec<String> = (r["frames"].as_array().unwrap().iter())
            .map(|f| b64(&fixture(&format!("video/{}", f.as_str().unwrap()))))
            .collect();
        let gif = b64(&fixture(&format!("video/{}", r["gif"].as_str().unwrap())));
        let ask = |function: &str| -> Vec<String> {
            vec![
                serde_json::json!({"frames": frames, "top_k": 5, "function_to_apply": function})
                    .to_string(),
                serde_json::json!({"video": gif, "top_k": 5, "function_to_apply": function})
                    .to_string(),
            ]
        };
        for bs in [1, 2] {
            for function in ["none", "softmax"] {
                let reqs = ask(function);
                let mut answers = Vec::new();
                for chunk in reqs.chunks(bs) {
                    answers.extend(run.handle(chunk));
                }
                for (case, got) in r["cases"].as_array().unwrap().iter().zip(answers) {
                    let got = got.unwrap_or_else(|e| panic!("{name} {}: {e}", case["case"]));
                    let labels = got.json["labels"].as_array().unwrap();
                    let top = case["top"].as_array().unwrap();
                    for (k, l) in labels.iter().enumerate() {
                        let want = match function {
                            "none" => {
                                let label = l["label"].as_str().unwrap();
                                let j = ["walking", "running", "jumping", "sitting", "waving"]
                                    .iter()
                                    .position(|x| *x == label)
                                    .unwrap();
                                case["logits"][j].as_f64().unwrap()
                            }
                            _ => {
                                assert_eq!(l["label"], top[k]["label"], "{name} {device} {case}");
                                top[k]["score"].as_f64().unwrap()
                            }
                        };
                        let g = l["score"].as_f64().unwrap();
                        assert!(
                            (g - want).abs() <= 1e-4,
                            "{name} {device} bs{bs} {}: {g} vs {want}",
                            case["case"]
                        );
                    }
                }
            }
        }
    }
    // Too few frames, and an image that is not a video, fail their own request.
    let mut run = runner(
        "video-classification",
        &fixture("tiny-videomae"),
        device,
        Precision::F32,
    );
    let one = b64(&fixture("video/frame_0.png"));
    let out = run.handle(&[
        serde_json::json!({"frames": [one.clone()]}).to_string(),
        serde_json::json!({"video": one}).to_string(),
    ]);
    assert!(out[0].as_ref().unwrap_err().to_string().contains("frames"));
    assert!(out[1]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("animated GIF or WebP"));
}

#[test]
fn video_classification_matches_transformers_on_cpu() {
    videomae("cpu");
}

#[test]
fn video_classification_matches_transformers_on_openvino() {
    videomae("openvino");
}

#[test]
fn video_classification_matches_transformers_on_cuda() {
    videomae("cuda");
}

/// X-CLIP fixtures (tests/fixtures/gen_tiny_xclip.py): zero-shot
/// `video-classification` of the PNG frame list and the animated GIF
/// against `XCLIPModel` on the processor's `pixel_values` (lossless
/// frames, so ours are the same): `logits_per_video`, `video_embeds` and
/// `text_embeds` fp32 cosine >= 0.99999 and max-abs <= 1e-4, labels in the
/// same order and scores within 1e-4; alone, both in one batch, and in a
/// batch whose requests have different label lists and templates.
fn xclip(device: &str) {
    if !available(device) {
        return;
    }
    let floats = floats_nested;
    for name in ["tiny-xclip", "tiny-xclip-gelu"] {
        let r = reference(name);
        let labels = r["candidate_labels"].clone();
        let mut run = runner(
            "video-classification",
            &fixture(name),
            device,
            Precision::F32,
        );
        let frames: Vec<String> = (r["frames"].as_array().unwrap().iter())
            .map(|f| b64(&fixture(&format!("video/{}", f.as_str().unwrap()))))
            .collect();
        let gif = b64(&fixture(&format!("video/{}", r["gif"].as_str().unwrap())));
        let ask = |source: (&str, Value), labels: &Value, template: Option<&str>| -> String {
            let mut q = serde_json::json!({
                "candidate_labels": labels, "return_logits": true, "return_embeddings": true,
            });
            q[source.0] = source.1;
            if let Some(t) = template {
                q["hypothesis_template"] = Value::from(t);
            }
            q.to_string()
        };
        let cases = r["cases"].as_array().unwrap();
        let sources = [
            ("frames", Value::from(frames.clone())),
            ("video", Value::from(gif.clone())),
        ];
        // The worst cosine and max-abs difference seen.
        let worst = std::cell::Cell::new((1f64, 0f64));
        // Checks one answer against a reference case; `order`: the labels asked, in order.
        let check = |got: &host::runner::Output, case: &Value, order: &[&str], what: &str| {
            let all: Vec<&str> = (labels.as_array().unwrap().iter())
                .map(|l| l.as_str().unwrap())
                .collect();
            let pick = |v: &[f32], width: usize| -> Vec<f32> {
                (order.iter())
                    .flat_map(|l| {
                        let j = all.iter().position(|a| a == l).unwrap();
                        v[j * width..(j + 1) * width].to_vec()
                    })
                    .collect()
            };
            let tensor = |n: &str| got.tensor(n).unwrap().to_f32(n).unwrap();
            let want_logits = pick(&floats(&case["logits_per_video"]), 1);
            let text_want = floats(&case["text_embeds"]);
            let p = text_want.len() / all.len();
            for (n, g, w) in [
                ("logits", tensor("logits"), want_logits),
                (
                    "video_embeds",
                    tensor("video_embeds"),
                    floats(&case["video_embeds"]),
                ),
                ("text_embeds", tensor("text_embeds"), pick(&text_want, p)),
            ] {
                let (cos, max) = compare(&g, &w);
                let (c, m) = worst.get();
                worst.set((c.min(cos), m.max(max)));
                assert!(
                    cos >= 0.99999 && max <= 1e-4,
                    "{what} {n}: cosine {cos}, max-abs {max}"
                );
            }
            // Scores: the softmax over the labels asked, best first.
            let got_labels = got.json["labels"].as_array().unwrap();
            assert_eq!(got_labels.len(), order.len(), "{what}");
            let want: Vec<&Value> = (case["scores"].as_array().unwrap().iter())
                .filter(|s| order.contains(&s["label"].as_str().unwrap()))
                .collect();
            let sum: f64 = want.iter().map(|s| s["score"].as_f64().unwrap()).sum();
            for (g, w) in got_labels.iter().zip(want) {
                assert_eq!(g["label"], w["label"], "{what}: {got_labels:?}");
                let (x, y) = (
                    g["score"].as_f64().unwrap(),
                    w["score"].as_f64().unwrap() / sum,
                );
                assert!((x - y).abs() <= 1e-4, "{what}: {g} vs {w}");
            }
        };
        let all: Vec<&str> = (labels.as_array().unwrap().iter())
            .map(|l| l.as_str().unwrap())
            .collect();
        for bs in [1, 2] {
            let reqs: Vec<String> = (sources.iter())
                .map(|s| ask(s.clone(), &labels, None))
                .collect();
            let mut answers = Vec::new();
            for chunk in reqs.chunks(bs) {
                answers.extend(run.handle(chunk));
            }
            for (case, got) in cases.iter().zip(answers) {
                let what = format!("{name} {device} bs{bs} {}", case["case"]);
                let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                check(&got, case, &all, &what);
            }
        }
        // One batch: the frames with three labels in another order, the GIF
        // with a template.
        let t = &r["template_case"];
        let some = [all[3], all[0], all[4]];
        let answers = run.handle(&[
            ask(sources[0].clone(), &Value::from(some.to_vec()), None),
            ask(
                sources[1].clone(),
                &labels,
                t["hypothesis_template"].as_str(),
            ),
        ]);
        let mut answers = answers.into_iter();
        let what = format!("{name} {device} mixed");
        let got = answers
            .next()
            .unwrap()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        check(&got, &cases[0], &some, &format!("{what} frames"));
        let got = answers
            .next()
            .unwrap()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        check(&got, t, &all, &format!("{what} template"));
        let (cos, max) = worst.get();
        eprintln!("{name} {device}: ok (worst cosine {cos}, max-abs {max})");
    }
}

/// Nested lists of numbers, flattened.
fn floats_nested(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(floats_nested).collect(),
        other => vec![other.as_f64().expect("a number") as f32],
    }
}

#[test]
fn xclip_zero_shot_matches_transformers_on_cpu() {
    xclip("cpu");
}

#[test]
fn xclip_zero_shot_matches_transformers_on_openvino() {
    xclip("openvino");
}

#[test]
fn xclip_zero_shot_matches_transformers_on_cuda() {
    xclip("cuda");
}

/// Bad X-CLIP requests fail alone, with the reason: no or empty
/// `candidate_labels`, too few or too many frames, a frame that is not an
/// image, a VideoMAE-only key; the good request of the batch is answered.
#[test]
fn xclip_bad_requests_fail_alone() {
    if !available("cpu") {
        return;
    }
    let mut run = runner(
        "video-classification",
        &fixture("tiny-xclip"),
        "cpu",
        Precision::F32,
    );
    let frame = b64(&fixture("video/frame_0.png"));
    let labels = ["a red car", "a green tree"];
    let four = vec![frame.clone(); 4];
    let mut broken = four.clone();
    broken[1] = "bm90IGFuIGltYWdl".into();
    let cases = [
        (serde_json::json!({"frames": four}), "candidate_labels"),
        (
            serde_json::json!({"frames": four, "candidate_labels": []}),
            "candidate_labels",
        ),
        (
            serde_json::json!({"frames": vec![frame.clone(); 3], "candidate_labels": labels}),
            "clips of 4 frames",
        ),
        (
            serde_json::json!({"frames": vec![frame.clone(); 257], "candidate_labels": labels}),
            "at most 256 frames",
        ),
        (
            serde_json::json!({"frames": broken, "candidate_labels": labels}),
            "frames[1]",
        ),
        (
            serde_json::json!({"video": frame, "candidate_labels": labels}),
            "animated GIF or WebP",
        ),
        (
            serde_json::json!({"frames": four, "candidate_labels": labels, "function_to_apply": "none"}),
            "unknown key",
        ),
    ];
    let mut reqs: Vec<String> = cases.iter().map(|(q, _)| q.to_string()).collect();
    reqs.push(serde_json::json!({"frames": four, "candidate_labels": labels}).to_string());
    let out = run.handle(&reqs);
    for ((_, want), got) in cases.iter().zip(&out) {
        let e = match got {
            Ok(r) => panic!("expected an error with `{want}`, got {:?}", r.json),
            Err(e) => e,
        };
        assert!(e.message.contains(want), "`{want}` not in: {e}");
        assert_eq!(e.kind, "invalid-request", "{e}");
    }
    let ok = out.last().unwrap().as_ref().expect("the good request");
    assert_eq!(ok.json["labels"].as_array().map(|l| l.len()), Some(2));
}

/// `object-detection` (DETR, tests/fixtures/tiny-detr{,-timm} from
/// tests/fixtures/gen_tiny_detr.py): per image alone, logits and boxes
/// within fp32 tolerances of transformers on the same `pixel_values` (the
/// images are stored losslessly, so our decode and Pillow-exact resize give
/// the processor's values) and the pipeline's detections (labels, boxes
/// in pixels within 1, scores within 1e-4); a padded batch of every image
/// (`pad_with_batch`) against transformers' model on the processor's padded
/// batch with its pixel mask.
fn detr(device: &str) {
    if !available(device) {
        return;
    }
    for name in ["tiny-detr", "tiny-detr-timm"] {
        let r = reference(name);
        let images: Vec<String> = (r["images"].as_array().expect("images").iter())
            .map(|i| b64(&fixture(&format!("images/{}", i.as_str().expect("name")))))
            .collect();
        let mut run = runner("object-detection", &fixture(name), device, Precision::F32);
        let flat = |v: &Value| -> Vec<f32> {
            (v.as_array().expect("rows").iter())
                .flat_map(|row| row.as_array().expect("row").iter())
                .map(|x| x.as_f64().expect("number") as f32)
                .collect()
        };
        let close = |what: &str, got: &[f32], want: &[f32]| {
            let (cos, max) = compare(got, want);
            assert!(
                cos >= 0.99999 && max <= 1e-4,
                "{name} {device} {what}: cos {cos}, max-abs {max}"
            );
            max
        };
        for pad in [false, true] {
            let reqs: Vec<String> = images
                .iter()
                .map(|i| {
                    serde_json::json!({"image": i, "raw_outputs": true, "pad_with_batch": pad})
                        .to_string()
                })
                .collect();
            let (logits_key, boxes_key) = match pad {
                false => ("logits", "pred_boxes"),
                true => ("batch_logits", "batch_pred_boxes"),
            };
            let mut worst: f64 = 0.0;
            for (i, got) in run.handle(&reqs).into_iter().enumerate() {
                let got = got.unwrap_or_else(|e| panic!("{name} {device} image {i}: {e}"));
                let tensor = |n: &str| got.tensor(n).expect(n).to_f32(n).expect("f32");
                let l = close("logits", &tensor("logits"), &flat(&r[logits_key][i]));
                let b = close("pred_boxes", &tensor("pred_boxes"), &flat(&r[boxes_key][i]));
                worst = worst.max(l).max(b);
                if pad {
                    continue;
                }
                let (g, w) = (
                    got.json["objects"].as_array().expect("objects"),
                    r["pipeline"][i].as_array().expect("pipeline"),
                );
                assert_eq!(
                    g.len(),
                    w.len(),
                    "{name} {device} image {i}: {g:?} vs {w:?}"
                );
                for (a, b) in g.iter().zip(w) {
                    assert_eq!(a["label"], b["label"], "{name} {device} image {i}");
                    let (x, y) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
                    assert!(
                        (x - y).abs() <= 1e-4,
                        "{name} {device} image {i}: {a} vs {b}"
                    );
                    for k in ["xmin", "ymin", "xmax", "ymax"] {
                        let (p, q) = (a["box"][k].as_i64().unwrap(), b["box"][k].as_i64().unwrap());
                        assert!(
                            (p - q).abs() <= 1,
                            "{name} {device} image {i} {k}: {a} vs {b}"
                        );
                    }
                }
            }
            eprintln!("{name} {device} padded={pad}: max-abs {worst:.2e}");
        }
    }
}

#[test]
fn object_detection_matches_transformers_on_cpu() {
    detr("cpu");
}

#[test]
fn object_detection_matches_transformers_on_openvino() {
    detr("openvino");
}

#[test]
fn object_detection_matches_transformers_on_cuda() {
    detr("cuda");
}

#[test]
fn object_detection_bad_requests_fail_alone() {
    if !available("cpu") {
        return;
    }
    let mut run = runner(
        "object-detection",
        &fixture("tiny-detr"),
        "cpu",
        Precision::F32,
    );
    let good = b64(&fixture("images/gradient_64x48.png"));
    let cases = [
        (
            serde_json::json!({"image": "not base64!"}),
            "not valid base64",
        ),
        (serde_json::json!({"image": "aGVsbG8="}), "not an image"),
        (
            serde_json::json!({"image": good, "threshold": "high"}),
            "finite number",
        ),
        (
            serde_json::json!({"image": good, "top_k": 3}),
            "unknown key `top_k`",
        ),
        (serde_json::json!({"threshold": 0.5}), "missing `image`"),
    ];
    let mut batch: Vec<String> = cases.iter().map(|(c, _)| c.to_string()).collect();
    batch.push(serde_json::json!({"image": good, "threshold": 0.0}).to_string());
    let answers = run.handle(&batch);
    for ((req, text), got) in cases.iter().zip(&answers) {
        match got {
            Err(e) => assert!(e.to_string().contains(text), "{req}: {e}"),
            Ok(r) => panic!("{req}: answered {:?}", r.json),
        }
    }
    let last = answers
        .last()
        .expect("answer")
        .as_ref()
        .expect("good image");
    assert!(!last.json["objects"].as_array().expect("objects").is_empty());
}
