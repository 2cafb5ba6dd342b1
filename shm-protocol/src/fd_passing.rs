//! Passing the segment's memfd over the gateway↔worker Unix socket (`SCM_RIGHTS`).
//!
//! Works on any connected `AF_UNIX` stream or seqpacket socket, e.g.
//! `std::os::unix::net::UnixStream` (and tokio's, through `AsFd`). The fd travels with
//! the first byte of `payload`; on a stream socket keep the payload small and let the
//! receiver read exactly that many bytes with `recv_fd` (the ancillary data is attached to
//! the first byte, so a receiver that reads it with a plain `read` loses the fd).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// Sends `fd` plus `payload` (at least one byte) over `socket`.
pub fn send_fd(socket: impl AsFd, fd: BorrowedFd<'_>, payload: &[u8]) -> io::Result<()> {
    if payload.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "send_fd needs a non-empty payload",
        ));
    }
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("control buffer too small"));
    }
    let mut sent = loop {
        match sendmsg(
            &socket,
            &[IoSlice::new(payload)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    // The fd went with the first chunk; send the rest of the payload plainly.
    while sent < payload.len() {
        match rustix::net::send(&socket, &payload[sent..], SendFlags::NOSIGNAL) {
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Receives up to `buf.len()` payload bytes and the fd sent with them (close-on-exec).
///
/// Returns the byte count (0 at EOF) and the fd, if one arrived. Extra fds are closed.
/// Truncated control data is an error (the fd would be lost).
pub fn recv_fd(socket: impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    // Room for a few fds, so that a peer sending more cannot make us truncate silently.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match recvmsg(
            &socket,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(m) => break m,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fd = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for f in fds {
                if fd.is_none() {
                    fd = Some(f);
                } // Further fds are dropped, i.e. closed.
            }
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control message truncated",
        ));
    }
    Ok((msg.bytes, fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn passes_an_fd() {
        let (a, b) = UnixStream::pair().unwrap();
        let memfd = memfd::MemfdOptions::new().create("t").unwrap();
        let mut f = memfd.into_file();
        f.write_all(b"shared!").unwrap();
        send_fd(&a, f.as_fd(), b"gen=7").unwrap();
        let mut buf = [0u8; 5];
        let (n, fd) = recv_fd(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"gen=7");
        let mut g = std::fs::File::from(fd.unwrap());
        g.rewind().unwrap();
        let mut s = String::new();
        g.read_to_string(&mut s).unwrap();
        assert_eq!(s, "shared!");
        assert!(send_fd(&a, f.as_fd(), b"").is_err());
        drop(a);
        let (n, fd) = recv_fd(&b, &mut buf).unwrap();
        assert_eq!((n, fd.is_none()), (0, true));
    }
}
