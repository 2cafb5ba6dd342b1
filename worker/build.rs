//! Gives the worker's binaries (tests included) an rpath to libtensorflow: beside the
//! binary (`$ORIGIN`, `$ORIGIN/lib`, for deployment) and the project's `.libtensorflow/lib`
//! (set by .cargo/config.toml), so nothing needs LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rerun-if-env-changed=TFGATE_TF_LIB_DIR");
    let mut rpath = String::from("$ORIGIN:$ORIGIN/lib");
    if let Ok(dir) = std::env::var("TFGATE_TF_LIB_DIR") {
        rpath.push(':');
        rpath.push_str(&dir);
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{rpath}");
}
