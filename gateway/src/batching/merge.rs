//! Batch tensors: requests' inputs concatenated along dimension 0 (padded up to an
//! allowed batch size with copies of the last request's first row, as TF Serving pads;
//! with `pad_variable_length_inputs`, each request's inputs first padded to the batch's
//! largest non-batch dimensions with their own first element, as TF Serving's
//! `batching_util.cc` pads), and a batch's outputs split back into each request's rows —
//! with TF Serving's messages (`batching/batching_session.cc`).

use crate::error::ServingError;
use crate::validation::ValidRun;
use tfgate_tensor::tensor::{Tensor, TensorData};

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
        TensorData::Bytes(_) | TensorData::File(_) => {
            let size = first
                .dtype
                .element_size()
                .ok_or_else(|| internal("dtype"))?;
            let row_bytes = per_row * size;
            let mut out = Vec::with_capacity((rows + pad) * row_bytes);
            let mut last_at = 0;
            for t in parts {
                last_at = out.len();
                match &t.data {
                    TensorData::Bytes(b) => out.extend_from_slice(b),
                    // A shared-memory input is read straight into the batch.
                    TensorData::File(f) => {
                        out.resize(last_at + f.len, 0);
                        f.read_into(&mut out[last_at..])
                            .map_err(ServingError::invalid_argument)?;
                    }
                    TensorData::Strings(_) => return Err(internal("mixed dtypes")),
                }
            }
            if pad > 0 {
                // The last request's first row, as it now lies in the batch.
                if out.len() < last_at + row_bytes {
                    return Err(internal("empty request"));
                }
                for _ in 0..pad {
                    out.extend_from_within(last_at..last_at + row_bytes);
                }
            }
            TensorData::Bytes(out.into())
        }
        TensorData::Strings(_) => {
            let mut out = Vec::with_capacity((rows + pad) * per_row);
            for t in parts {
                match &t.data {
                    TensorData::Strings(s) => out.extend(s.iter().cloned()),
                    TensorData::Bytes(_) | TensorData::File(_) => {
                        return Err(internal("mixed dtypes"))
                    }
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
                TensorData::Bytes(b.slice(row * size..(row + n) * size))
            }
            TensorData::Strings(s) => {
                TensorData::Strings(s[row * per_row..(row + n) * per_row].to_vec())
            }
            // Batched runs answer in memory: only a run of its own writes a region.
            TensorData::File(_) => {
                return Err(ServingError::internal(
                    "Tensor split operation failed: the batch's output is in a file",
                ))
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

/// Whether two validated runs of one servable may share a batch: the same signature,
/// output filter, inputs and dtypes, and the same non-batch dimensions — or, when
/// `pad` (`pad_variable_length_inputs`), the same ranks, since padding evens the rest out.
/// TF Serving merges requests of different shapes without padding and then fails the whole
/// batch; tfgate runs them in separate batches instead.
pub fn same_group(a: &ValidRun, b: &ValidRun, pad: bool) -> bool {
    a.signature_key() == b.signature_key()
        && a.output_filter() == b.output_filter()
        && a.inputs().len() == b.inputs().len()
        && a.inputs()
            .iter()
            .zip(b.inputs())
            .all(|((na, ta), (nb, tb))| {
                na == nb
                    && ta.dtype == tb.dtype
                    && if pad {
                        ta.shape.len() == tb.shape.len()
                    } else {
                        ta.shape.get(1..) == tb.shape.get(1..)
                    }
            })
}

/// Per input (in the order of `first`'s inputs), the largest size of each dimension over
/// the requests of a batch (`CalculateMaxDimSizes`).
pub fn max_dims<'a>(runs: impl Iterator<Item = &'a ValidRun> + Clone) -> Vec<Vec<i64>> {
    let mut out: Vec<Vec<i64>> = Vec::new();
    for run in runs {
        for (i, (_, t)) in run.inputs().iter().enumerate() {
            match out.get_mut(i) {
                None => out.push(t.shape.clone()),
                Some(m) => {
                    for (d, &size) in m.iter_mut().zip(&t.shape) {
                        *d = (*d).max(size);
                    }
                }
            }
        }
    }
    out
}

/// `t` padded at the end of each non-batch dimension up to `dims`, with its own first
/// element (TF Serving's `AddPadding`, ranks 1 to 6).
pub fn pad_to(t: &Tensor, dims: &[i64]) -> Result<Tensor, ServingError> {
    if t.shape.is_empty() || t.shape.len() > 6 {
        return Err(ServingError::invalid_argument(
            "Only tensors with rank from 1 to 6 can be padded.",
        ));
    }
    if t.shape.as_slice() == dims {
        return Ok(t.clone());
    }
    let mut shape = dims.to_vec();
    shape[0] = t.shape[0];
    let to_usize =
        |v: &[i64]| -> Vec<usize> { v.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect() };
    let (from, to) = (to_usize(&t.shape), to_usize(&shape));
    if to.iter().product::<usize>() == t.num_elements() {
        // Nothing to pad (a request of no rows): the same elements in the batch's shape.
        return Tensor::new(t.dtype, shape, t.data.clone()).map_err(|e| internal(&e.to_string()));
    }
    if t.num_elements() == 0 {
        return Err(ServingError::invalid_argument(
            "Got empty tensor in batch of non-empty tensors.",
        ));
    }
    let read;
    let data = match &t.data {
        // A shared-memory input is read to be padded.
        TensorData::File(f) => {
            read = TensorData::Bytes(f.read().map_err(ServingError::invalid_argument)?);
            &read
        }
        data => data,
    };
    let data = match data {
        TensorData::File(_) => return Err(internal("a file")),
        TensorData::Bytes(b) => {
            let size = t.dtype.element_size().ok_or_else(|| internal("dtype"))?;
            let mut out = Vec::with_capacity(to.iter().product::<usize>() * size);
            copy_padded(&mut out, b, size, &from, &to, &b[..size]);
            TensorData::Bytes(out.into())
        }
        TensorData::Strings(s) => {
            let mut out = Vec::with_capacity(to.iter().product());
            copy_padded(&mut out, s, 1, &from, &to, &s[..1]);
            TensorData::Strings(out)
        }
    };
    Tensor::new(t.dtype, shape, data).map_err(|e| internal(&e.to_string()))
}

/// Appends `input` (of dimensions `from`, elements of `unit` items) laid out in
/// dimensions `to` (each at least as large), the gaps filled with `pad`.
fn copy_padded<T: Clone>(
    out: &mut Vec<T>,
    input: &[T],
    unit: usize,
    from: &[usize],
    to: &[usize],
    pad: &[T],
) {
    let (Some(&n_from), Some(&n_to)) = (from.first(), to.first()) else {
        out.extend_from_slice(&input[..unit.min(input.len())]);
        return;
    };
    let inner_from: usize = from[1..].iter().product::<usize>() * unit;
    let inner_to: usize = to[1..].iter().product();
    for i in 0..n_to {
        if i < n_from {
            let row = &input[i * inner_from..(i + 1) * inner_from];
            if from.len() == 1 {
                out.extend_from_slice(row);
            } else {
                copy_padded(out, row, unit, &from[1..], &to[1..], pad);
            }
        } else {
            for _ in 0..inner_to {
                out.extend_from_slice(pad);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tfgate_tensor::tensor::DataType;

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

    /// A shared-memory input (still in its file) joins a batch as its bytes: read
    /// straight into the batch, padded from, and a file that shrank fails the batch's
    /// formation with the file named.
    #[test]
    fn inputs_still_in_files_are_read_into_the_batch() {
        let bytes: Vec<u8> = [9.0f32, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let path = std::env::temp_dir().join(format!("tfgate-merge-{}", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let file = std::sync::Arc::new(shm_protocol::ClientObject::new(
            std::fs::File::options()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap(),
            0,
            bytes.len() as u64,
            true,
        ));
        std::fs::remove_file(&path).unwrap();
        let b = Tensor::new(
            DataType::Float,
            vec![2, 2],
            TensorData::File(tfgate_tensor::FileBytes {
                file: file.clone(),
                offset: 4,
                len: 16,
                what: "shared memory region 'r' (key '/k')".into(),
            }),
        )
        .unwrap();
        let a = f32s(&[1, 2], &[1.0, 2.0]);
        let batch = concat(&[&a, &b], 1).unwrap();
        assert_eq!(
            batch.to_f32().unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 3.0, 4.0]
        );
        let padded = pad_to(&b, &[2, 3]).unwrap();
        assert_eq!(padded.to_f32().unwrap(), vec![3.0, 4.0, 3.0, 5.0, 6.0, 3.0]);
        // Its owner truncates it: the mapped copy is caught and the file answers.
        file.file().set_len(8).unwrap();
        let e = concat(&[&a, &b], 0).unwrap_err();
        assert_eq!(
            e.message,
            "cannot read shared memory region 'r' (key '/k'): the file ends 4 bytes into a range of 16"
        );
    }

    #[test]
    fn pads_variable_length_inputs_with_each_requests_first_element() {
        // [[1, 2]] padded to [1, 3]; [[3], [4]] (2 rows, width 1) padded to [2, 3].
        let a = f32s(&[1, 2], &[1.0, 2.0]);
        let b = f32s(&[2, 1], &[3.0, 4.0]);
        assert_eq!(
            pad_to(&a, &[1, 3]).unwrap().to_f32().unwrap(),
            vec![1.0, 2.0, 1.0]
        );
        let pb = pad_to(&b, &[9, 3]).unwrap();
        assert_eq!(pb.shape, vec![2, 3], "the batch dimension stays");
        assert_eq!(pb.to_f32().unwrap(), vec![3.0, 3.0, 3.0, 4.0, 3.0, 3.0]);
        // Rank 3: inner rows padded, then whole missing rows.
        let c = f32s(&[1, 1, 2], &[5.0, 6.0]);
        assert_eq!(
            pad_to(&c, &[1, 2, 3]).unwrap().to_f32().unwrap(),
            vec![5.0, 6.0, 5.0, 5.0, 5.0, 5.0]
        );
        let s = pad_to(&strings(&["x"]), &[1]).unwrap();
        assert_eq!(s.data, TensorData::Strings(vec![b"x".to_vec()]));
        let s2 = Tensor::new(
            DataType::String,
            vec![1, 1],
            TensorData::Strings(vec![b"q".to_vec()]),
        )
        .unwrap();
        assert_eq!(
            pad_to(&s2, &[1, 3]).unwrap().data,
            TensorData::Strings(vec![b"q".to_vec(), b"q".to_vec(), b"q".to_vec()])
        );
        let rank7 = f32s(&[1, 1, 1, 1, 1, 1, 1], &[1.0]);
        assert_eq!(
            pad_to(&rank7, &[1, 1, 1, 1, 1, 1, 1]).unwrap_err().message,
            "Only tensors with rank from 1 to 6 can be padded."
        );
        let empty = f32s(&[1, 0], &[]);
        assert_eq!(
            pad_to(&empty, &[1, 2]).unwrap_err().message,
            "Got empty tensor in batch of non-empty tensors."
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
