//! Reading Conv weights out of `TensorProto`s and writing composed weights back.
//!
//! Weights are decoded to `f64` whatever their stored type, so that a chain is
//! composed in one precision and rounded once when it is stored again. Sizes
//! are checked against the stored bytes before anything is allocated, so a
//! tensor that claims absurd dims fails with an error instead of an allocation.

use std::borrow::Cow;

use bytes::Bytes;
use half::{bf16, f16};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::external::ExternalData;
use crate::onnx::tensor_proto::{DataLocation, DataType};
use crate::onnx::TensorProto;

/// Floating-point element types that onnx-fold can compose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatType {
    F16,
    BF16,
    F32,
    F64,
}

impl FloatType {
    /// Maps an ONNX `TensorProto.DataType` code to a float type, if it is one.
    pub fn from_onnx(data_type: i32) -> Option<Self> {
        match DataType::try_from(data_type).ok()? {
            DataType::Float16 => Some(FloatType::F16),
            DataType::Bfloat16 => Some(FloatType::BF16),
            DataType::Float => Some(FloatType::F32),
            DataType::Double => Some(FloatType::F64),
            _ => None,
        }
    }

    /// Returns the ONNX `TensorProto.DataType` code.
    pub fn onnx(self) -> i32 {
        let data_type = match self {
            FloatType::F16 => DataType::Float16,
            FloatType::BF16 => DataType::Bfloat16,
            FloatType::F32 => DataType::Float,
            FloatType::F64 => DataType::Double,
        };
        data_type as i32
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            FloatType::F16 | FloatType::BF16 => 2,
            FloatType::F32 => 4,
            FloatType::F64 => 8,
        }
    }
}

/// A decoded weight or bias: dims, values in `f64`, and the stored type.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub dims: Vec<usize>,
    pub values: Vec<f64>,
    pub elem: FloatType,
}

/// Returns the ONNX name of a `TensorProto.DataType` code, for messages.
pub fn data_type_name(data_type: i32) -> String {
    match DataType::try_from(data_type) {
        Ok(known) => known.as_str_name().to_lowercase(),
        Err(_) => format!("unknown type code {data_type}"),
    }
}

/// Checks a tensor's dims and returns them with their element count.
pub fn checked_dims(tensor: &TensorProto) -> Result<(Vec<usize>, usize)> {
    let mut dims = Vec::with_capacity(tensor.dims.len());
    let mut count: usize = 1;

    for &dim in &tensor.dims {
        let dim = usize::try_from(dim).map_err(|_| invalid(tensor, format!("dim {dim} is negative")))?;
        count = count
            .checked_mul(dim)
            .ok_or_else(|| invalid(tensor, format!("dims {:?} overflow the element count", tensor.dims)))?;
        dims.push(dim);
    }

    Ok((dims, count))
}

/// Decodes a float tensor stored inline or as external data.
pub fn decode(tensor: &TensorProto, external: &ExternalData) -> Result<Weights> {
    let elem = FloatType::from_onnx(tensor.data_type()).ok_or_else(|| {
        invalid(
            tensor,
            format!("element type {} is not a float type onnx-fold can fold", data_type_name(tensor.data_type())),
        )
    })?;
    let (dims, count) = checked_dims(tensor)?;

    let values = if tensor.data_location() == DataLocation::External {
        let bytes = external.read(tensor, count.checked_mul(elem.size()))?;
        values_from_le_bytes(&bytes, elem)
    } else if let Some(raw) = tensor.raw_data.as_ref().filter(|raw| !raw.is_empty() || count == 0) {
        check_byte_len(tensor, raw.len(), count, elem)?;
        values_from_le_bytes(raw, elem)
    } else {
        values_from_typed_fields(tensor, count, elem)?
    };

    Ok(Weights { dims, values, elem })
}

