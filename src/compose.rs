//! The weight math of a fold, free of protobuf.
//!
//! A chain of Convs where every Conv after the first is pointwise (kernel 1,
//! stride 1, no pads, group 1) is one Conv with the first Conv's attributes:
//!
//! ```text
//! y = W2 (W1 * x + b1) + b2 = (W2 · W1) * x + (W2 · b1 + b2)
//! ```
//!
//! Weights are in ONNX layout `[C_out, C_in / group, k1, .., kn]`, so the
//! product contracts the second Conv's input channels (axis 1 of `W2`) with the
//! first Conv's output channels (axis 0 of `W1`). For longer chains the rule is
//! applied left to right: `W = Wn · … · W2 · W1`, `b = Wn · (… (W2 · b1 + b2) …) + bn`.
//! A missing bias is zero, and the fused Conv has a bias if any Conv had one.
//! A grouped first Conv is expanded to a dense weight (zeros between groups)
//! before the product.

use crate::tensor::{FloatType, Weights};

/// The weight, optional bias and group count of one Conv in a chain.
#[derive(Clone, Copy, Debug)]
pub struct ConvWeights<'a> {
    pub weight: &'a Weights,
    pub bias: Option<&'a Weights>,
    pub group: usize,
}

/// The fused weight `[C_out_last, C_in_first, k...]` and bias `[C_out_last]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Composed {
    pub weight: Weights,
    pub bias: Option<Weights>,
}

/// Largest fused weight a fold may create, in bytes of its element type:
/// onnx-fold stores it inline, and a protobuf message, so an ONNX model with
/// inline weights, cannot exceed 2 GiB.
pub const MAX_FUSED_WEIGHT_BYTES: usize = (1 << 31) - 1;

/// Elements of one block of intermediate columns, 32 MiB of `f64`.
const BLOCK_ELEMENTS: usize = 1 << 22;

/// Composes a chain of Convs into the weight and bias of one Conv.
///
/// The columns of the first (dense) weight are pushed through the chain a
/// block at a time, so memory has room for the fused weight and one block,
/// never for a full intermediate product. After a wide middle Conv, that
/// product `[C_k, C_in · Π k]` can be far larger than the chain's weights and
/// the result together.
///
/// Returns a reason when the shapes do not chain (a malformed model) or the
/// fused weight would exceed [`MAX_FUSED_WEIGHT_BYTES`]. Both are checked
/// before anything is allocated.
pub fn compose(chain: &[ConvWeights]) -> Result<Composed, String> {
    compose_in_blocks(chain, BLOCK_ELEMENTS)
}

fn compose_in_blocks(chain: &[ConvWeights], block_elements: usize) -> Result<Composed, String> {
    let (first, rest) = chain.split_first().ok_or("the chain is empty")?;
    let elem = first.weight.elem;
    let (first_out, first_in, columns) = dense_shape(first.weight, first.group)?;
    let mut shapes = Vec::with_capacity(rest.len());
    let mut channels = first_out;
    for next in rest {
        let (c_out, c_in) = pointwise_shape(next.weight)?;
        if c_in != channels {
            return Err(format!("a Conv with {c_in} input channels follows one with {channels} output channels"));
        }
        shapes.push((c_out, c_in));
        channels = c_out;
    }
    let fused_len = checked_fused_len(channels, columns, elem)?;

    let mut bias = bias_or_zero(first, first_out)?;
    for (next, &(c_out, c_in)) in rest.iter().zip(&shapes) {
        let next_bias = bias_or_zero(next, c_out)?;
        bias = matvec(&next.weight.values, c_out, c_in, &bias)
            .into_iter()
            .zip(next_bias)
            .map(|(product, b)| product + b)
            .collect();
    }

    let widest = shapes.iter().map(|&(c_out, _)| c_out).chain([first_out]).max().unwrap_or(1);
    let block_width = (block_elements / widest.max(1)).max(1);
    let mut values = vec![0.0; fused_len];
    for start in (0..columns).step_by(block_width) {
        let width = block_width.min(columns - start);
        let mut block = dense_columns(first.weight, first.group, start, width);
        for (next, &(c_out, c_in)) in rest.iter().zip(&shapes) {
            block = multiply(&next.weight.values, c_out, c_in, &block, width);
        }
        for (row, block_row) in block.chunks_exact(width).enumerate() {
            values[row * columns + start..][..width].copy_from_slice(block_row);
        }
    }

    let mut dims = first.weight.dims.clone();
    dims[0] = channels;
    dims[1] = first_in;
    let has_bias = chain.iter().any(|conv| conv.bias.is_some());
    let bias = has_bias.then(|| Weights {
        dims: vec![channels],
        values: bias,
        elem,
    });
    Ok(Composed {
        weight: Weights { dims, values, elem },
        bias,
    })
}

