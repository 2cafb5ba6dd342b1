//! Compiles the FileDescriptorSet that `scripts/setup.sh` writes from the official
//! `tensorflow-serving-api`, `tensorflow-cpu` and `tritonclient` (KServe V2) wheels, plus tfgate's own `.proto`
//! files under `tfgate/` (messages TF Serving reads that the wheels do not ship),
//! compiled with `protox`. The merged set is written to OUT_DIR for reflection.

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
    let mut fds = prost_types::FileDescriptorSet::decode(bytes.as_slice())?;
    println!("cargo:rerun-if-changed=tfgate");
    let own: Vec<String> = std::fs::read_dir("tfgate")?
        .filter_map(|e| e.ok())
        .map(|e| format!("tfgate/{}", e.file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".proto"))
        .collect();
    // tfgate's files import the wheels' (TF Serving's ModelConfig, StatusProto, ...).
    let mut resolver = protox::file::ChainFileResolver::new();
    resolver.add(protox::file::IncludeFileResolver::new(".".into()));
    resolver.add(protox::file::DescriptorSetFileResolver::new(fds.clone()));
    resolver.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.open_files(&own)?;
    for file in compiler.file_descriptor_set().file {
        if !fds.file.iter().any(|f| f.name == file.name) {
            fds.file.push(file);
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptors.binpb"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // V2 defines calls tfgate does not serve: they answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        // Sorted maps: signature inputs/outputs and response outputs iterate in a stable order.
        .btree_map(".")
        // A received tensor_content is a slice of the received message, not a copy: it is
        // copied once, into shared memory.
        .bytes(".tensorflow.TensorProto.tensor_content")
        // Likewise V2's raw tensors, in and out.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_fds(fds)?;
    Ok(())
}
