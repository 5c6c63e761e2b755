//! Whisper's token-level times from cross-attention (transformers'
//! `_extract_token_timestamps` after the weights are gathered): the
//! alignment heads' attention of each generated token over the encoder
//! positions, cropped to the audio's positions, normalised per head and
//! position over the tokens, smoothed by a median filter along the
//! positions (reflect padding), averaged over the heads, then aligned by
//! dynamic time warping ([`dtw`], with transformers' f32 cost table and
//! tie rules); each token's time is the position where the path first
//! reaches it.
//!
//! The weights come from the decoder's forced-alignment pass
//! (`seq2seq::Seq2Seq::align_graph`); the Whisper skill turns the times into
//! word timestamps (`return_timestamps: "word"`).
//!
//! Where the path reaches a token before the first position (NaN costs,
//! e.g. a column of equal weights normalised to 0/0) its time is -1
//! position (-0.02 s), as transformers gives it.

/// Sorts `v` with NaN last (torch's sort).
fn sort_nan_last(v: &mut [f32]) {
    v.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.total_cmp(b),
    });
}

/// Median filter of odd `width` along one row (transformers'
/// `_median_filter`: reflect padding; rows no longer than half the width
/// stay as they are).
pub fn median_filter(row: &[f32], width: usize) -> Vec<f32> {
    let pad = width / 2;
    let n = row.len();
    if width == 0 || n <= pad {
        return row.to_vec();
    }
    let at = |i: isize| -> f32 {
        let last = n as isize - 1;
        let j = if i < 0 {
            -i
        } else if i > last {
            2 * last - i
        } else {
            i
        };
        row[j.clamp(0, last) as usize]
    };
    let mut window = vec![0f32; width];
    (0..n)
        .map(|c| {
            for (k, w) in window.iter_mut().enumerate() {
                *w = at(c as isize + k as isize - pad as isize);
            }
            sort_nan_last(&mut window);
            window[pad]
        })
        .collect()
}

