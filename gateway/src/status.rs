//! `GetModelStatus`: the versions of a model and their states, from the servable table
//! (`model_servers/get_model_status_impl.cc`).

use crate::error::ServingError;
use crate::servables::Servables;
use tfgate_proto::tensorflow::serving::{
    model_version_status::State, GetModelStatusResponse, ModelVersionStatus, StatusProto,
};

/// Status of every version of `name`, or of one version.
pub fn model_status(
    servables: &Servables,
    name: &str,
    version: Option<i64>,
) -> Result<GetModelStatusResponse, ServingError> {
    let versions = servables
        .versions(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ServingError::not_found(format!("Could not find any versions of model {name}"))
        })?;
    let selected: Vec<_> = match version {
        Some(v) => vec![(
            v,
            versions.get(&v).cloned().ok_or_else(|| {
                ServingError::not_found(format!("Could not find version {v} of model {name}"))
            })?,
        )],
        None => versions.into_iter().rev().collect(),
    };
    Ok(GetModelStatusResponse {
        model_version_status: selected
            .into_iter()
            .map(|(v, s)| {
                let (error_code, error_message) = match s.error {
                    Some(e) => (e.code.canonical(), e.message),
                    None => (0, String::new()),
                };
                ModelVersionStatus {
                    version: v,
                    state: s.state as i32,
                    status: Some(StatusProto {
                        error_code,
                        error_message,
                    }),
                }
            })
            .collect(),
    })
}

/// A state's name as TF Serving prints it (`AVAILABLE`).
pub fn state_name(s: State) -> &'static str {
    s.as_str_name()
}
