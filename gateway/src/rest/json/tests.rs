//! Codec tests. Expected strings follow TF Serving's json_tensor.cc and the rapidjson
//! 1.1.0 writer it uses (4-space indent, single-line arrays inside rows).

use super::*;
use crate::error::Code;
use tfgate_tensor::tensor::{DataType, Tensor, TensorData};

fn doc(s: &str) -> JsonDoc {
    match parse(s.as_bytes()) {
        Ok(d) => d,
        Err(e) => panic!("{s}: {e}"),
    }
}

fn sig(inputs: &[(&str, DataType)]) -> Vec<(String, DataType)> {
    inputs.iter().map(|(n, d)| (n.to_string(), *d)).collect()
}

fn predict(body: &str, inputs: &[(&str, DataType)]) -> Result<PredictJson, ServingError> {
    decode_predict(&doc(body), &sig(inputs))
}

fn predict_err(body: &str, inputs: &[(&str, DataType)]) -> ServingError {
    match predict(body, inputs) {
        Ok(p) => panic!("{body} decoded as {p:?}"),
        Err(e) => e,
    }
}

fn f32s(shape: &[i64], v: &[f32]) -> Tensor {
    bytes_tensor(
        DataType::Float,
        shape,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn bytes_tensor(dtype: DataType, shape: &[i64], b: Vec<u8>) -> Tensor {
    Tensor {
        dtype,
        shape: shape.to_vec(),
        data: TensorData::Bytes(b.into()),
    }
}

fn i32s(shape: &[i64], v: &[i32]) -> Tensor {
    bytes_tensor(
        DataType::Int32,
        shape,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn strings(shape: &[i64], v: &[&[u8]]) -> Tensor {
    Tensor {
        dtype: DataType::String,
        shape: shape.to_vec(),
        data: TensorData::Strings(v.iter().map(|s| s.to_vec()).collect()),
    }
}

fn one(p: &PredictJson) -> &Tensor {
    assert_eq!(p.inputs.len(), 1, "{p:?}");
    &p.inputs[0].1
}

fn text(b: Result<Vec<u8>, ServingError>) -> String {
    match b {
        Ok(b) => match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => panic!("not UTF-8: {e}"),
        },
        Err(e) => panic!("{e}"),
    }
}

// ---------------------------------------------------------------- parsing

#[test]
fn parse_errors_read_like_tf_serving() {
    let msg = |b: &[u8]| match parse(b) {
        Ok(_) => panic!("{b:?} parsed"),
        Err(e) => {
            assert_eq!(e.code, Code::InvalidArgument);
            e.message
        }
    };
    assert_eq!(msg(b""), "JSON Parse error: The document is empty");
    assert_eq!(
        msg(b"  \n"),
        "JSON Parse error: The document is empty. at offset: 3"
    );
    assert_eq!(
        msg(b"{\"instances\": [1.0, x]}"),
        "JSON Parse error: Invalid value. at offset: 20"
    );
    assert_eq!(
        msg(b"{x"),
        "JSON Parse error: Missing a name for object member. at offset: 1"
    );
    assert_eq!(
        msg(b"{\"a\":[1 2]}"),
        "JSON Parse error: Missing a comma or ']' after an array element. at offset: 8"
    );
    assert_eq!(msg(b"[1, 2]"), "JSON Value: [1, 2] Is not object");
    assert_eq!(msg(b"\"s\""), "JSON Value: \"s\" Is not object");
    assert_eq!(msg(b"NaN"), "JSON Value:  Is not object");
    // Anything after the root object is ignored.
    assert!(parse(b"{\"inputs\": [1]}X").is_ok());
}

#[test]
fn signature_name() {
    assert_eq!(predict_signature_name(&doc("{}")), Ok(None));
    assert_eq!(
        predict_signature_name(&doc(r#"{"signature_name": "s"}"#)),
        Ok(Some("s".to_string()))
    );
    let e = predict_signature_name(&doc(r#"{"signature_name": 5, "instances": [1]}"#));
    assert_eq!(
        e,
        Err(ServingError::invalid_argument(
            "JSON Value: {\n    \"signature_name\": 5,\n    \"instances\": [1]\n} not formatted \
             correctly. 'signature_name' key must be a string value."
        ))
    );
    // TF Serving's DeeplyNestedMalformed case.
    let body = format!(
        "{{\"signature_name\":{}{}}}",
        "[".repeat(500_000),
        "]".repeat(500_000)
    );
    let e = predict_signature_name(&doc(&body)).unwrap_err();
    assert!(e
        .message
        .ends_with("'signature_name' key must be a string value."));
}

// ---------------------------------------------------------------- row format

#[test]
fn row_single_input() {
    let p = predict(
        r#"{"instances": [1.0, 2.0, 5.0]}"#,
        &[("x", DataType::Float)],
    )
    .unwrap();
    assert_eq!(p.format, PredictFormat::Row);
    assert_eq!(p.signature_name, None);
    assert_eq!(
        p.inputs,
        vec![("x".to_string(), f32s(&[3], &[1.0, 2.0, 5.0]))]
    );

    let p = predict(
        r#"{"signature_name": "s", "instances": [[1, 2], [3, 4], [5, 6]]}"#,
        &[("x", DataType::Int32)],
    )
    .unwrap();
    assert_eq!(p.signature_name.as_deref(), Some("s"));
    assert_eq!(one(&p), &i32s(&[3, 2], &[1, 2, 3, 4, 5, 6]));

    let p = predict(
        r#"{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}"#,
        &[("x", DataType::String)],
    )
    .unwrap();
    assert_eq!(one(&p), &strings(&[2], &[b"hello", b"world"]));

    // Not shape-checked against the signature; integers are fine for floats.
    let p = predict(
        r#"{"instances": [[[1]], [[2]]]}"#,
        &[("x", DataType::Float)],
    )
    .unwrap();
    assert_eq!(one(&p), &f32s(&[2, 1, 1], &[1.0, 2.0]));

    // Empty inner lists.
    let p = predict(r#"{"instances": [[], []]}"#, &[("x", DataType::Float)]).unwrap();
    assert_eq!(one(&p), &f32s(&[2, 0], &[]));
}

#[test]
fn row_named_inputs() {
    let inputs = [("tag", DataType::String), ("signal", DataType::Int32)];
    let p = predict(
        r#"{"instances": [{"tag": "foo", "signal": [1, 2]}, {"signal": [3, 4], "tag": "bar"}]}"#,
        &inputs,
    )
    .unwrap();
    assert_eq!(
        p.inputs,
        vec![
            ("signal".to_string(), i32s(&[2, 2], &[1, 2, 3, 4])),
            ("tag".to_string(), strings(&[2], &[b"foo", b"bar"])),
        ]
    );

    let e = predict_err(r#"{"instances": [{"tag": "foo"}]}"#, &inputs);
    assert_eq!(
        e.message,
        "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"tag\": \
         \"foo\"\n} keys must be equal to: signal,tag"
    );
    let e = predict_err(
        r#"{"instances": [{"tag": "foo", "signal": [1], "extra": 1}]}"#,
        &inputs,
    );
    assert_eq!(
        e.message,
        "Failed to process element: 0 key: extra of 'instances' list. Error: \
         INVALID_ARGUMENT: JSON object: does not have named input: extra"
    );
    let e = predict_err(
        r#"{"instances": [{"tag": "a", "signal": [1, 2]}, {"tag": "b", "signal": [[1, 2]]}]}"#,
        &inputs,
    );
    assert_eq!(
        e.message,
        "Failed to process element: 1 key: signal of 'instances' list. Error: \
         INVALID_ARGUMENT: Expecting shape [2] but got: [1,2]"
    );
    let e = predict_err(
        r#"{"instances": [{"tag": "a", "signal": [1, 2]}, [1, 2]]}"#,
        &inputs,
    );
    assert_eq!(
        e.message,
        "Expecting object but got list at item 1 of input list"
    );
    let e = predict_err(r#"{"instances": [[1, 2]]}"#, &inputs);
    assert_eq!(
        e.message,
        "instances is a plain list, but expecting list of objects as multiple input tensors \
         required as per tensorinfo_map"
    );
    let e = predict_err(
        r#"{"instances": [["a"], {"x": ["b"]}]}"#,
        &[("x", DataType::String)],
    );
    assert_eq!(
        e.message,
        "Expecting value/list but got object at item 1 of input list"
    );
    // A b64 object first: plain-list mode, fed to the first input by name.
    let p = predict(
        r#"{"instances": [{"b64": "AA=="}]}"#,
        &[("a", DataType::String), ("b", DataType::String)],
    )
    .unwrap();
    assert_eq!(p.inputs, vec![("a".to_string(), strings(&[1], &[b"\0"]))]);
}

#[test]
fn row_shape_errors() {
    let x = [("x", DataType::Int32)];
    let e = predict_err(r#"{"instances": [[1,2],[3,4],[5,6,7]]}"#, &x);
    assert_eq!(
        e.message,
        "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: \
         Expecting tensor size: 2 but got: 3"
    );
    let e = predict_err(r#"{"instances": [[1,2],[3,4],[[5,6]]]}"#, &x);
    assert_eq!(
        e.message,
        "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: \
         Expecting shape [2] but got: [1,2]"
    );
    let e = predict_err(r#"{"instances": [1, [1]]}"#, &x);
    assert_eq!(
        e.message,
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: \
         Expecting shape [] but got: [1]"
    );
    let e = predict_err(r#"{"instances": [[[1, 2], 3]]}"#, &x);
    assert_eq!(
        e.message,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON \
         Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"
    );
    let e = predict_err(r#"{"instances": [[1, [2]]]}"#, &x);
    assert_eq!(
        e.message,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: \
         Encountered list at unexpected level: 1 expected < 1"
    );
    let e = predict_err(r#"{"instances": [[[1, 2], [3]]]}"#, &x);
    assert_eq!(
        e.message,
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: \
         Encountered list at unexpected size: 1 at level: 1 expected size: 2"
    );
    let e = predict_err(r#"{"instances": [[1,2],["a", "b"]]}"#, &x);
    assert_eq!(
        e.message,
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: JSON \
         Value: \"a\" Type: String is not of expected type: int32"
    );
}

#[test]
fn request_shape_errors() {
    let x = [("x", DataType::Float)];
    let e = predict_err(r#"{"instances": [1], "inputs": [1]}"#, &x);
    assert_eq!(
        e.message,
        "JSON Value: {\n    \"instances\": [1],\n    \"inputs\": [1]\n} Not formatted correctly \
         expecting only one of 'inputs' or 'instances' keys to exist "
    );
    let e = predict_err(r#"{"instances": 1}"#, &x);
    assert_eq!(
        e.message,
        "JSON Value: {\n    \"instances\": 1\n} Expecting 'instances' to be an list/array"
    );
    let e = predict_err(r#"{"instances": []}"#, &x);
    assert_eq!(
        e.message,
        "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"
    );
    let e = predict_err(r#"{"signature_name": "s"}"#, &x);
    assert_eq!(
        e,
        ServingError::invalid_argument("Missing 'inputs' or 'instances' key")
    );
    let e = decode_predict(&doc(r#"{"inputs": [1]}"#), &[]).unwrap_err();
    assert_eq!(e.message, "Failed to get input map for signature: DEFAULT");
    let e = decode_predict(&doc(r#"{"signature_name": "s", "inputs": [1]}"#), &[]).unwrap_err();
    assert_eq!(e.message, "Failed to get input map for signature: s");
}

// ---------------------------------------------------------------- columnar format

#[test]
fn columnar() {
    let p = predict(r#"{"inputs": [2.0, 3.0, 4.0]}"#, &[("x", DataType::Float)]).unwrap();
    assert_eq!(p.format, PredictFormat::Columnar);
    assert_eq!(one(&p), &f32s(&[3], &[2.0, 3.0, 4.0]));

    let p = predict(r#"{"inputs": 7}"#, &[("x", DataType::Int32)]).unwrap();
    assert_eq!(one(&p), &i32s(&[], &[7]));

    let p = predict(r#"{"inputs": {"b64": "aGk="}}"#, &[("x", DataType::String)]).unwrap();
    assert_eq!(one(&p), &strings(&[], &[b"hi"]));

    let inputs = [("tag", DataType::String), ("signal", DataType::Int32)];
    let p = predict(
        r#"{"inputs": {"tag": ["foo", "bar"], "signal": [[1, 2, 3]], "ignored": null}}"#,
        &inputs,
    )
    .unwrap();
    assert_eq!(
        p.inputs,
        vec![
            ("signal".to_string(), i32s(&[1, 3], &[1, 2, 3])),
            ("tag".to_string(), strings(&[2], &[b"foo", b"bar"])),
        ]
    );
    // With one input the object form works too; the inner names must match.
    let p = predict(r#"{"inputs": {"x": [1]}}"#, &[("x", DataType::Int32)]).unwrap();
    assert_eq!(one(&p), &i32s(&[1], &[1]));

    let e = predict_err(r#"{"inputs": {"tag": ["a"]}}"#, &inputs);
    assert_eq!(e.message, "Missing named input: signal in 'inputs' object.");
    let e = predict_err(r#"{"inputs": [1]}"#, &inputs);
    assert_eq!(
        e.message,
        "inputs is a plain value/list, but expecting an object as multiple input tensors \
         required as per tensorinfo_map"
    );
    // Columnar errors are not wrapped.
    let e = predict_err(r#"{"inputs": [[1, 2], [3]]}"#, &[("x", DataType::Int32)]);
    assert_eq!(
        e.message,
        "Encountered list at unexpected size: 1 at level: 1 expected size: 2"
    );
}

// ---------------------------------------------------------------- dtypes

#[test]
fn dtype_conversions() {
    let col = |body: &str, dtype: DataType| -> Result<Tensor, ServingError> {
        predict(body, &[("x", dtype)]).map(|p| one(&p).clone())
    };
    let le = |dtype, shape: &[i64], b: Vec<u8>| Ok(bytes_tensor(dtype, shape, b));

    assert_eq!(
        col(r#"{"inputs": [1, 2.5]}"#, DataType::Double),
        le(
            DataType::Double,
            &[2],
            [1.0f64, 2.5].iter().flat_map(|x| x.to_le_bytes()).collect()
        )
    );
    // int8/int16/uint8 take any int32 and narrow it, as TF's int_val does.
    assert_eq!(
        col(r#"{"inputs": [300, -1]}"#, DataType::Int8),
        le(DataType::Int8, &[2], vec![44, 255])
    );
    assert_eq!(
        col(r#"{"inputs": [-1, 256]}"#, DataType::Uint8),
        le(DataType::Uint8, &[2], vec![255, 0])
    );
    assert_eq!(
        col(r#"{"inputs": [70000]}"#, DataType::Int16),
        le(DataType::Int16, &[1], 4464i16.to_le_bytes().to_vec())
    );
    assert_eq!(
        col(r#"{"inputs": [-9223372036854775808]}"#, DataType::Int64),
        le(DataType::Int64, &[1], i64::MIN.to_le_bytes().to_vec())
    );
    assert_eq!(
        col(r#"{"inputs": [4294967295]}"#, DataType::Uint32),
        le(DataType::Uint32, &[1], u32::MAX.to_le_bytes().to_vec())
    );
    assert_eq!(
        col(r#"{"inputs": [18446744073709551615]}"#, DataType::Uint64),
        le(DataType::Uint64, &[1], u64::MAX.to_le_bytes().to_vec())
    );
    assert_eq!(
        col(r#"{"inputs": [true, false]}"#, DataType::Bool),
        le(DataType::Bool, &[2], vec![1, 0])
    );
    assert_eq!(
        col(r#"{"inputs": ["a\u00e9"]}"#, DataType::String),
        Ok(strings(&[1], &["aé".as_bytes()]))
    );
    // Doubles beyond float range become infinities; NaN passes.
    let t = col(
        r#"{"inputs": [1.7976931348623157e308, -1e300, NaN, 1e-50]}"#,
        DataType::Float,
    )
    .unwrap();
    let v = t.to_f32().unwrap();
    assert_eq!(&v[..2], &[f32::INFINITY, f32::NEG_INFINITY]);
    assert!(v[2].is_nan());
    assert_eq!(v[3], 0.0);

    let type_err = |body: &str, dtype: DataType| col(body, dtype).unwrap_err().message;
    assert_eq!(
        type_err(r#"{"inputs": [1.0]}"#, DataType::Int32),
        "JSON Value: 1.0 Type: Number is not of expected type: int32"
    );
    assert_eq!(
        type_err(r#"{"inputs": [2147483648]}"#, DataType::Int32),
        "JSON Value: 2147483648 Type: Number is not of expected type: int32"
    );
    assert_eq!(
        type_err(r#"{"inputs": [1.5]}"#, DataType::Uint8),
        "JSON Value: 1.5 Type: Number is not of expected type: uint8"
    );
    assert_eq!(
        type_err(r#"{"inputs": [-1]}"#, DataType::Uint32),
        "JSON Value: -1 Type: Number is not of expected type: uint32"
    );
    assert_eq!(
        type_err(r#"{"inputs": [9223372036854775808]}"#, DataType::Int64),
        "JSON Value: 9223372036854775808 Type: Number is not of expected type: int64"
    );
    assert_eq!(
        type_err(r#"{"inputs": [-1]}"#, DataType::Uint64),
        "JSON Value: -1 Type: Number is not of expected type: uint64"
    );
    assert_eq!(
        type_err(r#"{"inputs": [1]}"#, DataType::Bool),
        "JSON Value: 1 Type: Number is not of expected type: bool"
    );
    assert_eq!(
        type_err(r#"{"inputs": [true]}"#, DataType::Float),
        "JSON Value: true Type: True is not of expected type: float"
    );
    assert_eq!(
        type_err(r#"{"inputs": [null]}"#, DataType::Double),
        "JSON Value: null Type: Null is not of expected type: double"
    );
    assert_eq!(
        type_err(r#"{"inputs": [1]}"#, DataType::String),
        "JSON Value: 1 Type: Number is not of expected type: string"
    );
    assert_eq!(
        type_err(r#"{"inputs": [{"b64": "AA=="}]}"#, DataType::Float),
        "JSON Value: {\n    \"b64\": \"AA==\"\n} Type: Object is not of expected type: float"
    );
    assert_eq!(
        type_err(r#"{"inputs": [{"b64": 1}]}"#, DataType::String),
        "JSON Value: {\n    \"b64\": 1\n} not formatted correctly for base64 data"
    );
    assert_eq!(
        type_err(r#"{"inputs": [{"b64": "AA==", "x": 1}]}"#, DataType::String),
        "JSON Value: {\n    \"b64\": \"AA==\",\n    \"x\": 1\n} not formatted correctly for base64 data"
    );
    assert_eq!(
        type_err(r#"{"inputs": [{"b64": "A"}]}"#, DataType::String),
        "Unable to base64 decode"
    );
}

#[test]
fn unsupported_input_dtypes_are_unimplemented() {
    for (dtype, name) in [
        (DataType::Half, "half"),
        (DataType::Bfloat16, "bfloat16"),
        (DataType::Complex64, "complex64"),
        (DataType::Complex128, "complex128"),
        (DataType::Uint16, "uint16"),
    ] {
        let e = predict_err(r#"{"inputs": [1.5]}"#, &[("x", dtype)]);
        assert_eq!(e.code, Code::Unimplemented);
        assert_eq!(crate::error::http_status(e.code), 501);
        assert_eq!(
            e.message,
            format!("Conversion of JSON Value: 1.5 to type: {name}")
        );
    }
    // In rows the error is wrapped, and so becomes INVALID_ARGUMENT (400).
    let e = predict_err(r#"{"instances": [1.5]}"#, &[("x", DataType::Half)]);
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(
        e.message,
        "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: Conversion of \
         JSON Value: 1.5 to type: half"
    );
    // No values, no conversion.
    let p = predict(r#"{"inputs": []}"#, &[("x", DataType::Half)]).unwrap();
    assert_eq!(one(&p), &bytes_tensor(DataType::Half, &[0], vec![]));
}

#[test]
fn deep_nesting_is_safe() {
    // TF Serving's DeeplyNested case: unrelated keys may nest arbitrarily.
    let body = format!(
        "{{\"instances\":[1], \"nested\":{}{}}}",
        "[".repeat(500_000),
        "]".repeat(500_000)
    );
    let p = predict(&body, &[("x", DataType::Int32)]).unwrap();
    assert_eq!(one(&p), &i32s(&[1], &[1]));
    // A tensor of absurd rank is refused like TF's TensorProto conversion refuses it.
    let body = format!(
        "{{\"inputs\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let e = predict_err(&body, &[("x", DataType::Int32)]);
    assert_eq!(e.message, "tensor parsing error: x");
    let body = format!("{{\"inputs\":{}1{}}}", "[".repeat(254), "]".repeat(254));
    let p = predict(&body, &[("x", DataType::Int32)]).unwrap();
    assert_eq!(one(&p).shape.len(), 254);
}

#[test]
fn duplicate_instance_keys_keep_the_first_values() {
    let p = predict(
        r#"{"instances": [{"x": [1, 2], "x": [3, 4]}]}"#,
        &[("x", DataType::Int32)],
    )
    .unwrap();
    assert_eq!(one(&p), &i32s(&[1, 2], &[1, 2]));
}

// ---------------------------------------------------------------- responses

#[test]
fn row_response_single_output() {
    let out = vec![("y".to_string(), f32s(&[3], &[2.5, 3.0, 4.5]))];
    assert_eq!(
        text(encode_predict(PredictFormat::Row, &out)),
        "{\n    \"predictions\": [2.5, 3.0, 4.5\n    ]\n}"
    );
    let out = vec![("y".to_string(), i32s(&[2, 2, 1], &[1, 2, 3, 4]))];
    assert_eq!(
        text(encode_predict(PredictFormat::Row, &out)),
        "{\n    \"predictions\": [[[1], [2]], [[3], [4]]\n    ]\n}"
    );
    let out = vec![("y".to_string(), i32s(&[0, 2], &[]))];
    assert_eq!(
        text(encode_predict(PredictFormat::Row, &out)),
        "{\n    \"predictions\": []\n}"
    );
    let out = vec![("y".to_string(), i32s(&[2, 0], &[]))];
    assert_eq!(
        text(encode_predict(PredictFormat::Row, &out)),
        "{\n    \"predictions\": [[], []\n    ]\n}"
    );
}

#[test]
fn row_response_several_outputs() {
    let out = vec![
        ("z".to_string(), i32s(&[2, 2], &[1, 2, 3, 4])),
        ("y".to_string(), f32s(&[2], &[3.0, 3.5])),
        ("s_bytes".to_string(), strings(&[2], &[b"hello", b"tf"])),
    ];
    assert_eq!(
        text(encode_predict(PredictFormat::Row, &out)),
        "{\n    \"predictions\": [\n        {\n            \"s_bytes\": {\n                \
         \"b64\": \"aGVsbG8=\"\n            },\n            \"y\": 3.0,\n            \"z\": [1, \
         2]\n        },\n        {\n            \"s_bytes\": {\n                \"b64\": \
         \"dGY=\"\n            },\n            \"y\": 3.5,\n            \"z\": [3, 4]\n        \
         }\n    ]\n}"
    );
    let bad = vec![
        ("a".to_string(), i32s(&[3], &[1, 2, 3])),
        ("z".to_string(), i32s(&[2], &[1, 2])),
    ];
    assert_eq!(
        encode_predict(PredictFormat::Row, &bad),
        Err(ServingError::invalid_argument(
            "Tensor name: z has inconsistent batch size: 2 expecting: 3"
        ))
    );
    let scalar = vec![("y".to_string(), i32s(&[], &[1]))];
    assert_eq!(
        encode_predict(PredictFormat::Row, &scalar),
        Err(ServingError::invalid_argument(
            "Tensor name: y has no shape information "
        ))
    );
    assert_eq!(
        encode_predict(PredictFormat::Row, &[]),
        Err(ServingError::invalid_argument(
            "Cannot convert empty tensor map to JSON"
        ))
    );
}

#[test]
fn columnar_response() {
    let out = vec![("y".to_string(), f32s(&[3], &[3.0, 3.5, 4.0]))];
    assert_eq!(
        text(encode_predict(PredictFormat::Columnar, &out)),
        "{\n    \"outputs\": [\n        3.0,\n        3.5,\n        4.0\n    ]\n}"
    );
    let out = vec![("y".to_string(), f32s(&[], &[1.0 / 3.0]))];
    assert_eq!(
        text(encode_predict(PredictFormat::Columnar, &out)),
        "{\n    \"outputs\": 0.333333343\n}"
    );
    let out = vec![
        ("b".to_string(), i32s(&[1, 2], &[1, 2])),
        ("a".to_string(), strings(&[], &[b"q\"\n"])),
    ];
    assert_eq!(
        text(encode_predict(PredictFormat::Columnar, &out)),
        "{\n    \"outputs\": {\n        \"a\": \"q\\\"\\n\",\n        \"b\": [\n            [\n\
         \x20               1,\n                2\n            ]\n        ]\n    }\n}"
    );
    // Shapes of different outputs are free in columnar responses, scalars included.
    let out = vec![("y".to_string(), i32s(&[0], &[]))];
    assert_eq!(
        text(encode_predict(PredictFormat::Columnar, &out)),
        "{\n    \"outputs\": []\n}"
    );
}

#[test]
fn response_value_types() {
    let t = |dtype, b: Vec<u8>, n: i64| vec![("y".to_string(), bytes_tensor(dtype, &[n], b))];
    let row = |o: Vec<(String, Tensor)>| text(encode_predict(PredictFormat::Row, &o));
    let wrap = |s: &str| format!("{{\n    \"predictions\": [{s}\n    ]\n}}");
    assert_eq!(row(t(DataType::Int8, vec![0xff, 7], 2)), wrap("-1, 7"));
    assert_eq!(row(t(DataType::Uint8, vec![0xff, 7], 2)), wrap("255, 7"));
    assert_eq!(row(t(DataType::Bool, vec![1, 0], 2)), wrap("true, false"));
    assert_eq!(
        row(t(DataType::Int16, (-2i16).to_le_bytes().to_vec(), 1)),
        wrap("-2")
    );
    assert_eq!(
        row(t(DataType::Int64, i64::MIN.to_le_bytes().to_vec(), 1)),
        wrap("-9223372036854775808")
    );
    assert_eq!(
        row(t(DataType::Uint32, u32::MAX.to_le_bytes().to_vec(), 1)),
        wrap("4294967295")
    );
    assert_eq!(
        row(t(DataType::Uint64, u64::MAX.to_le_bytes().to_vec(), 1)),
        wrap("18446744073709551615")
    );
    assert_eq!(
        row(t(
            DataType::Double,
            [0.1f64, 1.0 / 3.0]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            2
        )),
        wrap("0.1, 0.33333333333333331")
    );
    assert_eq!(
        row(vec![(
            "y".to_string(),
            f32s(
                &[5],
                &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 9e6, -0.0]
            )
        )]),
        wrap("NaN, Infinity, -Infinity, 9e+06, -0.0")
    );
    for (dtype, name) in [
        (DataType::Half, "half"),
        (DataType::Complex64, "complex64"),
        (DataType::Uint16, "uint16"),
    ] {
        let size = dtype.element_size().unwrap_or(1);
        assert_eq!(
            encode_predict(PredictFormat::Row, &t(dtype, vec![0; size], 1)),
            Err(ServingError::invalid_argument(format!(
                "Failed to write JSON value for tensor type: {name}"
            )))
        );
    }
    // Non-UTF-8 string outputs are written raw, like TF Serving.
    let raw = vec![("y".to_string(), strings(&[1], &[b"\xff\x00"]))];
    assert_eq!(
        encode_predict(PredictFormat::Row, &raw),
        Ok(b"{\n    \"predictions\": [\"\xff\\u0000\"\n    ]\n}".to_vec())
    );
    // A malformed tensor is an internal error, not a panic.
    let broken = vec![(
        "y".to_string(),
        bytes_tensor(DataType::Float, &[3], vec![0; 4]),
    )];
    assert_eq!(
        encode_predict(PredictFormat::Row, &broken)
            .unwrap_err()
            .code,
        Code::Internal
    );
}

#[test]
fn classify_and_regress_responses() {
    assert_eq!(
        text(encode_classify(&[vec![(b"".to_vec(), 3.0)]])),
        "{\n    \"results\": [[[\"\", 3.0]]\n    ]\n}"
    );
    assert_eq!(
        text(encode_classify(&[
            vec![(b"a".to_vec(), 0.25), (b"b".to_vec(), 0.75)],
            vec![],
        ])),
        "{\n    \"results\": [[[\"a\", 0.25], [\"b\", 0.75]], []\n    ]\n}"
    );
    assert_eq!(
        encode_regress(&[3.0]),
        Ok("{\n    \"results\": [3.0]\n}".to_string())
    );
    assert_eq!(
        encode_regress(&[0.2, f32::INFINITY, 1.0, f32::NEG_INFINITY, f32::NAN]),
        Ok("{\n    \"results\": [0.2, Infinity, 1.0, -Infinity, NaN]\n}".to_string())
    );
    assert_eq!(
        encode_classify(&[]).unwrap_err().message,
        "Cannot convert empty ClassificationResults to JSON"
    );
    assert_eq!(
        encode_regress(&[]).unwrap_err().message,
        "Cannot convert empty RegressionResults to JSON"
    );
}

#[test]
fn error_bodies() {
    assert_eq!(
        error_body("Bad key: \"key\""),
        "{\n    \"error\": \"Bad key: \\\"key\\\"\"\n}"
    );
    assert_eq!(
        error_body("Bad key: 'key'"),
        "{\n    \"error\": \"Bad key: 'key'\"\n}"
    );
    assert_eq!(
        error_body("a\nb\tc\u{1}é/"),
        "{\n    \"error\": \"a\\nb\\tc\\u0001é/\"\n}"
    );
}

// ---------------------------------------------------------------- classify / regress

/// A hand-built serialized `Example` with one feature.
fn example_one(name: &[u8], feature: &[u8]) -> Vec<u8> {
    let mut entry = vec![0x0A, name.len() as u8];
    entry.extend_from_slice(name);
    entry.extend_from_slice(&[0x12, feature.len() as u8]);
    entry.extend_from_slice(feature);
    let mut features = vec![0x0A, entry.len() as u8];
    features.extend_from_slice(&entry);
    let mut example = vec![0x0A, features.len() as u8];
    example.extend_from_slice(&features);
    example
}

#[test]
fn examples_become_tf_examples() {
    let d = doc(r#"{"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}, {"x": 2}, {}]}"#);
    let ex = decode_examples(&d).unwrap();
    assert_eq!(ex.signature_name.as_deref(), Some("classify_x_to_y"));
    assert_eq!(ex.context, None);
    // float_list { value: 2.0 }
    assert_eq!(
        ex.examples[0],
        example_one(b"x", &[0x12, 6, 0x0A, 4, 0, 0, 0, 0x40])
    );
    // int64_list { value: 2 }
    assert_eq!(ex.examples[1], example_one(b"x", &[0x1A, 3, 0x0A, 1, 2]));
    assert_eq!(ex.examples[2], Vec::<u8>::new());

    let d = doc(
        r#"{"context": {"q": "pizza"}, "examples": [{"t": ["a", {"b64": "Yg=="}], "f": [true, false, -1], "e": []}]}"#,
    );
    let ex = decode_examples(&d).unwrap();
    // bytes_list { value: "pizza" }
    assert_eq!(
        ex.context,
        Some(example_one(
            b"q",
            &[0x0A, 7, 0x0A, 5, b'p', b'i', b'z', b'z', b'a']
        ))
    );
    // Features are written sorted: e (no kind), f (int64 1, 0, -1), t (bytes a, b).
    let mut want = Vec::new();
    for entry in [
        vec![0x0A, 1, b'e', 0x12, 0],
        {
            let mut v = vec![0x0A, 1, b'f', 0x12, 16, 0x1A, 14, 0x0A, 12, 1, 0];
            v.extend_from_slice(&[0xFF; 9]);
            v.push(0x01);
            v
        },
        vec![
            0x0A, 1, b't', 0x12, 8, 0x0A, 6, 0x0A, 1, b'a', 0x0A, 1, b'b',
        ],
    ] {
        want.push(0x0A);
        want.push(entry.len() as u8);
        want.extend_from_slice(&entry);
    }
    let mut example = vec![0x0A, want.len() as u8];
    example.extend_from_slice(&want);
    assert_eq!(ex.examples, vec![example]);

    // A later duplicate key replaces the earlier one.
    let ex = decode_examples(&doc(r#"{"examples": [{"x": 1.5, "x": 2}]}"#)).unwrap();
    assert_eq!(ex.examples[0], example_one(b"x", &[0x1A, 3, 0x0A, 1, 2]));
}

/// Found by the fuzz target rest_examples: a feature name in raw non-UTF-8 bytes was
/// written into the Example as is, a `string` map key protobuf then refused to parse.
#[test]
fn a_feature_name_must_be_utf8() {
    let body = b"{\"examples\": [{\"x\": 10.5, \"\xfc\xfc\": 2}]}";
    let e = decode_examples(&parse(body).unwrap()).unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(
        e.message,
        "Example feature name '\u{fffd}\u{fffd}' is not valid UTF-8"
    );
    let context = b"{\"context\": {\"\xff\": 1}, \"examples\": [{}]}";
    assert!(decode_examples(&parse(context).unwrap()).is_err());
    // Non-UTF-8 bytes in a value stay bytes, as in TF Serving.
    let value = b"{\"examples\": [{\"t\": \"\xfc\"}]}";
    let ex = decode_examples(&parse(value).unwrap()).unwrap();
    assert_eq!(ex.examples[0], example_one(b"t", &[0x0A, 3, 0x0A, 1, 0xfc]));
}

#[test]
fn example_errors() {
    let err = |s: &str| decode_examples(&doc(s)).unwrap_err().message;
    assert_eq!(
        err(r#"{"signature_name": 1, "examples": [{}]}"#),
        "JSON Value: {\n    \"signature_name\": 1,\n    \"examples\": [{}]\n} not formatted \
         correctly. 'signature_name' key must be a string value."
    );
    assert_eq!(
        err(r#"{"instances": [1]}"#),
        "JSON Value: {\n    \"instances\": [1]\n} When method is classify, key 'examples' is \
         expected and was not found"
    );
    assert_eq!(
        err(r#"{"examples": {}}"#),
        "JSON Value: {\n    \"examples\": {}\n} Expecting 'examples' value to be an list/array"
    );
    assert_eq!(
        err(r#"{"examples": []}"#),
        "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array"
    );
    assert_eq!(
        err(r#"{"examples": [[]]}"#),
        "Example must be JSON object but got JSON Array"
    );
    assert_eq!(
        err(r#"{"context": 1, "examples": [{}]}"#),
        "Example must be JSON object but got JSON Number"
    );
    assert_eq!(
        err(r#"{"examples": [{"names": [1, "a"]}]}"#),
        "Unexpected element type in feature: names expecting type: int64"
    );
    assert_eq!(
        err(r#"{"examples": [{"x": [1.5, 2]}]}"#),
        "Unexpected element type in feature: x expecting type: float"
    );
    assert_eq!(
        err(r#"{"examples": [{"x": ["a", true]}]}"#),
        "Unexpected element type in feature: x expecting type: bytes"
    );
    assert_eq!(
        err(r#"{"examples": [{"names": null}]}"#),
        "Feature: names has element with unexpected JSON type: Null"
    );
    assert_eq!(
        err(r#"{"examples": [{"names": [[1]]}]}"#),
        "Feature: names has element with unexpected JSON type: Array"
    );
    assert_eq!(
        err(r#"{"examples": [{"names": {"a": 1}}]}"#),
        "Feature: names has element with unexpected JSON type: Object"
    );
    assert_eq!(
        err(r#"{"examples": [{"x": 18446744073709551615}]}"#),
        "Feature: x has uint64_t element. Only int64_t is supported."
    );
    assert_eq!(
        err(r#"{"examples": [{"x": {"b64": "!"}}]}"#),
        "Unable to base64 decode"
    );
}

// ---------------------------------------------------------------- robustness

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn garbage_never_panics() {
    let seeds: &[&[u8]] = &[
        br#"{"instances": [[1, 2], [3, 4]], "signature_name": "s"}"#,
        br#"{"inputs": {"a": [1.5, NaN], "b": ["x", {"b64": "AA=="}], "c": [[true]]}}"#,
        br#"{"instances": [{"a": 1, "b": "s", "c": [false]}, {"a": 2, "b": "t", "c": [true]}]}"#,
        br#"{"examples": [{"x": [1, 2], "y": "s", "z": {"b64": "eA=="}}], "context": {"q": 1.5}}"#,
        br#"{"inputs": [-Infinity, 1e308, 18446744073709551615, -9223372036854775809, 0.1e-400]}"#,
    ];
    let alphabet = b"[]{},:\"\\ 0123456789.eE-+NaIfinty{}b64\x00\xff\xef\xbb\xbf";
    let sigs: Vec<Vec<(String, DataType)>> = vec![
        sig(&[("a", DataType::Float)]),
        sig(&[
            ("a", DataType::Int8),
            ("b", DataType::String),
            ("c", DataType::Bool),
        ]),
        sig(&[("x", DataType::Uint64)]),
        sig(&[("a", DataType::Half), ("b", DataType::Double)]),
        sig(&[
            ("c", DataType::Int64),
            ("b", DataType::Uint32),
            ("a", DataType::String),
        ]),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..30_000 {
        let mut body: Vec<u8> = if round % 5 == 0 {
            (0..rng.below(64)).map(|_| rng.next() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].to_vec()
        };
        for _ in 0..rng.below(6) {
            let i = rng.below(body.len() + 1);
            match rng.below(4) {
                0 if i < body.len() => {
                    body.remove(i);
                }
                1 => body.insert(i, alphabet[rng.below(alphabet.len())]),
                2 if i < body.len() => body[i] = rng.next() as u8,
                _ => body.truncate(i),
            }
        }
        let Ok(d) = parse(&body) else { continue };
        let _ = predict_signature_name(&d);
        let _ = decode_examples(&d);
        for s in &sigs {
            if let Ok(p) = decode_predict(&d, s) {
                for (_, t) in &p.inputs {
                    assert!(t.check().is_ok());
                }
                let _ = encode_predict(p.format, &p.inputs);
            }
        }
    }
}

#[test]
fn decoded_inputs_round_trip_through_responses() {
    let p = predict(
        r#"{"inputs": [[0.5, 1e-45], [3.4e38, -2]]}"#,
        &[("x", DataType::Float)],
    )
    .unwrap();
    assert_eq!(
        text(encode_predict(PredictFormat::Row, &p.inputs)),
        "{\n    \"predictions\": [[0.5, 1.4013e-45], [3.4e+38, -2.0]\n    ]\n}"
    );
}

/// A random body around the numeric reader's subset: nested arrays of number tokens
/// (ragged, empty, mis-nested or not), the keys it takes and others, strings with and
/// without escapes, and stray bytes.
fn numeric_body(rng: &mut fastrand::Rng) -> String {
    const NUMBERS: &[&str] = &[
        "0",
        "-0",
        "1",
        "-7",
        "0.5",
        "-2.5e-3",
        "1E5",
        "3.4e38",
        "3.5e38",
        "1e400",
        "-1e-400",
        "2147483647",
        "2147483648",
        "-2147483649",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "NaN",
        "Infinity",
        "-Infinity",
        "Inf",
        "1.",
        ".5",
        "01",
        "-",
        "1e",
        "true",
        "null",
        "\"a\"",
        "{\"b64\": \"AA==\"}",
        "255",
        "256",
        "-129",
        "0.1",
    ];
    fn array(rng: &mut fastrand::Rng, depth: usize, dims: &[usize], out: &mut String) {
        out.push('[');
        let n = if rng.u8(..) < 8 {
            rng.usize(0..4)
        } else {
            dims[depth]
        };
        for i in 0..n {
            if i > 0 {
                out.push_str([",", ", ", " ,\n"][rng.usize(..3)]);
            }
            let leaf = depth + 1 == dims.len();
            if (leaf && rng.u8(..) >= 6) || (!leaf && rng.u8(..) < 6) {
                let pick = if rng.u8(..) < 230 {
                    rng.usize(..10)
                } else {
                    rng.usize(..NUMBERS.len())
                };
                out.push_str(NUMBERS[pick]);
            } else if depth + 1 < dims.len() {
                array(rng, depth + 1, dims, out);
            } else {
                out.push_str("[1]");
            }
        }
        out.push(']');
    }
    let dims: Vec<usize> = (0..rng.usize(1..4)).map(|_| rng.usize(1..4)).collect();
    let mut tensor = String::new();
    array(rng, 0, &dims, &mut tensor);
    let key = [
        "\"instances\"",
        "\"inputs\"",
        "\"instances\"",
        "\"in\\u0070uts\"",
    ][rng.usize(..4)];
    let mut members = vec![format!("{key}: {tensor}")];
    match rng.usize(..8) {
        0 => members.push("\"signature_name\": \"serving_default\"".into()),
        1 => members.push("\"signature_name\": \"s\\n\"".into()),
        2 => members.push("\"signature_name\": 5".into()),
        3 => members.push("\"inputs\": [1]".into()),
        4 => members.push("\"other\": 1".into()),
        5 => members.push("\"signature_name\": \"caf\u{e9}\"".into()),
        _ => {}
    }
    if rng.bool() {
        members.reverse();
    }
    let mut body = format!(
        "{}{{{}}}",
        [" ", "", "\n"][rng.usize(..3)],
        members.join(", ")
    );
    if rng.u8(..) < 20 {
        let i = rng.usize(..=body.len());
        if body.is_char_boundary(i) {
            body.insert(i, ['\0', ']', '[', ',', 'x', ' '][rng.usize(..6)]);
        }
    }
    if rng.u8(..) < 10 {
        body.push_str("trailing");
    }
    body
}

/// What `PredictBody::read` is told of a signature's dtype.
type Guess<'a> = dyn Fn(Option<&str>) -> Option<DataType> + 'a;

/// The numeric reader answers exactly as the document does, or not at all: for random
/// bodies and signatures, `PredictBody` gives the same decoded tensors or the same error
/// as parsing the document and `decode_predict`, and the reader takes enough of them
/// for that to mean something. Each body is read as the server reads it for each
/// signature (told its dtype), and with guesses that turn out wrong: float until a name
/// is seen (a `signature_name` after the array reads it again), and float throughout
/// (decoding reads it again with the signature's dtype).
#[test]
fn numeric_bodies_decode_as_the_document_does() {
    let sigs: Vec<Vec<(String, DataType)>> = [
        DataType::Float,
        DataType::Double,
        DataType::Int32,
        DataType::Int16,
        DataType::Int8,
        DataType::Uint8,
        DataType::Int64,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Bool,
        DataType::String,
        DataType::Half,
    ]
    .iter()
    .map(|d| sig(&[("x", *d)]))
    .chain([sig(&[("x", DataType::Float), ("y", DataType::Float)])])
    .collect();
    let mut rng = fastrand::Rng::with_seed(32);
    let (mut decoded, mut read_again) = (0, 0);
    for _ in 0..20_000 {
        let body = numeric_body(&mut rng);
        let general = parse(body.as_bytes());
        for s in &sigs {
            let dtype = match s.as_slice() {
                [(_, d)] => Some(*d),
                _ => None,
            };
            let guesses: [&Guess<'_>; 3] = [
                &|_| dtype,
                &|name| name.map_or(Some(DataType::Float), |_| dtype),
                &|_| Some(DataType::Float),
            ];
            for (g, guess) in guesses.iter().enumerate() {
                let read = PredictBody::read(body.as_bytes(), guess);
                let numeric = matches!(read, Ok(PredictBody::Numeric(..)));
                let (general, read) = match (&general, read) {
                    (Ok(g), Ok(r)) => (g, r),
                    (Err(g), Err(r)) => {
                        assert_eq!(*g, r, "{body}");
                        continue;
                    }
                    (g, r) => panic!("{body}: document {:?}, reader {:?}", g.is_ok(), r.is_ok()),
                };
                assert_eq!(
                    read.signature_name(),
                    predict_signature_name(general),
                    "{body}"
                );
                let got = read.decode(s);
                assert_eq!(got, decode_predict(general, s), "{body} {s:?} guess {g}");
                if numeric && got.is_ok() {
                    match g {
                        0 => decoded += 1,
                        _ if dtype != Some(DataType::Float) => read_again += 1,
                        _ => {}
                    }
                }
            }
        }
    }
    assert!(
        decoded > 5_000 && read_again > 8_000,
        "reader decoded {decoded}, read again {read_again}"
    );
}
