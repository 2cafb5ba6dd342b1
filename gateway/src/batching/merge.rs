//! Batch tensors: requests' inputs concatenated along dimension 0 (padded up to an
//! allowed batch size with copies of the last request's first row, as TF Serving pads),
//! and a batch's outputs split back into each request's rows — with TF Serving's
//! messages (`batching/batching_session.cc`).

use crate::error::ServingError;
use tfgate_tensor::tensor::{DataType, Tensor, TensorData};

/// Rows of a request: the 0th dimension its inputs share (`ComputeTensorBatchSize`).
pub fn task_rows(inputs: &[(String, Tensor)]) -> Result<usize, ServingError> {
    let mut rows = None;
    if inputs.is_empty() {
        return Err(ServingError::invalid_argument(
            "Batching Run() must have at least one input tensor",
        ));
    }
    for (_, t) in inputs {
        let Some(&dim0) = t.shape.first() else {
            return Err(ServingError::invalid_argument(
                "Batching Run() input tensors must have at least one dimension",
            ));
        };
        let dim0 = usize::try_from(dim0).unwrap_or(0);
        if rows.is_some_and(|r| r != dim0) {
            return Err(ServingError::invalid_argument(
                "Batching Run() input tensors must have equal 0th-dimension size",
            ));
        }
        rows = Some(dim0);
    }
    Ok(rows.unwrap_or(0))
}

/// The batch size to run `rows` as: the first allowed size (in list order) that fits,
/// else `rows` itself (`RoundToLowestAllowedBatchSize`).
pub fn padded_size(rows: usize, allowed: &[usize]) -> usize {
    allowed.iter().copied().find(|&a| a >= rows).unwrap_or(rows)
}

/// Elements per row of a tensor (the product of its dimensions after the first).
fn row_elements(t: &Tensor) -> usize {
    t.shape
        .iter()
        .skip(1)
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .product()
}

fn internal(what: &str) -> ServingError {
    ServingError::internal(format!("Tensor concat operation failed: {what}"))
}

/// Concatenates one input across requests (same dtype and non-batch dimensions, which
/// the batcher's grouping guarantees) and appends `pad` copies of the last request's
/// first row.
pub fn concat(parts: &[&Tensor], pad: usize) -> Result<Tensor, ServingError> {
    let first = parts.first().ok_or_else(|| internal("no tensors"))?;
    let per_row = row_elements(first);
    let rows: usize = parts
        .iter()
        .map(|t| {
            t.shape
                .first()
                .map_or(0, |&d| usize::try_from(d).unwrap_or(0))
        })
        .sum();
    let mut shape = first.shape.clone();
    shape[0] = i64::try_from(rows + pad).map_err(|_| internal("too many rows"))?;
    let last = parts[parts.len() - 1];
    let data = match &first.data {
        TensorData::Bytes(_) => {
            let size = first
                .dtype
                .element_size()
                .ok_or_else(|| internal("dtype"))?;
            let row_bytes = per_row * size;
            let mut out = Vec::with_capacity((rows + pad) * row_bytes);
            for t in parts {
                match &t.data {
                    TensorData::Bytes(b) => out.extend_from_slice(b),
                    TensorData::Strings(_) => return Err(internal("mixed dtypes")),
                }
            }
            if pad > 0 {
                let TensorData::Bytes(b) = &last.data else {
                    return Err(internal("mixed dtypes"));
                };
                let row = b
                    .get(..row_bytes)
                    .ok_or_else(|| internal("empty request"))?;
                for _ in 0..pad {
                    out.extend_from_slice(row);
                }
            }
            TensorData::Bytes(out)
        }
        TensorData::Strings(_) => {
            let mut out = Vec::with_capacity((rows + pad) * per_row);
            for t in parts {
                match &t.data {
                    TensorData::Strings(s) => out.extend(s.iter().cloned()),
                    TensorData::Bytes(_) => return Err(internal("mixed dtypes")),
                }
            }
            if pad > 0 {
                let TensorData::Strings(s) = &last.data else {
                    return Err(internal("mixed dtypes"));
                };
                let row = s.get(..per_row).ok_or_else(|| internal("empty request"))?;
                for _ in 0..pad {
                    out.extend(row.iter().cloned());
                }
            }
            TensorData::Strings(out)
        }
    };
    Tensor::new(first.dtype, shape, data).map_err(|e| internal(&e.to_string()))
}

