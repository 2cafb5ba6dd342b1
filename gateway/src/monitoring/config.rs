//! `--monitoring_config_file`: TF Serving's `MonitoringConfig` in text format. With
//! `prometheus_config { enable: true }` the metrics page is served on the REST port, at
//! `path` or TF Serving's default.

use crate::error::ServingError;
use tfgate_proto::tensorflow::serving::MonitoringConfig;

/// TF Serving's `PrometheusExporter::kPrometheusPath`.
pub const DEFAULT_PATH: &str = "/monitoring/prometheus/metrics";

/// The REST path of the metrics page, if the config enables it (`None` without a file).
pub fn prometheus_path(file: &str) -> Result<Option<String>, ServingError> {
    if file.is_empty() {
        return Ok(None);
    }
    let config: MonitoringConfig =
        crate::text_format::read_file(file, "tensorflow.serving.MonitoringConfig")?;
    Ok(path_of(config))
}

/// The metrics page's path a config asks for, if it enables the page.
pub fn path_of(config: MonitoringConfig) -> Option<String> {
    config
        .prometheus_config
        .filter(|p| p.enable)
        .map(|p| match p.path.as_str() {
            "" => DEFAULT_PATH.to_string(),
            path => path.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_for(text: &str) -> Option<String> {
        let dir = std::env::temp_dir().join(format!("tfgate-monitoring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.config", text.len()));
        std::fs::write(&file, text).unwrap();
        prometheus_path(file.to_str().unwrap()).unwrap()
    }

    #[test]
    fn enabled_at_tf_servings_path_or_the_given_one() {
        assert_eq!(prometheus_path("").unwrap(), None);
        assert_eq!(
            path_for("prometheus_config { enable: true }").as_deref(),
            Some(DEFAULT_PATH)
        );
        assert_eq!(
            path_for("prometheus_config { enable: true, path: \"/m\" }").as_deref(),
            Some("/m")
        );
        assert_eq!(path_for("prometheus_config { path: \"/m\" }"), None);
        assert!(prometheus_path("/nonexistent/monitoring.config").is_err());
    }
}
