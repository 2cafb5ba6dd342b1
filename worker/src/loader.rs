//! The Loader: turns a version directory into a servable — a loaded SavedModel with its
//! signatures resolved to graph tensors.

use crate::run_mode::RunModes;
use crate::tf::{SavedModel, TensorRef, TfError};
use prost::Message;
use std::collections::BTreeMap;
use tfgate_proto::control::SessionConfig;
use tfgate_proto::tensorflow::serving::SignatureDefMap;

/// A signature's tensor: where it lives in the graph.
#[derive(Clone, Debug)]
pub struct SignatureTensor {
    pub tensor: TensorRef,
}

/// A signature with every TensorInfo resolved.
#[derive(Clone, Debug, Default)]
pub struct Signature {
    pub inputs: BTreeMap<String, SignatureTensor>,
    pub outputs: BTreeMap<String, SignatureTensor>,
}

/// One loaded model version.
pub struct Servable {
    pub version: i64,
    pub model: SavedModel,
    pub signatures: BTreeMap<String, Signature>,
    /// Serialized `SignatureDefMap`, reported to the gateway.
    pub signature_defs: Vec<u8>,
    /// Whether runs go inline or to the inter-op pool, learned per signature and size.
    pub run_modes: RunModes,
}

impl Servable {
    /// Loads `path` as model version `version`.
    pub fn load(version: i64, path: &str, session: &SessionConfig) -> Result<Servable, TfError> {
        let tags = if session.tags.is_empty() {
            vec!["serve".to_string()]
        } else {
            session.tags.clone()
        };
        let model = SavedModel::load(path, &tags, &session.config_proto).map_err(|e| {
            match crate::op_libraries::explain_load_error(&e.message) {
                Some(message) => TfError::new(e.code, message),
                None => e,
            }
        })?;
        let defs = model.meta_graph_def.signature_def.clone();
        let mut signatures = BTreeMap::new();
        for (key, def) in &defs {
            let resolve = |map: &BTreeMap<String, tfgate_proto::tensorflow::TensorInfo>| {
                map.iter()
                    .map(|(alias, info)| {
                        let name = match &info.encoding {
                            Some(tfgate_proto::tensorflow::tensor_info::Encoding::Name(n)) => {
                                n.clone()
                            }
                            _ => {
                                return Err(TfError::internal(format!(
                                    "signature {key}: tensor {alias} is not a dense tensor"
                                )))
                            }
                        };
                        Ok((
                            alias.clone(),
                            SignatureTensor {
                                tensor: model.tensor(&name)?,
                            },
                        ))
                    })
                    .collect::<Result<BTreeMap<_, _>, TfError>>()
            };
            // A signature that does not resolve is skipped, not fatal (TF Serving would
            // fail only when it is used).
            if let (Ok(inputs), Ok(outputs)) = (resolve(&def.inputs), resolve(&def.outputs)) {
                signatures.insert(key.clone(), Signature { inputs, outputs });
            }
        }
        let signature_defs = SignatureDefMap {
            signature_def: defs,
        }
        .encode_to_vec();
        // A session configured to run every op on the caller has no pool to choose.
        let session_inline =
            tfgate_proto::tensorflow::ConfigProto::decode(session.config_proto.as_slice())
                .is_ok_and(|c| c.inter_op_parallelism_threads < 0);
        Ok(Servable {
            version,
            model,
            signatures,
            signature_defs,
            run_modes: RunModes::new(session_inline),
        })
    }
}