/// Checks a first Conv's weight and group and returns the output channels,
/// the input channels and the column count `C_in · Π k` of its dense form.
fn dense_shape(weight: &Weights, group: usize) -> Result<(usize, usize, usize), String> {
    let dims = &weight.dims;
    if dims.len() < 3 {
        return Err(format!("the weight has rank {}, a Conv weight needs rank 3 or more", dims.len()));
    }
    check_value_count(weight)?;
    if group == 0 || dims[0] % group != 0 {
        return Err(format!("{} output channels cannot be split into {group} groups", dims[0]));
    }
    let overflow = || format!("weight dims {dims:?} in {group} groups overflow the element count when made dense");
    let c_in = dims[1].checked_mul(group).ok_or_else(overflow)?;
    let columns = dims[2..].iter().try_fold(c_in, |product, &dim| product.checked_mul(dim)).ok_or_else(overflow)?;
    Ok((dims[0], c_in, columns))
}

/// Checks that a weight has as many values as its dims need, which the
/// matrix products rely on.
fn check_value_count(weight: &Weights) -> Result<(), String> {
    let expected = weight.dims.iter().try_fold(1usize, |product, &dim| product.checked_mul(dim));
    if expected != Some(weight.values.len()) {
        return Err(format!("a weight of dims {:?} holds {} values", weight.dims, weight.values.len()));
    }
    Ok(())
}

fn checked_fused_len(rows: usize, columns: usize, elem: FloatType) -> Result<usize, String> {
    let len = rows.checked_mul(columns);
    let bytes = len.and_then(|len| len.checked_mul(elem.size()));
    match (len, bytes) {
        (Some(len), Some(bytes)) if bytes <= MAX_FUSED_WEIGHT_BYTES => Ok(len),
        _ => Err(format!(
            "the fused weight would have {rows} x {columns} elements of {} bytes, more than the 2 GiB a protobuf message can hold; \
             leave this chain unfolded (policy 'cheaper' never makes a weight larger than the chain's own)",
            elem.size()
        )),
    }
}

/// Expands a grouped weight `[M, C/g, k...]` to a dense `[M, C, k...]`.
pub fn dense_weight(weight: &Weights, group: usize) -> Result<Weights, String> {
    let (_, c_in, columns) = dense_shape(weight, group)?;
    let mut dims = weight.dims.clone();
    dims[1] = c_in;
    Ok(Weights {
        dims,
        values: dense_columns(weight, group, 0, columns),
        elem: weight.elem,
    })
}

/// Returns columns `start..start + width` of the dense form of a possibly
/// grouped weight, as a row-major `[M, width]` block.
fn dense_columns(weight: &Weights, group: usize, start: usize, width: usize) -> Vec<f64> {
    let (c_out, c_in_group) = (weight.dims[0], weight.dims[1]);
    let kernel: usize = weight.dims[2..].iter().product();
    let row_len = c_in_group * kernel;
    let out_per_group = c_out / group;
    let mut block = vec![0.0; c_out * width];
    if width == 0 {
        return block;
    }

    for (m, target) in block.chunks_exact_mut(width).enumerate() {
        let source = &weight.values[m * row_len..(m + 1) * row_len];
        let first_column = (m / out_per_group) * row_len;
        let group_columns = first_column..first_column + row_len;
        for (offset, value) in target.iter_mut().enumerate() {
            let column = start + offset;
            if group_columns.contains(&column) {
                *value = source[column - first_column];
            }
        }
    }
    block
}

fn pointwise_shape(weight: &Weights) -> Result<(usize, usize), String> {
    let dims = &weight.dims;
    if dims.len() < 3 || dims[2..].iter().any(|&k| k != 1) {
        return Err(format!("weight dims {dims:?} are not those of a pointwise Conv"));
    }
    check_value_count(weight)?;
    Ok((dims[0], dims[1]))
}

fn bias_or_zero(conv: &ConvWeights, c_out: usize) -> Result<Vec<f64>, String> {
    match conv.bias {
        None => Ok(vec![0.0; c_out]),
        Some(bias) if bias.dims == [c_out] => Ok(bias.values.clone()),
        Some(bias) => Err(format!("bias dims {:?} do not match {c_out} output channels", bias.dims)),
    }
}

