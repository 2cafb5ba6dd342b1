//! Protobuf text format (TF Serving's config files), parsed against the descriptors the
//! protos were generated from, with `prost-reflect`; never by hand.

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
}
