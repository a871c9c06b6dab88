//! Decoding of NumPy `.npy` arrays, alone or inside an `.npz` archive, into tract tensors.
//!
//! npyz parses the header, and this module decodes the data bytes itself so
//! that float16 arrays work without npyz's `half` feature.

use std::io::Read;

use npyz::{DType, Endianness, NpyFile, Order, TypeChar};
use tract_onnx::prelude::*;

/// Reads one `.npy` stream: header, then data.
///
/// Returns the reason as text on failure. The caller adds the file and array name.
pub(crate) fn read_npy(reader: impl Read) -> Result<Tensor, String> {
    let npy = NpyFile::new(reader).map_err(|err| format!("invalid .npy header: {err}"))?;
    decode_npy(npy)
}

/// Decodes the data of an `.npy` stream whose header is already parsed, as in an `.npz` archive.
pub(crate) fn decode_npy(npy: NpyFile<impl Read>) -> Result<Tensor, String> {
    let DType::Plain(type_str) = npy.header().dtype() else {
        return Err("structured arrays are not supported; save a plain numeric array".to_string());
    };
    let element_size = type_str.num_bytes().unwrap_or(0);
    let datum_type = npy_datum_type(type_str.type_char(), element_size)
        .ok_or_else(|| format!("array type `{type_str}` is not supported; use bool, int8-64, uint8-64 or float16/32/64"))?;

    let shape = npy
        .header()
        .shape()
        .iter()
        .map(|&dim| usize::try_from(dim))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "array dimension does not fit in memory".to_string())?;
    let order = npy.header().order();
    let big_endian = type_str.endianness() == Endianness::Big;

    let mut data = Vec::new();
    npy.into_inner()
        .read_to_end(&mut data)
        .map_err(|err| format!("failed to read array data: {err}"))?;
    check_data_length(&shape, element_size, data.len())?;

    let tensor = decode_tensor(datum_type, &shape, order, &data, big_endian)?;
    Ok(tensor)
}

fn npy_datum_type(type_char: TypeChar, size: usize) -> Option<DatumType> {
    let datum_type = match (type_char, size) {
        (TypeChar::Bool, 1) => DatumType::Bool,
        (TypeChar::Int, 1) => DatumType::I8,
        (TypeChar::Int, 2) => DatumType::I16,
        (TypeChar::Int, 4) => DatumType::I32,
        (TypeChar::Int, 8) => DatumType::I64,
        (TypeChar::Uint, 1) => DatumType::U8,
        (TypeChar::Uint, 2) => DatumType::U16,
        (TypeChar::Uint, 4) => DatumType::U32,
        (TypeChar::Uint, 8) => DatumType::U64,
        (TypeChar::Float, 2) => DatumType::F16,
        (TypeChar::Float, 4) => DatumType::F32,
        (TypeChar::Float, 8) => DatumType::F64,
        _ => return None,
    };
    Some(datum_type)
}

fn check_data_length(shape: &[usize], element_size: usize, actual: usize) -> Result<(), String> {
    let expected = shape
        .iter()
        .try_fold(element_size, |bytes, &dim| bytes.checked_mul(dim))
        .ok_or_else(|| format!("array shape {shape:?} is too large"))?;

    if expected != actual {
        return Err(format!("array shape {shape:?} needs {expected} data bytes but the file has {actual}; the file is truncated or corrupt"));
    }
    Ok(())
}

fn decode_tensor(
    datum_type: DatumType,
    shape: &[usize],
    order: Order,
    data: &[u8],
    big: bool,
) -> Result<Tensor, String> {
    // A Fortran-order array is the C-order array of the reversed shape, transposed.
    let stored_shape: Vec<usize> = match order {
        Order::C => shape.to_vec(),
        Order::Fortran => shape.iter().rev().copied().collect(),
    };

    let stored = match datum_type {
        DatumType::Bool => tensor_of(
            &stored_shape,
            &data.iter().map(|&byte| byte != 0).collect::<Vec<_>>(),
        ),
        DatumType::I8 => tensor_of(
            &stored_shape,
            &decode::<i8, 1>(data, big, i8::from_le_bytes, i8::from_be_bytes),
        ),
        DatumType::I16 => tensor_of(
            &stored_shape,
            &decode::<i16, 2>(data, big, i16::from_le_bytes, i16::from_be_bytes),
        ),
        DatumType::I32 => tensor_of(
            &stored_shape,
            &decode::<i32, 4>(data, big, i32::from_le_bytes, i32::from_be_bytes),
        ),
        DatumType::I64 => tensor_of(
            &stored_shape,
            &decode::<i64, 8>(data, big, i64::from_le_bytes, i64::from_be_bytes),
        ),
        DatumType::U8 => tensor_of(&stored_shape, data),
        DatumType::U16 => tensor_of(
            &stored_shape,
            &decode::<u16, 2>(data, big, u16::from_le_bytes, u16::from_be_bytes),
        ),
        DatumType::U32 => tensor_of(
            &stored_shape,
            &decode::<u32, 4>(data, big, u32::from_le_bytes, u32::from_be_bytes),
        ),
        DatumType::U64 => tensor_of(
            &stored_shape,
            &decode::<u64, 8>(data, big, u64::from_le_bytes, u64::from_be_bytes),
        ),
        DatumType::F16 => tensor_of(
            &stored_shape,
            &decode::<f16, 2>(data, big, f16::from_le_bytes, f16::from_be_bytes),
        ),
        DatumType::F32 => tensor_of(
            &stored_shape,
            &decode::<f32, 4>(data, big, f32::from_le_bytes, f32::from_be_bytes),
        ),
        DatumType::F64 => tensor_of(
            &stored_shape,
            &decode::<f64, 8>(data, big, f64::from_le_bytes, f64::from_be_bytes),
        ),
        other => Err(format!("array type {other:?} is not supported")),
    }?;

    match order {
        Order::C => Ok(stored),
        Order::Fortran => {
            let reversed_axes: Vec<usize> = (0..shape.len()).rev().collect();
            stored
                .permute_axes(&reversed_axes)
                .map_err(|err| format!("failed to transpose Fortran-order array: {err}"))
        }
    }
}