/// Dynamic time warping of `matrix` [rows, cols] (costs): the path's row
/// and column indices, from the start (transformers'
/// `_dynamic_time_warping`; -1 where the path runs along the border).
pub fn dtw(matrix: &[f64], rows: usize, cols: usize) -> (Vec<i64>, Vec<i64>) {
    let w = cols + 1;
    let mut cost = vec![f32::INFINITY; (rows + 1) * w];
    let mut trace = vec![-1i8; (rows + 1) * w];
    cost[0] = 0.0;
    for j in 1..=cols {
        for i in 1..=rows {
            let c0 = cost[(i - 1) * w + j - 1];
            let c1 = cost[(i - 1) * w + j];
            let c2 = cost[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            cost[i * w + j] = (matrix[(i - 1) * cols + j - 1] + c as f64) as f32;
            trace[i * w + j] = t;
        }
    }
    (0..w).for_each(|j| trace[j] = 2);
    (0..=rows).for_each(|i| trace[i * w] = 1);
    let (mut i, mut j) = (rows, cols);
    let (mut text, mut time) = (Vec::new(), Vec::new());
    while i > 0 || j > 0 {
        text.push(i as i64 - 1);
        time.push(j as i64 - 1);
        match trace[i * w + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    text.reverse();
    time.reverse();
    (text, time)
}

/// The times (seconds) at which the DTW path first reaches each token, from
/// `weights` [heads, tokens, positions] (the generated tokens' attention),
/// cropped to the first `keep` positions, with a median filter of `width`
/// and `precision` seconds per position.
pub fn jump_times(
    weights: &[f32],
    heads: usize,
    tokens: usize,
    positions: usize,
    keep: usize,
    width: usize,
    precision: f64,
) -> Vec<f64> {
    let keep = keep.min(positions);
    if tokens == 0 || keep == 0 || weights.len() < heads * tokens * positions {
        return Vec::new();
    }
    let mut mean = vec![0f32; tokens * keep];
    for h in 0..heads {
        let head = &weights[h * tokens * positions..(h + 1) * tokens * positions];
        let mut m = vec![0f32; tokens * keep];
        for c in 0..keep {
            let col: Vec<f32> = (0..tokens).map(|t| head[t * positions + c]).collect();
            let mu = col.iter().sum::<f32>() / tokens as f32;
            let var = col.iter().map(|x| (x - mu) * (x - mu)).sum::<f32>() / tokens as f32;
            let sd = var.sqrt();
            for t in 0..tokens {
                m[t * keep + c] = (col[t] - mu) / sd;
            }
        }
        for t in 0..tokens {
            let row = median_filter(&m[t * keep..(t + 1) * keep], width);
            for (c, v) in row.into_iter().enumerate() {
                mean[t * keep + c] += v;
            }
        }
    }
    let neg: Vec<f64> = mean.iter().map(|&v| -((v / heads as f32) as f64)).collect();
    let (text, time) = dtw(&neg, tokens, keep);
    let mut out = Vec::with_capacity(tokens);
    for k in 0..text.len() {
        if k == 0 || text[k] != text[k - 1] {
            out.push(time[k] as f64 * precision);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_filter_reflects_at_the_edges() {
        // [1 5 2 8] padded by 1 (reflect): 5 1 5 2 8 2.
        assert_eq!(
            median_filter(&[1.0, 5.0, 2.0, 8.0], 3),
            vec![5.0, 2.0, 5.0, 2.0]
        );
        assert_eq!(median_filter(&[1.0], 3), vec![1.0]);
    }

    /// Equal weights over the tokens normalise to 0/0: NaN costs send the
    /// path along the first column (time -1), as transformers' does.
    #[test]
    fn nan_costs_give_minus_one_position() {
        let w = vec![0.5f32; 2 * 3 * 4];
        assert_eq!(jump_times(&w, 2, 3, 4, 4, 7, 0.02), vec![-0.02; 3]);
    }

    /// transformers 5.25 on these weights (2 heads, 5 tokens, 12 positions,
    /// 10 kept, width 7): path rows [0,1x10,2,3,4], columns
    /// [0,0..9,9,9,9], first times [0, 0, 0.18, 0.18, 0.18].
    #[test]
    fn matches_transformers() {
        let w: [f32; 120] = [
            0.004264, 0.105569, 0.285842, 0.026955, 0.471614, 0.060116, 0.771866, 0.743699,
            0.594421, 0.887857, 0.451031, 0.799491, 0.149841, 0.401469, 0.054177, 0.459405,
            0.175605, 0.949183, 0.847319, 0.874856, 0.64831, 0.214758, 0.949305, 0.012109,
            0.180877, 0.187715, 0.292745, 0.599699, 0.121255, 0.114796, 0.26088, 0.805172,
            0.139362, 0.051552, 0.066646, 0.253957, 0.368626, 0.004324, 0.265906, 0.509619,
            0.582422, 0.428321, 0.443307, 0.174713, 0.756153, 0.379548, 0.158142, 0.379588,
            0.430147, 0.962303, 0.760579, 0.298106, 0.429064, 0.941835, 0.821218, 0.624667,
            0.320642, 0.916038, 0.714215, 0.277313, 0.85483, 0.535636, 0.130222, 0.278381, 0.12553,
            0.085875, 0.512223, 0.141685, 0.766476, 0.723612, 0.607555, 0.911983, 0.27319,
            0.507456, 0.807236, 0.672831, 0.560579, 0.918098, 0.613953, 0.836416, 0.069099,
            0.069145, 0.048703, 0.528304, 0.924309, 0.063658, 0.69895, 0.058759, 0.167718,
            0.329498, 0.296681, 0.647684, 0.080743, 0.994445, 0.572892, 0.674306, 0.162242,
            0.77593, 0.383253, 0.251229, 0.585047, 0.708094, 0.552951, 0.325069, 0.592974,
            0.306537, 0.330718, 0.314239, 0.797897, 0.150513, 0.717111, 0.759157, 0.167776,
            0.120223, 0.167033, 0.077037, 0.919788, 0.940732, 0.430187, 0.968841,
        ];
        let times = jump_times(&w, 2, 5, 12, 10, 7, 0.02);
        let want = [0.0, 0.0, 0.18, 0.18, 0.18];
        assert_eq!(times.len(), 5);
        for (g, w) in times.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{times:?}");
        }
    }
}
