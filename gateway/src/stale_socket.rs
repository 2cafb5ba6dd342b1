//! A Unix socket path the gateway binds (`--grpc_socket_path`, `--worker_socket`): a
//! socket left behind is replaced; anything else at the path — a regular file, a
//! directory, a link — is left alone and the server refuses to start, saying what is
//! there. Whether a socket someone still listens on counts as left behind is the
//! caller's choice ([`Live`]).

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// What to do with a socket at the path that still accepts connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    /// Replace it, as gRPC C++ (so TF Serving) does for `--grpc_socket_path`: its own
    /// test suite starts servers on one socket path while earlier ones still run.
    Replace,
    /// Refuse to start: two servers must not share it.
    Refuse,
}

/// Clears `path` for a fresh bind: nothing there, or a socket (removed; a live one only
/// with [`Live::Replace`]). `flag` names the setting in the error.
pub fn clear_for_bind(flag: &str, path: &Path, live: Live) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{flag}={}: {e}", path.display())),
    };
    let kind = meta.file_type();
    if !kind.is_socket() {
        let what = if kind.is_file() {
            "a regular file"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_symlink() {
            "a symbolic link"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else {
            "something that is not a socket"
        };
        return Err(format!(
            "{flag}={}: {what} is there, not a socket; not replacing it",
            path.display()
        ));
    }
    if live == Live::Refuse && std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(format!(
            "{flag}={}: another process is listening on this socket",
            path.display()
        ));
    }
    std::fs::remove_file(path).map_err(|e| {
        format!(
            "{flag}={}: cannot remove the stale socket: {e}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tfgate-stale-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn replaces_only_a_stale_socket() {
        let d = dir("unit");
        let path = d.join("s");
        assert_eq!(
            clear_for_bind("--x", &path, Live::Refuse),
            Ok(()),
            "nothing there"
        );

        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert_eq!(clear_for_bind("--x", &path, Live::Refuse), Ok(()));
        assert!(!path.exists(), "the stale socket is gone");

        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(
            clear_for_bind("--x", &path, Live::Refuse).unwrap_err(),
            format!(
                "--x={}: another process is listening on this socket",
                path.display()
            )
        );
        assert_eq!(clear_for_bind("--x", &path, Live::Replace), Ok(()));
        assert!(!path.exists(), "replaced as gRPC C++ does");
        drop(live);

        std::fs::write(&path, b"precious").unwrap();
        assert_eq!(
            clear_for_bind("--x", &path, Live::Refuse).unwrap_err(),
            format!(
                "--x={}: a regular file is there, not a socket; not replacing it",
                path.display()
            )
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        std::fs::remove_file(&path).unwrap();

        std::fs::create_dir(&path).unwrap();
        assert!(clear_for_bind("--x", &path, Live::Refuse)
            .unwrap_err()
            .contains("a directory is there"));
        std::os::unix::fs::symlink(&path, d.join("l")).unwrap();
        assert!(clear_for_bind("--x", &d.join("l"), Live::Refuse)
            .unwrap_err()
            .contains("a symbolic link is there"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
