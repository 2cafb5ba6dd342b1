//! Compiles the FileDescriptorSet that `scripts/setup.sh` writes from the official
//! `tensorflow-serving-api` and `tensorflow-cpu` wheels (no .proto file lives in git).

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=TFGATE_PROTO_DESCRIPTORS");
    let path = PathBuf::from(
        std::env::var("TFGATE_PROTO_DESCRIPTORS")
            .map_err(|_| "TFGATE_PROTO_DESCRIPTORS is not set: build from the repository root")?,
    );
    println!("cargo:rerun-if-changed={}", path.display());
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "cannot read {}: {e}; run scripts/setup.sh first",
            path.display()
        )
    })?;
    let fds = prost_types::FileDescriptorSet::decode(bytes.as_slice())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Sorted maps: signature inputs/outputs and response outputs iterate in a stable order.
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