fn decode<T, const N: usize>(
    data: &[u8],
    big_endian: bool,
    from_le: fn([u8; N]) -> T,
    from_be: fn([u8; N]) -> T,
) -> Vec<T> {
    let convert = if big_endian { from_be } else { from_le };

    data.chunks_exact(N)
        .map(|chunk| {
            let mut bytes = [0u8; N];
            bytes.copy_from_slice(chunk);
            convert(bytes)
        })
        .collect()
}

fn tensor_of<T: Datum + Copy>(shape: &[usize], values: &[T]) -> Result<Tensor, String> {
    Tensor::from_shape(shape, values).map_err(|err| format!("failed to build tensor: {err}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes an `.npy` file (format version 1.0) from a dtype descriptor, shape and raw data bytes.
    pub(crate) fn npy_bytes(
        descr: &str,
        fortran_order: bool,
        shape: &[usize],
        data: &[u8],
    ) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|dim| dim.to_string()).collect();
        let shape_text = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let order = if fortran_order { "True" } else { "False" };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape_text}, }}");

        // The header, with its 10-byte preamble and final newline, is padded to a multiple of 64 bytes.
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');

        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&u16::try_from(header.len()).unwrap_or(0).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn npy_reads_f32_c_order() {
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = npy_bytes("<f4", false, &[2, 3], &data);

        let tensor = read_npy(&bytes[..]).unwrap();

        assert_eq!(tensor, tensor2(&[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]));
    }

    #[test]
    fn npy_reads_fortran_order() {
        // Column-major storage of [[1, 2, 3], [4, 5, 6]].
        let data: Vec<u8> = [1i32, 4, 2, 5, 3, 6]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = npy_bytes("<i4", true, &[2, 3], &data);

        let tensor = read_npy(&bytes[..]).unwrap();

        assert_eq!(tensor, tensor2(&[[1i32, 2, 3], [4, 5, 6]]));
    }

    #[test]
    fn npy_reads_big_endian_f64() {
        let data: Vec<u8> = [0.5f64, -8.25]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let bytes = npy_bytes(">f8", false, &[2], &data);

        let tensor = read_npy(&bytes[..]).unwrap();

        assert_eq!(tensor, tensor1(&[0.5f64, -8.25]));
    }

    #[test]
    fn npy_reads_f16_and_bool() {
        let halves: Vec<u8> = [f16::from_f32(0.5), f16::from_f32(-2.0)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let half_bytes = npy_bytes("<f2", false, &[2], &halves);
        let bool_bytes = npy_bytes("|b1", false, &[3], &[1, 0, 1]);

        let half_tensor = read_npy(&half_bytes[..]).unwrap();
        let bool_tensor = read_npy(&bool_bytes[..]).unwrap();

        assert_eq!(
            half_tensor,
            tensor1(&[f16::from_f32(0.5), f16::from_f32(-2.0)])
        );
        assert_eq!(bool_tensor, tensor1(&[true, false, true]));
    }

    #[test]
    fn npy_reads_scalar_and_u8() {
        let scalar = npy_bytes("<i8", false, &[], &7i64.to_le_bytes());
        let bytes = npy_bytes("|u1", false, &[2, 2], &[0, 1, 2, 255]);

        assert_eq!(read_npy(&scalar[..]).unwrap(), tensor0(7i64));
        assert_eq!(
            read_npy(&bytes[..]).unwrap(),
            tensor2(&[[0u8, 1], [2, 255]])
        );
    }

    #[test]
    fn npy_rejects_truncated_data() {
        let bytes = npy_bytes("<f4", false, &[4], &[0u8; 12]);

        let reason = read_npy(&bytes[..]).unwrap_err();

        assert!(
            reason.contains("needs 16 data bytes but the file has 12"),
            "{reason}"
        );
    }

    #[test]
    fn npy_rejects_complex_and_strings() {
        let complex = npy_bytes("<c8", false, &[1], &[0u8; 8]);
        let strings = npy_bytes("<U3", false, &[1], &[0u8; 12]);

        assert!(read_npy(&complex[..])
            .unwrap_err()
            .contains("`<c8` is not supported"));
        assert!(read_npy(&strings[..])
            .unwrap_err()
            .contains("is not supported"));
    }

    #[test]
    fn npy_rejects_non_npy_bytes() {
        let reason = read_npy(&b"PK\x03\x04 zip"[..]).unwrap_err();

        assert!(reason.starts_with("invalid .npy header"), "{reason}");
    }
}