/// `left [rows, inner]` times `right [inner, cols]`, both row-major.
fn multiply(left: &[f64], rows: usize, inner: usize, right: &[f64], cols: usize) -> Vec<f64> {
    let mut values = vec![0.0; rows * cols];
    if rows == 0 || cols == 0 {
        return values;
    }

    // SAFETY: `left` has `rows * inner` elements (a pointwise weight of dims
    // [rows, inner, 1...], checked by `check_value_count`), `right` has
    // `inner * cols` (the block of the previous step) and `values` has
    // `rows * cols`, all row-major.
    unsafe {
        matrixmultiply::dgemm(
            rows,
            inner,
            cols,
            1.0,
            left.as_ptr(),
            inner as isize,
            1,
            right.as_ptr(),
            cols as isize,
            1,
            0.0,
            values.as_mut_ptr(),
            cols as isize,
            1,
        );
    }
    values
}

fn matvec(matrix: &[f64], rows: usize, cols: usize, vector: &[f64]) -> Vec<f64> {
    (0..rows)
        .map(|row| {
            let start = row * cols;
            matrix[start..start + cols].iter().zip(vector).map(|(a, b)| a * b).sum()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(dims: &[usize], values: &[f64]) -> Weights {
        Weights {
            dims: dims.to_vec(),
            values: values.to_vec(),
            elem: FloatType::F32,
        }
    }

    fn conv<'a>(weight: &'a Weights, bias: Option<&'a Weights>) -> ConvWeights<'a> {
        ConvWeights { weight, bias, group: 1 }
    }

    #[test]
    fn two_layers_order_and_bias() {
        // W1: 2 -> 3 channels, W2: 3 -> 2 channels.
        let w1 = weights(&[3, 2, 1], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b1 = weights(&[3], &[1.0, -1.0, 2.0]);
        let w2 = weights(&[2, 3, 1], &[1.0, 0.0, 2.0, -1.0, 1.0, 1.0]);
        let b2 = weights(&[2], &[0.5, -0.5]);

        let composed = compose(&[conv(&w1, Some(&b1)), conv(&w2, Some(&b2))]).unwrap();

        // W2·W1 = [[1+10, 2+12], [-1+3+5, -2+4+6]]
        assert_eq!(composed.weight.dims, vec![2, 2, 1]);
        assert_eq!(composed.weight.values, vec![11.0, 14.0, 7.0, 8.0]);
        // W2·b1 + b2 = [1+4+0.5, -1-1+2-0.5]
        assert_eq!(composed.bias.unwrap().values, vec![5.5, -0.5]);
    }

    #[test]
    fn matches_sequential_application() {
        let w1 = weights(&[3, 2, 1], &[0.3, -1.2, 0.7, 2.0, -0.4, 1.1]);
        let w2 = weights(&[4, 3, 1], &[1.0, 0.5, -2.0, 0.1, 0.2, 0.3, -1.0, 1.0, 0.0, 2.0, -0.5, 0.25]);
        let b2 = weights(&[4], &[0.1, 0.2, 0.3, 0.4]);
        let w3 = weights(&[1, 4, 1], &[1.5, -0.5, 0.75, 2.0]);
        let x = [0.9, -0.6];

        let composed = compose(&[conv(&w1, None), conv(&w2, Some(&b2)), conv(&w3, None)]).unwrap();

        let h1 = matvec(&w1.values, 3, 2, &x);
        let h2: Vec<f64> = matvec(&w2.values, 4, 3, &h1).iter().zip(&b2.values).map(|(a, b)| a + b).collect();
        let expected = matvec(&w3.values, 1, 4, &h2)[0];
        let bias = composed.bias.as_ref().unwrap().values[0];
        let actual = matvec(&composed.weight.values, 1, 2, &x)[0] + bias;
        assert!((actual - expected).abs() < 1e-12, "{actual} vs {expected}");
    }

    #[test]
    fn no_bias_anywhere_gives_no_bias() {
        let w1 = weights(&[2, 2, 1, 1], &[1.0, 0.0, 0.0, 1.0]);
        let w2 = weights(&[1, 2, 1, 1], &[2.0, 3.0]);

        let composed = compose(&[conv(&w1, None), conv(&w2, None)]).unwrap();

        assert!(composed.bias.is_none());
        assert_eq!(composed.weight.dims, vec![1, 2, 1, 1]);
    }

    #[test]
    fn spatial_first_kernel_kept() {
        // First Conv: 1 -> 2 channels, kernel 3; second: 2 -> 1 pointwise.
        let w1 = weights(&[2, 1, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let w2 = weights(&[1, 2, 1], &[1.0, -1.0]);

        let composed = compose(&[conv(&w1, None), conv(&w2, None)]).unwrap();

        assert_eq!(composed.weight.dims, vec![1, 1, 3]);
        assert_eq!(composed.weight.values, vec![-3.0, -3.0, -3.0]);
    }

    #[test]
    fn grouped_weight_expanded_densely() {
        // 4 -> 4 channels in 2 groups: each output reads 2 of the 4 inputs.
        let grouped = weights(&[4, 2, 1], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);

        let dense = dense_weight(&grouped, 2).unwrap();

        assert_eq!(dense.dims, vec![4, 4, 1]);
        let expected = [
            1.0, 2.0, 0.0, 0.0, //
            3.0, 4.0, 0.0, 0.0, //
            0.0, 0.0, 5.0, 6.0, //
            0.0, 0.0, 7.0, 8.0,
        ];
        assert_eq!(dense.values, expected);
    }

    #[test]
    fn channel_mismatch_is_reported() {
        let w1 = weights(&[3, 2, 1], &[0.0; 6]);
        let w2 = weights(&[1, 4, 1], &[0.0; 4]);

        let error = compose(&[conv(&w1, None), conv(&w2, None)]).unwrap_err();

        assert!(error.contains("4 input channels"), "{error}");
    }

    #[test]
    fn blocks_give_same_result() {
        // A grouped spatial first Conv (4 -> 6 channels, 2 groups, kernel 2),
        // then 6 -> 5 -> 3 pointwise: 3-element blocks split every row.
        let w1 = weights(&[6, 2, 2], &(0..24).map(|v| f64::from(v) * 0.25 - 3.0).collect::<Vec<_>>());
        let w2 = weights(&[5, 6, 1], &(0..30).map(|v| f64::from(v % 7) - 2.5).collect::<Vec<_>>());
        let w3 = weights(&[3, 5, 1], &(0..15).map(|v| 1.5 - f64::from(v) * 0.2).collect::<Vec<_>>());
        let b2 = weights(&[5], &[0.5, -1.0, 0.0, 2.0, 1.0]);
        let chain = [
            ConvWeights { weight: &w1, bias: None, group: 2 },
            conv(&w2, Some(&b2)),
            conv(&w3, None),
        ];

        let whole = compose_in_blocks(&chain, usize::MAX).unwrap();
        let blocked = compose_in_blocks(&chain, 3).unwrap();

        assert_eq!(blocked, whole);
        assert_eq!(whole.weight.dims, vec![3, 4, 2]);
        let dense = dense_weight(&w1, 2).unwrap();
        let w2_w1 = multiply(&w2.values, 5, 6, &dense.values, 8);
        assert_eq!(whole.weight.values, multiply(&w3.values, 3, 5, &w2_w1, 8));
    }

    #[test]
    fn fused_weight_over_protobuf_limit_rejected() {
        // Rank-1 chain 32768 -> 1 -> 32768: the fused float32 weight would
        // take 4 GiB, though each weight of the chain takes 128 KiB.
        let n = 1 << 15;
        let w1 = weights(&[1, n, 1], &vec![1.0; n]);
        let w2 = weights(&[n, 1, 1], &vec![1.0; n]);

        let error = compose(&[conv(&w1, None), conv(&w2, None)]).unwrap_err();

        assert!(error.contains("32768 x 32768"), "{error}");
        assert!(error.contains("2 GiB"), "{error}");
    }

    #[test]
    fn value_count_disagreeing_with_dims_rejected() {
        let w1 = weights(&[2, 2, 1], &[1.0, 2.0, 3.0]);
        let w2 = weights(&[1, 2, 1], &[1.0, 1.0]);

        let error = compose(&[conv(&w1, None), conv(&w2, None)]).unwrap_err();

        assert!(error.contains("holds 3 values"), "{error}");
    }

    #[test]
    fn keeps_element_type() {
        let mut w1 = weights(&[1, 1, 1], &[2.0]);
        let mut w2 = weights(&[1, 1, 1], &[3.0]);
        w1.elem = FloatType::F16;
        w2.elem = FloatType::F16;

        let composed = compose(&[conv(&w1, None), conv(&w2, None)]).unwrap();

        assert_eq!(composed.weight.elem, FloatType::F16);
        assert_eq!(composed.weight.values, vec![6.0]);
    }
}
