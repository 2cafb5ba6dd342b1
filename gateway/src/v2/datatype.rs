//! KServe V2's datatype names and TensorFlow's dtypes, both ways, for every type the
//! two share:
//!
//! | V2 | TensorFlow |
//! |---|---|
//! | BOOL | bool |
//! | UINT8, UINT16, UINT32, UINT64 | uint8, uint16, uint32, uint64 |
//! | INT8, INT16, INT32, INT64 | int8, int16, int32, int64 |
//! | FP16, BF16 | half, bfloat16 (binary only over HTTP) |
//! | FP32, FP64 | float, double |
//! | BYTES | string |
//!
//! complex64/complex128 have no V2 name: a signature using them is described with an
//! empty datatype and cannot be fed over V2.

use tfgate_proto::inference::DataType as ConfigType;
use tfgate_tensor::tensor::DataType;

/// V2's name of a TensorFlow dtype, `None` for complex types.
pub fn name(dtype: DataType) -> Option<&'static str> {
    use DataType::*;
    Some(match dtype {
        Bool => "BOOL",
        Uint8 => "UINT8",
        Uint16 => "UINT16",
        Uint32 => "UINT32",
        Uint64 => "UINT64",
        Int8 => "INT8",
        Int16 => "INT16",
        Int32 => "INT32",
        Int64 => "INT64",
        Half => "FP16",
        Bfloat16 => "BF16",
        Float => "FP32",
        Double => "FP64",
        String => "BYTES",
        Complex64 | Complex128 => return None,
    })
}

/// The TensorFlow dtype of a V2 datatype name (exact, upper case as the protocol
/// spells them).
pub fn parse(name: &str) -> Option<DataType> {
    use DataType::*;
    Some(match name {
        "BOOL" => Bool,
        "UINT8" => Uint8,
        "UINT16" => Uint16,
        "UINT32" => Uint32,
        "UINT64" => Uint64,
        "INT8" => Int8,
        "INT16" => Int16,
        "INT32" => Int32,
        "INT64" => Int64,
        "FP16" => Half,
        "BF16" => Bfloat16,
        "FP32" => Float,
        "FP64" => Double,
        "BYTES" => String,
        _ => return None,
    })
}

/// The model configuration's `DataType` enum value (`TYPE_FP32`, ...).
pub fn config_type(dtype: DataType) -> ConfigType {
    use DataType::*;
    match dtype {
        Bool => ConfigType::TypeBool,
        Uint8 => ConfigType::TypeUint8,
        Uint16 => ConfigType::TypeUint16,
        Uint32 => ConfigType::TypeUint32,
        Uint64 => ConfigType::TypeUint64,
        Int8 => ConfigType::TypeInt8,
        Int16 => ConfigType::TypeInt16,
        Int32 => ConfigType::TypeInt32,
        Int64 => ConfigType::TypeInt64,
        Half => ConfigType::TypeFp16,
        Bfloat16 => ConfigType::TypeBf16,
        Float => ConfigType::TypeFp32,
        Double => ConfigType::TypeFp64,
        String => ConfigType::TypeString,
        Complex64 | Complex128 => ConfigType::TypeInvalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v2_name_round_trips() {
        let names = [
            "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
            "FP16", "BF16", "FP32", "FP64", "BYTES",
        ];
        for n in names {
            let dtype = parse(n).unwrap_or_else(|| panic!("{n} unknown"));
            assert_eq!(name(dtype), Some(n));
            assert_ne!(config_type(dtype), ConfigType::TypeInvalid, "{n}");
        }
        assert_eq!(parse("fp32"), None, "names are upper case");
        assert_eq!(parse("FLOAT"), None);
        assert_eq!(name(DataType::Complex64), None);
        assert_eq!(parse("FP32"), Some(DataType::Float));
        assert_eq!(parse("BYTES"), Some(DataType::String));
    }
}
