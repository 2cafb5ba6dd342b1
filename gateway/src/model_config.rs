//! TF Serving's `ModelServerConfig`: read from `--model_config_file` (protobuf text
//! format) or built from `--model_name`/`--model_base_path`, and checked model by model
//! as `server_core.cc` checks it. Each model becomes the `ModelConfig` workers serve.

use crate::error::ServingError;
use std::collections::BTreeSet;
use tfgate_proto::tensorflow::serving as pb;
use tfgate_proto::tensorflow::serving::model_server_config::Config;

/// The only platform tfgate (and TF Serving without `--platform_config_file`) serves.
pub const TENSORFLOW_PLATFORM: &str = "tensorflow";

/// Reads a text-format `ModelServerConfig` file (`--model_config_file`).
pub fn read_file(path: &str) -> Result<pb::ModelServerConfig, ServingError> {
    crate::text_format::read_file(path, MESSAGE)
}

const MESSAGE: &str = "tensorflow.serving.ModelServerConfig";

/// Parses a text-format `ModelServerConfig` (what `read_file` does with the text; the
/// tests and the fuzz target call it directly).
pub fn parse(text: &str) -> Result<pb::ModelServerConfig, String> {
    crate::text_format::parse(MESSAGE, text)
}

/// `BuildSingleModelConfig`: the config `--model_name` and `--model_base_path` stand for.
pub fn single_model(name: &str, base_path: &str) -> pb::ModelServerConfig {
    pb::ModelServerConfig {
        config: Some(Config::ModelConfigList(pb::ModelConfigList {
            config: vec![pb::ModelConfig {
                name: name.to_string(),
                base_path: base_path.to_string(),
                model_platform: TENSORFLOW_PLATFORM.to_string(),
                ..Default::default()
            }],
        })),
    }
}

/// The model list of a config, if it is one.
pub fn model_list(config: &pb::ModelServerConfig) -> Option<&[pb::ModelConfig]> {
    match &config.config {
        Some(Config::ModelConfigList(list)) => Some(&list.config),
        _ => None,
    }
}

/// `UriIsRelativePath`: no scheme, no host, and a path not starting with `/`.
fn is_relative(uri: &str) -> bool {
    !uri.contains("://") && !uri.starts_with('/')
}

/// `ValidateModelConfigList`: names are unique, base paths absolute (or URIs).
pub fn validate_list(models: &[pb::ModelConfig]) -> Result<(), ServingError> {
    let mut names = BTreeSet::new();
    for m in models {
        if !names.insert(m.name.as_str()) {
            return Err(ServingError::invalid_argument(format!(
                "Illegal to list model {} multiple times in config list",
                m.name
            )));
        }
    }
    for m in models {
        if is_relative(&m.base_path) {
            return Err(ServingError::invalid_argument(format!(
                "Expected model {} to have an absolute path or URI; got base_path()={}",
                m.name, m.base_path
            )));
        }
        remote_store(&m.name, &m.base_path)?;
    }
    Ok(())
}

/// A base path's store, if it is on one (`gs://`, `s3://`); any other URI is refused by
/// its scheme, never taken for a local path.
pub fn remote_store(
    model: &str,
    base_path: &str,
) -> Result<Option<tfgate_model_store::RemotePath>, ServingError> {
    tfgate_model_store::parse(base_path)
        .map_err(|e| ServingError::invalid_argument(format!("model {model}: base_path {e}")))
}

/// `GetPlatform`: `model_platform`, or the deprecated `model_type`, never both.
#[allow(deprecated)] // model_type is read only to honour old configs, as TF Serving does
pub fn platform(m: &pb::ModelConfig) -> Result<String, ServingError> {
    let platform = if m.model_type != 0 {
        tracing::warn!(
            "Deprecated ModelServerConfig::model_type field used. Prefer ModelServerConfig::model_platform."
        );
        if !m.model_platform.is_empty() {
            return Err(ServingError::invalid_argument(format!(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and ModelServerConfig::model_platform, model name is {}",
                m.name
            )));
        }
        if m.model_type != pb::ModelType::Tensorflow as i32 {
            return Err(ServingError::invalid_argument(format!(
                "ModelServerConfig::model_type choice {} not supported.",
                m.model_type
            )));
        }
        TENSORFLOW_PLATFORM.to_string()
    } else {
        m.model_platform.clone()
    };
    if platform.is_empty() {
        return Err(ServingError::invalid_argument(format!(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor ModelServerConfig::model_platform, model name is {}",
            m.name
        )));
    }
    Ok(platform)
}