/// Encodes values as a tensor of the given type, rounding once from `f64`.
pub fn encode(name: &str, weights: &Weights) -> TensorProto {
    let mut raw = Vec::with_capacity(weights.values.len() * weights.elem.size());
    for &value in &weights.values {
        match weights.elem {
            FloatType::F16 => raw.extend_from_slice(&f16::from_f64(value).to_le_bytes()),
            FloatType::BF16 => raw.extend_from_slice(&bf16::from_f64(value).to_le_bytes()),
            FloatType::F32 => raw.extend_from_slice(&(value as f32).to_le_bytes()),
            FloatType::F64 => raw.extend_from_slice(&value.to_le_bytes()),
        }
    }

    TensorProto {
        name: Some(name.to_string()),
        data_type: Some(weights.elem.onnx()),
        dims: weights.dims.iter().map(|&dim| dim as i64).collect(),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// Returns the weights with each value rounded to what their type stores.
pub fn rounded(weights: &Weights) -> Weights {
    let round = |value: f64| match weights.elem {
        FloatType::F16 => f16::from_f64(value).to_f64(),
        FloatType::BF16 => bf16::from_f64(value).to_f64(),
        FloatType::F32 => value as f32 as f64,
        FloatType::F64 => value,
    };
    Weights {
        dims: weights.dims.clone(),
        values: weights.values.iter().copied().map(round).collect(),
        elem: weights.elem,
    }
}

fn check_byte_len(tensor: &TensorProto, len: usize, count: usize, elem: FloatType) -> Result<()> {
    let expected = count.checked_mul(elem.size());
    if expected == Some(len) {
        return Ok(());
    }
    Err(invalid(
        tensor,
        format!(
            "raw_data has {len} bytes but dims {:?} of {} need {}",
            tensor.dims,
            data_type_name(tensor.data_type()),
            expected.map_or_else(|| "more than the address space".to_string(), |bytes| bytes.to_string())
        ),
    ))
}

fn values_from_le_bytes(bytes: &[u8], elem: FloatType) -> Vec<f64> {
    match elem {
        FloatType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        FloatType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        FloatType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        FloatType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    }
}

fn values_from_typed_fields(tensor: &TensorProto, count: usize, elem: FloatType) -> Result<Vec<f64>> {
    // ONNX stores float16 and bfloat16 bit patterns one per int32_data entry.
    let stored = match elem {
        FloatType::F32 => tensor.float_data.len(),
        FloatType::F64 => tensor.double_data.len(),
        FloatType::F16 | FloatType::BF16 => tensor.int32_data.len(),
    };
    if stored != count {
        return Err(invalid(
            tensor,
            format!("it stores {stored} values but dims {:?} need {count}", tensor.dims),
        ));
    }

    let values = match elem {
        FloatType::F32 => tensor.float_data.iter().map(|&v| v as f64).collect(),
        FloatType::F64 => tensor.double_data.clone(),
        FloatType::F16 => tensor.int32_data.iter().map(|&bits| f16::from_bits(bits as u16).to_f64()).collect(),
        FloatType::BF16 => tensor.int32_data.iter().map(|&bits| bf16::from_bits(bits as u16).to_f64()).collect(),
    };
    Ok(values)
}

/// Builds the tensor that a `Constant` node produces, if that is a dense tensor.
///
/// Returns `Err` with a reason for the other forms (sparse, string, int lists),
/// which cannot be a Conv weight.
pub fn constant_node_value(node: &crate::onnx::NodeProto) -> std::result::Result<Cow<'_, TensorProto>, String> {
    for attribute in &node.attribute {
        match attribute.name() {
            "value" => {
                return attribute
                    .t
                    .as_ref()
                    .map(Cow::Borrowed)
                    .ok_or_else(|| "its 'value' attribute holds no tensor".to_string())
            }
            "value_float" => {
                let value = attribute.f.unwrap_or_default();
                return Ok(Cow::Owned(float_list_tensor(vec![value], Vec::new())));
            }
            "value_floats" => {
                let values = attribute.floats.clone();
                let dims = vec![values.len() as i64];
                return Ok(Cow::Owned(float_list_tensor(values, dims)));
            }
            _ => {}
        }
    }
    Err("it holds no dense float tensor (sparse, integer or string constants cannot be Conv weights)".to_string())
}

fn float_list_tensor(values: Vec<f32>, dims: Vec<i64>) -> TensorProto {
    TensorProto {
        data_type: Some(DataType::Float as i32),
        dims,
        float_data: values,
        ..Default::default()
    }
}

fn invalid(tensor: &TensorProto, reason: String) -> Error {
    Error::InvalidTensor {
        tensor: tensor.name().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(elem: FloatType, dims: Vec<i64>, raw: Vec<u8>) -> TensorProto {
        TensorProto {
            name: Some("w".to_string()),
            data_type: Some(elem.onnx()),
            dims,
            raw_data: Some(Bytes::from(raw)),
            ..Default::default()
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let external = ExternalData::none();
        for elem in [FloatType::F16, FloatType::BF16, FloatType::F32, FloatType::F64] {
            let weights = Weights {
                dims: vec![2, 3],
                values: vec![0.5, -1.0, 2.0, 0.25, 0.0, -3.5],
                elem,
            };

            let decoded = decode(&encode("w", &weights), &external).unwrap();

            assert_eq!(decoded, weights, "{elem:?}");
        }
    }

    #[test]
    fn decode_typed_float16_bits() {
        let mut proto = tensor(FloatType::F16, vec![2], Vec::new());
        proto.raw_data = None;
        proto.int32_data = vec![f16::from_f32(1.5).to_bits() as i32, f16::from_f32(-2.0).to_bits() as i32];

        let decoded = decode(&proto, &ExternalData::none()).unwrap();

        assert_eq!(decoded.values, vec![1.5, -2.0]);
    }

    #[test]
    fn raw_data_length_mismatch() {
        let proto = tensor(FloatType::F32, vec![2, 2], vec![0; 12]);

        let error = decode(&proto, &ExternalData::none()).unwrap_err().to_string();

        assert!(error.contains("tensor 'w'"), "{error}");
        assert!(error.contains("12 bytes"), "{error}");
        assert!(error.contains("need 16"), "{error}");
    }

    #[test]
    fn negative_dim_rejected() {
        let proto = tensor(FloatType::F32, vec![2, -1], vec![0; 8]);

        let error = decode(&proto, &ExternalData::none()).unwrap_err().to_string();

        assert!(error.contains("negative"), "{error}");
    }

    #[test]
    fn overflowing_dims_rejected_before_allocation() {
        let proto = tensor(FloatType::F32, vec![i64::MAX, i64::MAX], vec![0; 4]);

        let error = decode(&proto, &ExternalData::none()).unwrap_err().to_string();

        assert!(error.contains("overflow"), "{error}");
    }

    #[test]
    fn absurd_dims_rejected_by_byte_count() {
        let proto = tensor(FloatType::F32, vec![1 << 20, 1 << 20, 1 << 10], vec![0; 4]);

        let error = decode(&proto, &ExternalData::none()).unwrap_err().to_string();

        assert!(error.contains("raw_data has 4 bytes"), "{error}");
    }

    #[test]
    fn integer_weight_rejected() {
        let mut proto = tensor(FloatType::F32, vec![1], vec![0; 1]);
        proto.data_type = Some(DataType::Int8 as i32);

        let error = decode(&proto, &ExternalData::none()).unwrap_err().to_string();

        assert!(error.contains("int8"), "{error}");
    }
}
