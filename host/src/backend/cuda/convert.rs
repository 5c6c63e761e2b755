//! Host-side dtype conversion of tensor bytes between the graph's dtypes
//! and the device's storage dtypes (f32 <-> f16 <-> bf16, round to nearest
//! even), used for inputs, outputs, weights and constants.

use crate::ir::DType;

/// [`convert`] for owned bytes: no copy when nothing changes.
pub fn convert_owned(bytes: Vec<u8>, from: DType, to: DType) -> Vec<u8> {
    if from == to || !from.is_float() || !to.is_float() {
        return bytes;
    }
    convert(&bytes, from, to)
}

/// Converts little-endian `bytes` of float dtype `from` to float dtype `to`.
/// Non-float or equal dtypes are returned unchanged.
pub fn convert(bytes: &[u8], from: DType, to: DType) -> Vec<u8> {
    if from == to || !from.is_float() || !to.is_float() {
        return bytes.to_vec();
    }
    let widened = crate::tensor::widen_to_f32(from, bytes).unwrap_or_default();
    match to {
        DType::F32 => widened.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => widened
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => widened
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    fn round_trips_and_rounding() {
        let v = [1.0f32, -2.5, 65504.0, 1e-3, 3.0e38];
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let h = convert(&b, DType::F32, DType::F16);
        assert_eq!(h.len(), 10);
        let back = f32s(&convert(&h, DType::F16, DType::F32));
        assert_eq!(&back[..3], &[1.0, -2.5, 65504.0]);
        assert!((back[3] - 1e-3).abs() < 1e-6);
        assert!(back[4].is_infinite(), "3e38 overflows f16");
        let bf = convert(&b, DType::F32, DType::BF16);
        let back = f32s(&convert(&bf, DType::BF16, DType::F32));
        assert_eq!(back[0], 1.0);
        assert!(
            (back[4] - 3.0e38).abs() / 3.0e38 < 1e-2,
            "bf16 keeps f32's range"
        );
        // 1 + 2^-9 is halfway between two bf16 values: ties to even (1.0).
        let tie = (1.0f32 + 2f32.powi(-9)).to_le_bytes();
        assert_eq!(
            f32s(&convert(
                &convert(&tie, DType::F32, DType::BF16),
                DType::BF16,
                DType::F32
            )),
            vec![1.0]
        );
        // Integers pass through.
        assert_eq!(convert(&[1, 2, 3], DType::U8, DType::F16), vec![1, 2, 3]);
    }
}