/// `ValidateNoModelsChangePlatforms`, between two model lists.
pub fn check_platforms_unchanged(
    old: &[pb::ModelConfig],
    new: &[pb::ModelConfig],
) -> Result<(), ServingError> {
    let mut before = std::collections::BTreeMap::new();
    for m in old {
        before.insert(m.name.as_str(), platform(m)?);
    }
    for m in new {
        if let Some(old_platform) = before.get(m.name.as_str()) {
            let new_platform = platform(m)?;
            if &new_platform != old_platform {
                return Err(ServingError::invalid_argument(format!(
                    "Illegal to change a model's platform. For model {} platform was {old_platform} and new platform requested is {new_platform}",
                    m.name
                )));
            }
        }
    }
    Ok(())
}

/// Checks that a worker can serve a configured model (the platform must be TensorFlow)
/// and returns what it is sent: the `ModelConfig` itself, whose version policy the
/// worker applies.
pub fn served_model(m: &pb::ModelConfig) -> Result<pb::ModelConfig, ServingError> {
    let platform = platform(m)?;
    if platform != TENSORFLOW_PLATFORM {
        return Err(ServingError::invalid_argument(format!(
            "Model {} requests unsupported platform {platform}",
            m.name
        )));
    }
    Ok(m.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> Vec<pb::ModelConfig> {
        model_list(&parse(text).unwrap()).unwrap().to_vec()
    }

    #[test]
    fn checks_models_like_server_core() {
        let ok = list(
            r#"model_config_list { config { name: "a" base_path: "/m/a" model_platform: "tensorflow"
               model_version_policy { specific { versions: 2 versions: 3 } } }
               config { name: "b" base_path: "/m/b" model_type: TENSORFLOW } }"#,
        );
        validate_list(&ok).unwrap();
        for store in ["gs://bucket/b", "s3://bucket/models/b"] {
            let remote = list(&format!(
                r#"model_config_list {{ config {{ name: "b" base_path: "{store}" model_platform: "tensorflow" }} }}"#
            ));
            validate_list(&remote).unwrap();
        }
        let hdfs = list(
            r#"model_config_list { config { name: "b" base_path: "hdfs://nn/b" model_platform: "tensorflow" } }"#,
        );
        assert_eq!(
            validate_list(&hdfs).unwrap_err().message,
            "model b: base_path hdfs://nn/b: file system scheme 'hdfs' is not supported (tfgate reads local paths, gs:// and s3://)"
        );
        assert_eq!(served_model(&ok[0]).unwrap(), ok[0]);
        assert_eq!(platform(&ok[1]).unwrap(), "tensorflow");

        let dup = list(
            r#"model_config_list { config { name: "a" base_path: "/x" } config { name: "a" base_path: "y" } }"#,
        );
        assert_eq!(
            validate_list(&dup).unwrap_err().message,
            "Illegal to list model a multiple times in config list"
        );
        let rel = list(r#"model_config_list { config { name: "a" base_path: "models/a" } }"#);
        assert_eq!(
            validate_list(&rel).unwrap_err().message,
            "Expected model a to have an absolute path or URI; got base_path()=models/a"
        );
        let neither = list(r#"model_config_list { config { name: "a" base_path: "/a" } }"#);
        assert_eq!(
            served_model(&neither[0]).unwrap_err().message,
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor ModelServerConfig::model_platform, model name is a"
        );
        let other = list(
            r#"model_config_list { config { name: "a" base_path: "/a" model_platform: "tflite" } }"#,
        );
        assert_eq!(
            served_model(&other[0]).unwrap_err().message,
            "Model a requests unsupported platform tflite"
        );
        assert_eq!(
            check_platforms_unchanged(&ok, &other).unwrap_err().message,
            "Illegal to change a model's platform. For model a platform was tensorflow and new platform requested is tflite"
        );
        let m = single_model("m", "/models/m");
        let m = &model_list(&m).unwrap()[0];
        assert_eq!(served_model(m).unwrap().model_version_policy, None);
    }
}
