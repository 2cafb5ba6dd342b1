//! The `tfgate` binary: everything is in the library (`lib.rs`); only the allocator is
//! chosen here, so that the fuzz targets linking the library keep the system one (which
//! AddressSanitizer replaces).
#![forbid(unsafe_code)]

/// mimalloc: the request path allocates and frees small buffers on every tokio thread;
/// glibc's allocator spent a quarter of the gateway's CPU on them under load, much of it
/// contending for its arena locks (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tfgate::main()
}
