//! tfgate's own split of a request's latency (`:tfgate:request:phase_latency`, one
//! histogram per phase, on the Prometheus page the monitoring config turns on): read
//! before and after a row, its `_sum` and `_count` give that row's mean time in a phase.
//! `--shapes` uses `batch_formation` (forming the batch and its frame in the request
//! arena, up to the push into the request ring; for an input in a V2 shared-memory
//! region, the kernel's read of it straight into the arena) to tell how fast a request's
//! bytes reach the memory TensorFlow reads.

/// Where `--monitoring_config_file`'s default config serves the page.
pub const PAGE: &str = "/monitoring/prometheus/metrics";

/// The monitoring config that turns the page on.
pub const CONFIG: &str = "prometheus_config { enable: true }\n";

/// The `_sum` (µs) and `_count` of `phase` for `model` on a page, over its versions and
/// signatures.
pub fn totals(page: &str, model: &str, phase: &str) -> (f64, f64) {
    let model = format!("model_name=\"{model}\"");
    let phase = format!("phase=\"{phase}\"");
    let (mut sum, mut count) = (0.0, 0.0);
    for line in page.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !series.contains(&model) || !series.contains(&phase) {
            continue;
        }
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        if series.starts_with(":tfgate:request:phase_latency_sum{") {
            sum += value;
        } else if series.starts_with(":tfgate:request:phase_latency_count{") {
            count += value;
        }
    }
    (sum, count)
}

/// `totals` of tfgate's page on `port` now; `None` if the page cannot be read.
pub fn scrape(port: u16, model: &str, phase: &str) -> Option<(f64, f64)> {
    match tfgate_e2e::http(port, "GET", PAGE, "") {
        Ok((200, page)) => Some(totals(&page, model, phase)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_counts_one_models_phase() {
        let page = "\
# TYPE :tfgate:request:phase_latency histogram
:tfgate:request:phase_latency_bucket{model_name=\"identity\",version=\"1\",signature=\"serving_default\",phase=\"batch_formation\",le=\"10\"} 3
:tfgate:request:phase_latency_sum{model_name=\"identity\",version=\"1\",signature=\"serving_default\",phase=\"batch_formation\"} 120.5
:tfgate:request:phase_latency_count{model_name=\"identity\",version=\"1\",signature=\"serving_default\",phase=\"batch_formation\"} 4
:tfgate:request:phase_latency_sum{model_name=\"identity\",version=\"1\",signature=\"serving_default\",phase=\"transfer\"} 99
:tfgate:request:phase_latency_sum{model_name=\"image\",version=\"1\",signature=\"serving_default\",phase=\"batch_formation\"} 7
";
        assert_eq!(totals(page, "identity", "batch_formation"), (120.5, 4.0));
        assert_eq!(totals(page, "image", "batch_formation"), (7.0, 0.0));
        assert_eq!(totals(page, "sequence", "batch_formation"), (0.0, 0.0));
    }
}
