//! Passing the segment's memfd (and its doorbell) over the gateway↔worker Unix socket (`SCM_RIGHTS`).
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

/// Most fds one message carries.
const MAX_FDS: usize = 4;

/// Sends `fd` plus `payload` (at least one byte) over `socket`.
pub fn send_fd(socket: impl AsFd, fd: BorrowedFd<'_>, payload: &[u8]) -> io::Result<()> {
    send_fds(socket, &[fd], payload)
}

/// Sends up to four `fds` plus `payload` (at least one byte) over `socket`, in order.
pub fn send_fds(socket: impl AsFd, fds: &[BorrowedFd<'_>], payload: &[u8]) -> io::Result<()> {
    if payload.is_empty() || fds.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "send_fds needs a non-empty payload and one to four fds",
        ));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
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
    let (n, fds) = recv_fds(socket, buf)?;
    Ok((n, fds.into_iter().next()))
}

/// Receives up to `buf.len()` payload bytes and the fds sent with them (close-on-exec),
/// in the order they were sent. Truncated control data is an error (fds would be lost).
pub fn recv_fds(socket: impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    // Room for more fds than a sender may send, so that a peer sending more cannot make
    // us truncate silently.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS + 4))];
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
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control message truncated",
        ));
    }
    Ok((msg.bytes, fds))
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
        // Two at once arrive in order.
        let (ringer, chime) = crate::doorbell().unwrap();
        send_fds(&a, &[f.as_fd(), ringer.as_fd()], b"two").unwrap();
        let mut buf3 = [0u8; 3];
        let (n, fds) = recv_fds(&b, &mut buf3).unwrap();
        assert_eq!((n, fds.len()), (3, 2));
        let received = crate::Ringer::from_fd(fds.into_iter().nth(1).unwrap());
        received.ring();
        assert!(chime.clear(), "the ringer sent rings the chime kept");
        drop(a);
        let (n, fd) = recv_fd(&b, &mut buf).unwrap();
        assert_eq!((n, fd.is_none()), (0, true));
    }
}
