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

/// Composes a chain of Convs into the weight and bias of one Conv.
///
/// Returns a reason when the shapes do not chain (a malformed model).
pub fn compose(chain: &[ConvWeights]) -> Result<Composed, String> {
    let (first, rest) = chain.split_first().ok_or("the chain is empty")?;
    let elem = first.weight.elem;
    let mut weight = dense_weight(first.weight, first.group)?;
    let mut bias = bias_or_zero(first, weight.dims[0])?;

    for next in rest {
        let (c_out, c_in) = pointwise_shape(next.weight)?;
        if c_in != weight.dims[0] {
            return Err(format!(
                "a Conv with {c_in} input channels follows one with {} output channels",
                weight.dims[0]
            ));
        }
        let next_bias = bias_or_zero(next, c_out)?;

        weight = matmul(&next.weight.values, c_out, &weight);
        bias = matvec(&next.weight.values, c_out, c_in, &bias)
            .into_iter()
            .zip(next_bias)
            .map(|(product, b)| product + b)
            .collect();
    }

    let has_bias = chain.iter().any(|conv| conv.bias.is_some());
    let bias = has_bias.then(|| Weights {
        dims: vec![weight.dims[0]],
        values: bias,
        elem,
    });
    weight.elem = elem;
    Ok(Composed { weight, bias })
}

/// Expands a grouped weight `[M, C/g, k...]` to a dense `[M, C, k...]`.
pub fn dense_weight(weight: &Weights, group: usize) -> Result<Weights, String> {
    let dims = &weight.dims;
    if dims.len() < 3 {
        return Err(format!("the weight has rank {}, a Conv weight needs rank 3 or more", dims.len()));
    }
    if group == 0 || dims[0] % group != 0 {
        return Err(format!("{} output channels cannot be split into {group} groups", dims[0]));
    }
    if group == 1 {
        return Ok(weight.clone());
    }

    let (c_out, c_in_group) = (dims[0], dims[1]);
    let kernel: usize = dims[2..].iter().product();
    let c_in = c_in_group * group;
    let out_per_group = c_out / group;
    let mut values = vec![0.0; c_out * c_in * kernel];

    for m in 0..c_out {
        let first_input = (m / out_per_group) * c_in_group;
        let source = &weight.values[m * c_in_group * kernel..(m + 1) * c_in_group * kernel];
        let target_start = (m * c_in + first_input) * kernel;
        values[target_start..target_start + source.len()].copy_from_slice(source);
    }

    let mut dense_dims = dims.clone();
    dense_dims[1] = c_in;
    Ok(Weights {
        dims: dense_dims,
        values,
        elem: weight.elem,
    })
}

fn pointwise_shape(weight: &Weights) -> Result<(usize, usize), String> {
    let dims = &weight.dims;
    if dims.len() < 3 || dims[2..].iter().any(|&k| k != 1) {
        return Err(format!("weight dims {dims:?} are not those of a pointwise Conv"));
    }
    Ok((dims[0], dims[1]))
}

fn bias_or_zero(conv: &ConvWeights, c_out: usize) -> Result<Vec<f64>, String> {
    match conv.bias {
        None => Ok(vec![0.0; c_out]),
        Some(bias) if bias.dims == [c_out] => Ok(bias.values.clone()),
        Some(bias) => Err(format!("bias dims {:?} do not match {c_out} output channels", bias.dims)),
    }
}

/// `left [rows, inner]` times `right [inner, rest...]`, keeping `right`'s trailing dims.
fn matmul(left: &[f64], rows: usize, right: &Weights) -> Weights {
    let inner = right.dims[0];
    let cols = right.values.len() / inner.max(1);
    let mut values = vec![0.0; rows * cols];

    // SAFETY: the pointers cover `rows*inner`, `inner*cols` and `rows*cols`
    // elements of slices of exactly those lengths, all row-major.
    unsafe {
        matrixmultiply::dgemm(
            rows,
            inner,
            cols,
            1.0,
            left.as_ptr(),
            inner as isize,
            1,
            right.values.as_ptr(),
            cols as isize,
            1,
            0.0,
            values.as_mut_ptr(),
            cols as isize,
            1,
        );
    }

    let mut dims = right.dims.clone();
    dims[0] = rows;
    Weights {
        dims,
        values,
        elem: FloatType::F64,
    }
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
        // 4 -> 4 channels in 2 groups: each output sees 2 of the 4 inputs.
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
