//! Protobuf text format (TF Serving's config files), parsed against the descriptors the
//! protos were generated from, with `prost-reflect`; never by hand.

use crate::error::{Code, ServingError};
use prost_reflect::{DescriptorPool, DynamicMessage};
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
