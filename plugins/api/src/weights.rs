//! Reading checkpoint tensors (feature `weights`): the floating-point safetensors element
//! types every plugin accepts, widened to f32.

use safetensors::Dtype;

/// The little-endian `data` of a tensor of element type `dtype` as f32 values: F32, F16
/// and BF16 are read, any other type gives `None` (the caller decides whether that is an
/// error).
pub fn floats(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widens_every_float_type_and_refuses_the_rest() {
        let one_and_half = [1.0f32, -1.5];
        let f32_bytes: Vec<u8> = one_and_half.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(floats(Dtype::F32, &f32_bytes).unwrap(), one_and_half);
        let f16_bytes: Vec<u8> = one_and_half
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        assert_eq!(floats(Dtype::F16, &f16_bytes).unwrap(), one_and_half);
        let bf16_bytes: Vec<u8> = one_and_half
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        assert_eq!(floats(Dtype::BF16, &bf16_bytes).unwrap(), one_and_half);
        assert!(floats(Dtype::I64, &[0; 8]).is_none());
    }
}
