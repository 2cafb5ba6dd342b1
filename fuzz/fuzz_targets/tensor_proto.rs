//! A TensorProto from arbitrary bytes, converted as an input tensor is (what the gateway
//! does with every gRPC PredictRequest input). Neither step may panic; a tensor that
//! converts (up to a million elements) must convert back to a TensorProto and forth to
//! the same tensor, in either form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tfgate_proto::tensorflow::TensorProto;
use tfgate_tensor::proto::{from_proto, to_proto};
use tfgate_tensor::tensor::{DataType, Tensor, TensorData};

fuzz_target!(|data: &[u8]| {
    let Ok(proto) = TensorProto::decode(data) else {
        return;
    };
    let Ok(tensor) = from_proto(&proto) else {
        return;
    };
    // The round trips hold several copies; skip them for big fills (up to
    // MAX_FILLED_BYTES), which would only trip libFuzzer's 2 GiB RSS limit.
    if tensor.num_elements() > 1 << 20 {
        return;
    }
    // As `tensor_content`: byte for byte the same tensor.
    let back = from_proto(&to_proto(&tensor, true)).expect("tensor_content form converts");
    assert_eq!(back, tensor);
    // In the typed fields (`float_val`, ...): the same tensor, value for value (packed
    // bytes compared, so a NaN is held to its own bits).
    let typed = from_proto(&to_proto(&tensor, false)).expect("typed form converts");
    assert_eq!(typed, as_bools(tensor));
});

/// `tensor` with each bool byte as `bool_val` reads it back: nonzero is true (1). A
/// `tensor_content` may carry any byte for a bool; the typed field has two values.
fn as_bools(mut tensor: Tensor) -> Tensor {
    if tensor.dtype == DataType::Bool {
        if let TensorData::Bytes(b) = &tensor.data {
            let canonical: Vec<u8> = b.iter().map(|&v| u8::from(v != 0)).collect();
            tensor.data = TensorData::Bytes(canonical.into());
        }
    }
    tensor
}
