//! Monitoring: TF Serving's Prometheus series (`series`), tfgate's own (`own_series`), and
//! the page that shows them on the REST port when `--monitoring_config_file` asks for
//! it (`config`). Series are recorded through the `metrics` facade into one
//! `metrics-exporter-prometheus` recorder per process; histograms get TF Serving's
//! bucket boundaries.

pub mod config;
mod handles;
pub mod own_series;
pub mod series;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls do nothing). Until then, and in
/// unit tests, recording is a no-op.
pub fn install() -> anyhow::Result<()> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in series::histograms()
        .into_iter()
        .chain(own_series::histograms())
    {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.into()), &buckets)?;
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    let _ = HANDLE.set(handle);
    Ok(())
}

/// The Prometheus text page: every series recorded so far (sample the gauges first).
pub fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// TF Serving's Prometheus name for a monitoring name: each character outside
/// `[a-zA-Z0-9_]` becomes `:` (`/tensorflow/serving/request_count` →
/// `:tensorflow:serving:request_count`), and one starting with a digit gets a `_`.
pub fn prometheus_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                ':'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The current value of each named metric (TF's monitoring name) as an int64: the first
/// point of a counter or gauge, 0 for one that does not exist or has no point
/// (`ModelServiceImpl::GetMetrics`, for `ReloadConfigRequest.metric_names`).
pub fn int64_values(names: &[String]) -> Vec<(String, i64)> {
    let page = render();
    names
        .iter()
        .map(|name| (name.clone(), first_point(&page, &prometheus_name(name))))
        .collect()
}

/// The value of the first sample line of `metric` on a Prometheus page.
fn first_point(page: &str, metric: &str) -> i64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(metric)?;
            let value = if rest.starts_with('{') {
                rest.rsplit_once("} ")?.1
            } else {
                rest.strip_prefix(' ')?
            };
            value.trim().parse::<f64>().ok()
        })
        .map_or(0, |v| v as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_tf_serving_writes_them() {
        assert_eq!(
            prometheus_name("/tensorflow/serving/request_count"),
            ":tensorflow:serving:request_count"
        );
        assert_eq!(prometheus_name("9lives/x-y"), "_9lives:x:y");
    }

    #[test]
    fn reads_the_first_point_of_a_metric() {
        let page = "# TYPE :a:b counter\n:a:bc{x=\"1\"} 9\n:a:b{model_name=\"m\",status=\"OK\"} 3\n:a:b{model_name=\"n\",status=\"OK\"} 4\n# TYPE :c gauge\n:c 2.5\n";
        assert_eq!(first_point(page, ":a:b"), 3);
        assert_eq!(first_point(page, ":c"), 2);
        assert_eq!(first_point(page, ":missing"), 0);
    }
}
