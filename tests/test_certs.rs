//! `tfgate-test-certs DIR`: writes a fresh test PKI (CA, server and client certificates)
//! into DIR for the TLS tests; see `tfgate_e2e::write_test_certs`.

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: tfgate-test-certs DIR");
        std::process::exit(2);
    };
    if let Err(e) = tfgate_e2e::write_test_certs(std::path::Path::new(&dir)) {
        eprintln!("tfgate-test-certs: {e}");
        std::process::exit(1);
    }
}
