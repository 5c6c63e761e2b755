//! Multimodal rotary position embedding (M-RoPE, Qwen2-VL): every token
//! has three positions (temporal, height, width), and the rotary
//! frequencies of a head are split into `mrope_section` groups, group i
//! rotated by position axis i % 3 (the same split in both rotate-half
//! halves).
//!
//! [`rope_index`] is transformers' `get_rope_index` for a prompt: text
//! tokens count on from the last position (all three axes equal); an
//! image's tokens (one run of image-token ids per image, its merged grid
//! row-major) take (start, start + row, start + column), and the text after
//! it starts at start + max(rows, columns). A video's tokens (a run of
//! video-token ids, frame group by frame group) likewise, with start + its
//! frame group on the temporal axis (Qwen2-VL has no `tokens_per_second`
//! scaling), the text after it also at start + max(rows, columns). The rope delta (largest
//! position + 1 - prompt length) puts every later token at its sequential
//! position + delta on all three axes. [`tables`] builds cos and sin in the
//! graph from the input `mrope_positions` [3, batch, seq].

use skill_sdk::config::Json;
use skill_sdk::graph::{Node, UnaryOp};
use skill_sdk::tensors::{f32_tensor, i64_tensor};
use skill_sdk::{invalid, Dim, Dtype, Error, Graph};

/// M-RoPE settings of a decoder config.
#[derive(Clone, Debug, PartialEq)]
pub struct Mrope {
    pub sections: Vec<u64>,
    pub theta: f32,
}

impl Mrope {
    /// Reads `rope_parameters` (transformers 5) or `rope_scaling` (the hub's
    /// configs, `type` "mrope") and `rope_theta` (default 1e6, Qwen2-VL's)
    /// of `c`; the sections must sum to half of `head_dim`.
    pub fn read(c: &Json, head_dim: u64) -> Result<Mrope, Error> {
        let params = ["rope_parameters", "rope_scaling"]
            .iter()
            .filter_map(|k| c.value.get(*k).filter(|v| !v.is_null()))
            .find(|p| p.get("mrope_section").is_some());
        let bad = |what: &str| Error::Model(format!("{}: {what}", c.file));
        let p = params.ok_or_else(|| bad("no `mrope_section` in `rope_parameters`"))?;
        let kind = p
            .get("rope_type")
            .or_else(|| p.get("type"))
            .and_then(|t| t.as_str())
            .unwrap_or("default");
        if !matches!(kind, "default" | "mrope") {
            return Err(Error::Unsupported(format!(
                "{}: rope type `{kind}` with M-RoPE is not supported",
                c.file
            )));
        }
        let sections: Vec<u64> = p
            .get("mrope_section")
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default();
        if sections.is_empty() || sections.iter().sum::<u64>() * 2 != head_dim {
            return Err(bad(&format!(
                "`mrope_section` {sections:?} must sum to half the head size {head_dim}"
            )));
        }
        let theta = match (p.get("rope_theta"), c.value.get("rope_theta")) {
            (Some(t), _) | (None, Some(t)) if !t.is_null() => t
                .as_f64()
                .ok_or_else(|| bad("`rope_theta` must be a number"))?,
            _ => 1_000_000.0,
        } as f32;
        Ok(Mrope { sections, theta })
    }

    /// cos and sin [batch, 1, seq, head_dim] from the graph input
    /// `mrope_positions` [3, batch, seq] (declared here).
    pub fn tables(&self, g: &Graph, bs: &[Dim]) -> Result<(Node, Node), Error> {
        let mut shape = vec![Dim::Fixed(3)];
        shape.extend_from_slice(bs);
        let pos = g.input("mrope_positions", Dtype::I64, &shape)?;
        let half: u64 = self.sections.iter().sum();
        let dim = 2 * half;
        let freq = |i: u64| 1.0 / self.theta.powf((2 * i) as f32 / dim as f32);
        // Frequency j of a half rotates with axis (its section's index) % 3.
        let axis: Vec<i64> = (0..half)
            .map(|j| {
                let mut end = 0;
                let section = self.sections.iter().position(|s| {
                    end += s;
                    j < end
                });
                (section.unwrap_or(0) % 3) as i64
            })
            .collect();
        let axis: Vec<i64> = [axis.clone(), axis].concat();
        let inv: Vec<f32> = (0..dim).map(|j| freq(j % half)).collect();
        // [3, batch, seq] -> [batch, seq, 3] -> each dim's axis [batch, seq, dim].
        let p = g.b.permute(g.b.cast(pos, Dtype::F32)?, &[1, 2, 0])?;
        let picked =
            g.b.gather(p, g.b.constant(&i64_tensor(vec![dim], &axis))?, 2)?;
        let angles = g.mul(picked, g.b.constant(&f32_tensor(vec![dim], &inv))?)?;
        let cos = g.b.unsqueeze(g.unary(UnaryOp::Cos, angles)?, 1)?;
        let sin = g.b.unsqueeze(g.unary(UnaryOp::Sin, angles)?, 1)?;
        Ok((cos, sin))
    }
}

/// A prompt's three position lists and its rope delta.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Positions {
    /// Temporal, height, width positions of each prompt token.
    pub axes: [Vec<i64>; 3],
    pub delta: i64,
}

