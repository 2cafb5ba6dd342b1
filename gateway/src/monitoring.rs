//! TF Serving's monitoring registry, as far as clients reach it through the API:
//! `ReloadConfigRequest.metric_names` asks for int64 values before and after a reload.

/// The current value of each named int64 metric, 0 for one the server does not export
/// (TF Serving's `ModelServiceImpl::GetMetrics`). tfgate exports no int64 series under
/// TF Serving's monitoring names yet, so every value is 0 until the metrics registry
/// lands.
pub fn int64_values(names: &[String]) -> Vec<(String, i64)> {
    names.iter().map(|name| (name.clone(), 0)).collect()
}
