//! Protobuf text format (TF Serving's config files), parsed against the descriptors the
//! protos were generated from, with `prost-reflect`; never by hand.

use crate::error::{Code, ServingError};
use prost_reflect::text_format::FormatOptions;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use std::sync::LazyLock;

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(tfgate_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
});

/// Parses `text` as the message `full_name` (e.g. `tensorflow.serving.ModelServerConfig`)
/// into its generated type. The error says why, with the line and column.
pub fn parse<T: prost::Message + Default>(full_name: &str, text: &str) -> Result<T, String> {
    let pool = POOL.as_ref().map_err(Clone::clone)?;
    let descriptor = pool
        .get_message_by_name(full_name)
        .ok_or_else(|| format!("no descriptor for {full_name}"))?;
    let message = DynamicMessage::parse_text_format(descriptor, text).map_err(|e| e.to_string())?;
    message.transcode_to::<T>().map_err(|e| e.to_string())
}

/// A message as protobuf's `DebugString` prints it, for the errors where TF Serving
/// quotes one: fields in number order, a top-level map as one block per entry, sorted by
/// key (`prost-reflect`'s own text format writes maps as lists).
pub fn debug_string<T: prost::Message>(full_name: &str, message: &T) -> String {
    let Some(descriptor) = POOL
        .as_ref()
        .ok()
        .and_then(|pool| pool.get_message_by_name(full_name))
    else {
        return String::new();
    };
    let Ok(dynamic) =
        DynamicMessage::decode(descriptor.clone(), message.encode_to_vec().as_slice())
    else {
        return String::new();
    };
    let pretty = FormatOptions::new().pretty(true);
    let block = |out: &mut String, name: &str, body: &DynamicMessage| {
        out.push_str(name);
        out.push_str(" {\n");
        for line in body.to_text_format_with_options(&pretty).lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("}\n");
    };
    let mut fields: Vec<_> = dynamic.fields().collect();
    fields.sort_by_key(|(field, _)| field.number());
    let mut out = String::new();
    for (field, value) in fields {
        match (value, field.kind().as_message()) {
            (Value::Map(map), Some(entry)) if field.is_map() => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                for (key, value) in entries {
                    let mut pair = DynamicMessage::new(entry.clone());
                    pair.set_field_by_number(1, Value::from(key.clone()));
                    pair.set_field_by_number(2, value.clone());
                    block(&mut out, field.name(), &pair);
                }
            }
            _ => {
                let mut only = DynamicMessage::new(descriptor.clone());
                only.set_field(&field, value.clone());
                out.push_str(&only.to_text_format_with_options(&pretty));
                out.push('\n');
            }
        }
    }
    out
}

/// `ParseProtoTextFile`: reads `path` as the message `full_name`, with TF Serving's
/// errors (the file's errno as TF's `IOError` words it, or `Invalid protobuf file`); a
/// parse error is also logged with its position, under protobuf's wording.
pub fn read_file<T: prost::Message + Default>(
    path: &str,
    full_name: &str,
) -> Result<T, ServingError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => Code::NotFound,
            std::io::ErrorKind::PermissionDenied => Code::PermissionDenied,
            _ => Code::Unknown,
        };
        // strerror's words, as TF's IOError prints them ("No such file or directory").
        let text = e.to_string();
        let why = text.split(" (os error").next().unwrap_or(&text);
        ServingError::new(code, format!("{path}; {why}"))
    })?;
    parse(full_name, &text).map_err(|e| {
        tracing::error!("Error parsing text-format {full_name}: {e}");
        ServingError::invalid_argument(format!("Invalid protobuf file: '{path}'"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tfgate_proto::tensorflow::serving::{model_server_config, ModelServerConfig};

    #[test]
    fn parses_a_model_server_config() {
        let text = r#"
            model_config_list: {
              config: { name: "a", base_path: "/m/a", model_platform: "tensorflow"
                        model_version_policy { specific { versions: 1 versions: 2 } }
                        version_labels { key: "stable" value: 1 } }
              config { name: "b" base_path: "/m/b" }
            }"#;
        let c: ModelServerConfig = parse("tensorflow.serving.ModelServerConfig", text).unwrap();
        let Some(model_server_config::Config::ModelConfigList(list)) = c.config else {
            panic!("not a model list: {c:?}");
        };
        assert_eq!(list.config.len(), 2);
        assert_eq!(list.config[0].version_labels["stable"], 1);
        assert_eq!(list.config[1].base_path, "/m/b");
        let e = parse::<ModelServerConfig>(
            "tensorflow.serving.ModelServerConfig",
            "improperly formatted file",
        )
        .unwrap_err();
        assert!(!e.is_empty());
    }

    #[test]
    fn debug_string_prints_maps_as_protobuf_does() {
        use tfgate_proto::tensorflow::{SignatureDef, TensorInfo};
        let info = |name: &str| TensorInfo {
            encoding: Some(tfgate_proto::tensorflow::tensor_info::Encoding::Name(
                name.into(),
            )),
            dtype: 1,
            tensor_shape: None,
        };
        let sig = SignatureDef {
            inputs: [("inputs".to_string(), info("in:0"))].into_iter().collect(),
            outputs: [("scores", "s:0"), ("classes", "c:0")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), info(v)))
                .collect(),
            method_name: "tensorflow/serving/classify".into(),
            ..Default::default()
        };
        let text = debug_string("tensorflow.SignatureDef", &sig);
        let expected = r#"inputs {
  key: "inputs"
  value {
    name: "in:0"
    dtype: DT_FLOAT
  }
}
outputs {
  key: "classes"
  value {
    name: "c:0"
    dtype: DT_FLOAT
  }
}
outputs {
  key: "scores"
  value {
    name: "s:0"
    dtype: DT_FLOAT
  }
}
method_name: "tensorflow/serving/classify"
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn unreadable_and_malformed_files_fail_like_tf_serving() {
        let full = "tensorflow.serving.ModelServerConfig";
        let e = read_file::<ModelServerConfig>("/nonexistent/models.config", full).unwrap_err();
        assert_eq!(e.code, Code::NotFound);
        assert_eq!(
            e.message,
            "/nonexistent/models.config; No such file or directory"
        );
        let file = std::env::temp_dir().join(format!("tfgate-cfg-{}", std::process::id()));
        std::fs::write(&file, "improperly formatted file").unwrap();
        let path = file.to_string_lossy().into_owned();
        let e = read_file::<ModelServerConfig>(&path, full).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        assert_eq!(e.message, format!("Invalid protobuf file: '{path}'"));
        std::fs::remove_file(&file).unwrap();
    }
}