/// transformers' `get_rope_index` for one unpadded prompt: `media` are
/// the image and video token ids, `grids` the images' and videos' token
/// ids and merged grids (t, h, w after merging), in prompt order; each run
/// of one media token must hold its image's or video's t * h * w tokens.
pub fn rope_index(
    ids: &[i64],
    media: &[i64],
    grids: &[(i64, [u64; 3])],
) -> Result<Positions, Error> {
    let mut axes: [Vec<i64>; 3] = Default::default();
    let mut grids = grids.iter();
    let mut pos = 0i64;
    let mut at = 0;
    while at < ids.len() {
        let token = ids[at];
        if !media.contains(&token) {
            axes.iter_mut().for_each(|a| a.push(pos));
            pos += 1;
            at += 1;
            continue;
        }
        let what = match media.first() == Some(&token) {
            true => "image",
            false => "video",
        };
        let run = ids[at..].iter().take_while(|&&t| t == token).count();
        let (kind, [t, h, w]) = *grids.next().ok_or_else(|| {
            invalid(format!(
                "the prompt has more {what} token runs than {what}s"
            ))
        })?;
        if kind != token {
            return Err(invalid(format!(
                "the prompt's {what} tokens are not where its images and videos are"
            )));
        }
        if run as u64 != t * h * w {
            return Err(invalid(format!(
                "a run of {run} {what} tokens stands for a {what} of {} (put text, such as \
                 <|vision_end|><|vision_start|>, between {what}s)",
                t * h * w
            )));
        }
        // Temporal positions step by one per frame group (Qwen2-VL: no
        // tokens_per_second), the text after starts at max(h, w).
        for ti in 0..t as i64 {
            for hi in 0..h as i64 {
                for wi in 0..w as i64 {
                    axes[0].push(pos + ti);
                    axes[1].push(pos + hi);
                    axes[2].push(pos + wi);
                }
            }
        }
        pos += h.max(w) as i64;
        at += run;
    }
    if grids.next().is_some() {
        return Err(invalid(
            "the prompt has fewer image or video token runs than images and videos",
        ));
    }
    let max = axes.iter().flatten().copied().max().unwrap_or(-1);
    Ok(Positions {
        delta: max + 1 - ids.len() as i64,
        axes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_get_rope_index() {
        // text, a 2x3 merged image, text.
        let ids = [1, 2, 9, 9, 9, 9, 9, 9, 3];
        let p = rope_index(&ids, &[9, 8], &[(9, [1, 2, 3])]).unwrap();
        assert_eq!(p.axes[0], vec![0, 1, 2, 2, 2, 2, 2, 2, 5]);
        assert_eq!(p.axes[1], vec![0, 1, 2, 2, 2, 3, 3, 3, 5]);
        assert_eq!(p.axes[2], vec![0, 1, 2, 3, 4, 2, 3, 4, 5]);
        assert_eq!(p.delta, 6 - 9);
        let text = rope_index(&[4, 5, 6], &[9, 8], &[]).unwrap();
        assert_eq!(text.axes[1], vec![0, 1, 2]);
        assert_eq!(text.delta, 0);
        assert!(rope_index(&ids, &[9, 8], &[(9, [1, 2, 2])]).is_err());
        assert!(rope_index(&ids, &[9, 8], &[]).is_err());
        assert!(rope_index(&ids, &[9, 8], &[(8, [1, 2, 3])]).is_err());
    }

    #[test]
    fn video_positions_count_frame_groups() {
        // text, a video of 3 frame groups of 1x2 merged tokens, text: the
        // temporal axis steps per group, the text after at start + max(h, w).
        let ids = [1, 8, 8, 8, 8, 8, 8, 3];
        let p = rope_index(&ids, &[9, 8], &[(8, [3, 1, 2])]).unwrap();
        assert_eq!(p.axes[0], vec![0, 1, 1, 2, 2, 3, 3, 3]);
        assert_eq!(p.axes[1], vec![0, 1, 1, 1, 1, 1, 1, 3]);
        assert_eq!(p.axes[2], vec![0, 1, 2, 1, 2, 1, 2, 3]);
        // The largest position is the last group's temporal one.
        assert_eq!(p.delta, 4 - 8);
    }

    #[test]
    fn settings_come_from_either_config_form() {
        // The hub's flat config, and transformers 5's text_config.
        let hub = Json::parse(
            "config.json",
            r#"{"rope_theta": 1000000.0,
                "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}"#,
        )
        .unwrap();
        let want = Mrope {
            sections: vec![16, 24, 24],
            theta: 1e6,
        };
        assert_eq!(Mrope::read(&hub, 128).unwrap(), want);
        let v5 = Json::parse(
            "config.json",
            r#"{"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3]}}"#,
        )
        .unwrap();
        assert_eq!(Mrope::read(&v5, 16).unwrap().theta, 1e4);
        assert!(Mrope::read(&v5, 12).is_err());
        let yarn = Json::parse(
            "config.json",
            r#"{"rope_parameters": {"rope_type": "yarn", "mrope_section": [2, 3, 3]}}"#,
        )
        .unwrap();
        assert!(matches!(Mrope::read(&yarn, 16), Err(Error::Unsupported(_))));
    }
}