/// Splits a batch output along dimension 0 into `sizes` rows each (the rest, padding,
/// is dropped).
pub fn split(t: &Tensor, sizes: &[usize], batch: usize) -> Result<Vec<Tensor>, ServingError> {
    let Some(&dim0) = t.shape.first() else {
        return Err(ServingError::failed_precondition(
            "Batched output tensor has 0 dimensions",
        ));
    };
    if usize::try_from(dim0).ok() != Some(batch) {
        return Err(ServingError::failed_precondition(
            "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension sizes of the input tensors",
        ));
    }
    let per_row = row_elements(t);
    let mut out = Vec::with_capacity(sizes.len());
    let mut row = 0;
    for &n in sizes {
        let mut shape = t.shape.clone();
        shape[0] = n as i64;
        let data = match &t.data {
            TensorData::Bytes(b) => {
                let size = t.dtype.element_size().unwrap_or(0) * per_row;
                TensorData::Bytes(b[row * size..(row + n) * size].to_vec())
            }
            TensorData::Strings(s) => {
                TensorData::Strings(s[row * per_row..(row + n) * per_row].to_vec())
            }
        };
        out.push(
            Tensor::new(t.dtype, shape, data).map_err(|e| {
                ServingError::internal(format!("Tensor split operation failed: {e}"))
            })?,
        );
        row += n;
    }
    Ok(out)
}

/// What may share a batch with what: the same dtype and non-batch dimensions for every
/// input. TF Serving merges requests of different shapes and then fails the whole batch;
/// tfgate runs them in separate batches instead.
pub fn shape_key(inputs: &[(String, Tensor)]) -> Vec<(String, DataType, Vec<i64>)> {
    inputs
        .iter()
        .map(|(alias, t)| {
            (
                alias.clone(),
                t.dtype,
                t.shape.iter().skip(1).copied().collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[i64], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    fn strings(v: &[&str]) -> Tensor {
        Tensor::new(
            DataType::String,
            vec![v.len() as i64],
            TensorData::Strings(v.iter().map(|s| s.as_bytes().to_vec()).collect()),
        )
        .unwrap()
    }

    #[test]
    fn concatenates_pads_and_splits() {
        let a = f32s(&[1, 2], &[1.0, 2.0]);
        let b = f32s(&[2, 2], &[3.0, 4.0, 5.0, 6.0]);
        let batch = concat(&[&a, &b], 1).unwrap();
        assert_eq!(batch.shape, vec![4, 2]);
        assert_eq!(
            batch.to_f32().unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 3.0, 4.0],
            "padding repeats b's first row"
        );
        let parts = split(&batch, &[1, 2], 4).unwrap();
        assert_eq!(parts[0].to_f32().unwrap(), vec![1.0, 2.0]);
        assert_eq!(parts[1].shape, vec![2, 2]);
        assert_eq!(parts[1].to_f32().unwrap(), vec![3.0, 4.0, 5.0, 6.0]);

        let s = concat(&[&strings(&["x"]), &strings(&["y", "z"])], 1).unwrap();
        assert_eq!(
            s.data,
            TensorData::Strings(vec![
                b"x".to_vec(),
                b"y".to_vec(),
                b"z".to_vec(),
                b"y".to_vec()
            ])
        );
        assert_eq!(
            split(&s, &[2, 1], 4).unwrap()[1].data,
            TensorData::Strings(vec![b"z".to_vec()])
        );
    }

    #[test]
    fn refuses_like_tf_serving() {
        let scalar = Tensor::from_f32(vec![], &[1.0]).unwrap();
        assert_eq!(
            task_rows(&[("x".into(), scalar.clone())])
                .unwrap_err()
                .message,
            "Batching Run() input tensors must have at least one dimension"
        );
        assert_eq!(
            task_rows(&[
                ("x".into(), f32s(&[1], &[1.0])),
                ("y".into(), f32s(&[2], &[1.0, 2.0]))
            ])
            .unwrap_err()
            .message,
            "Batching Run() input tensors must have equal 0th-dimension size"
        );
        assert_eq!(
            task_rows(&[]).unwrap_err().message,
            "Batching Run() must have at least one input tensor"
        );
        assert_eq!(
            task_rows(&[("x".into(), f32s(&[3, 1], &[1.0, 2.0, 3.0]))]).unwrap(),
            3
        );
        let e = split(&scalar, &[1], 1).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                crate::error::Code::FailedPrecondition,
                "Batched output tensor has 0 dimensions"
            )
        );
        let e = split(&f32s(&[2], &[1.0, 2.0]), &[1, 1], 3).unwrap_err();
        assert!(e
            .message
            .starts_with("Batched output tensor's 0th dimension does not equal"));
        assert_eq!(padded_size(3, &[2, 4, 8]), 4);
        assert_eq!(padded_size(9, &[2, 4, 8]), 9);
        assert_eq!(padded_size(3, &[]), 3);
    }
}
