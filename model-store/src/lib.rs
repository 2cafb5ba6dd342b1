//! Remote model stores for tfgate: `gs://` and `s3://` base paths and config files.
//!
//! TensorFlow 2.21 reads `gs://` itself and `s3://` not at all (TF Serving lost it at
//! 2.7). tfgate reads neither through TensorFlow: the gateway mirrors each remote base
//! path into a local cache ([`Mirror`]) and hands the workers the cache's directory, so
//! the workers' Source, Loader and Manager stay those of a local base path.

pub mod fetch;
pub mod mirror;
pub mod remote_path;
pub mod store;

pub use mirror::{Event, Mirror, MirrorConfig, NotFetched, VersionPolicy};
pub use remote_path::{parse, RemotePath, Scheme};
pub use store::Env;
