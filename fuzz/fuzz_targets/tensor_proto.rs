//! A TensorProto from arbitrary bytes, converted as an input tensor is (what the gateway
//! does with every gRPC PredictRequest input). Neither step may panic; a tensor that
//! converts (up to a million elements) must convert back to a TensorProto and forth to
//! the same tensor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tfgate_proto::tensorflow::TensorProto;
use tfgate_tensor::proto::{from_proto, to_proto};

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
    // In the typed fields (`float_val`, ...): the same dtype and shape.
    let typed = from_proto(&to_proto(&tensor, false)).expect("typed form converts");
    assert_eq!(typed.dtype, tensor.dtype);
    assert_eq!(typed.shape, tensor.shape);
});
