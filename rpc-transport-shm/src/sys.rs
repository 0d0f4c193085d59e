//! Linux system calls: sealed memfd regions, eventfds and file descriptors passed over a Unix
//! socket (`SCM_RIGHTS`).

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use nix::fcntl::{fcntl, FcntlArg, OFlag, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;
use tokio::net::UnixStream;

use crate::mem::{Memory, PAGE};

/// Seals every region carries: its size can never change (a peer cannot truncate it under
/// our mapping and make us SIGBUS), and no one can add or remove seals later.
const SEALS: SealFlag = SealFlag::from_bits_truncate(
    SealFlag::F_SEAL_SHRINK.bits() | SealFlag::F_SEAL_GROW.bits() | SealFlag::F_SEAL_SEAL.bits(),
);

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A shared mapping of a sealed memfd.
#[derive(Debug)]
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value (unmapped only in Drop) and reached only through
// raw pointers under the `Memory` contract; sharing the owner between threads is sound.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

// SAFETY: `mmap` returned `len` bytes, page-aligned, mapped until Drop.
unsafe impl Memory for Region {
    fn base(&self) -> NonNull<u8> {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing references the mapping
        // any more (every user holds the Region alive through an Arc).
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

impl Region {
    /// A new zeroed region of `len` bytes (a multiple of the page size): memfd with
    /// `MFD_CLOEXEC`, sized, sealed against shrinking, growing and further sealing, mapped
    /// shared. Not pre-faulted: a page is allocated (zeroed) when first touched, so a session's
    /// resident memory grows with what its rings and arenas carry, up to `len`, and set-up
    /// costs microseconds instead of zeroing the whole region. Returns the mapping and the fd
    /// to send.
    pub(crate) fn create(len: usize) -> io::Result<(Region, OwnedFd)> {
        if len == 0 || len % PAGE != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "region size"));
        }
        let fd = memfd_create(
            c"rpc-shm",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(errno)?;
        let size = i64::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        nix::unistd::ftruncate(&fd, size).map_err(errno)?;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(SEALS)).map_err(errno)?;
        let region = Region::map(&fd, len)?;
        Ok((region, fd))
    }

    /// Maps a region the peer sent, after checking it is sealed against resizing and exactly
    /// `len` bytes long.
    pub(crate) fn open(fd: &OwnedFd, len: usize) -> io::Result<Region> {
        let seals = fcntl(fd, FcntlArg::F_GET_SEALS).map_err(errno)?;
        let seals = SealFlag::from_bits_truncate(seals);
        if !seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("peer region is not sealed against resizing (seals {seals:?})"),
            ));
        }
        let st = nix::sys::stat::fstat(fd).map_err(errno)?;
        if usize::try_from(st.st_size).ok() != Some(len) || len == 0 || len % PAGE != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("peer region is {} bytes, expected {len}", st.st_size),
            ));
        }
        Region::map(fd, len)
    }

    fn map(fd: &OwnedFd, len: usize) -> io::Result<Region> {
        let nz = NonZeroUsize::new(len).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh shared mapping chosen by the kernel (no address hint, so nothing of
        // ours is replaced); the file is sealed against shrinking, so every page stays backed
        // for the mapping's lifetime.
        let ptr = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .map_err(errno)?;
        Ok(Region {
            ptr: ptr.cast(),
            len,
        })
    }
}

/// A non-blocking eventfd (`EFD_CLOEXEC`).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(errno)?;
    Ok(OwnedFd::from(efd))
}

/// Checks an fd the peer sent is an eventfd and makes it non-blocking (a blocking fd would let
/// the peer stall our writes).
pub(crate) fn check_eventfd(fd: &OwnedFd) -> io::Result<()> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if link.as_os_str() != "anon_inode:[eventfd]" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer sent {link:?}, expected an eventfd"),
        ));
    }
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(errno)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(errno)?;
    Ok(())
}

/// Adds one to an eventfd (wakes its reader). A full counter (`EAGAIN`) already wakes it.
pub(crate) fn signal(fd: &impl AsFd) {
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

/// Resets an eventfd's counter; returns whether it was signalled.
pub(crate) fn drain(fd: &impl AsFd) -> bool {
    let mut b = [0u8; 8];
    matches!(nix::unistd::read(fd, &mut b), Ok(8))
}

/// Sends `bytes` with `fds` attached.
pub(crate) async fn send_with_fds(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[RawFd],
) -> io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        stream.writable().await?;
        let r = stream.try_io(Interest::WRITABLE, || {
            let iov = [io::IoSlice::new(&bytes[sent..])];
            let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !fds.is_empty() {
                &[ControlMessage::ScmRights(fds)]
            } else {
                &[]
            };
            sendmsg::<()>(
                stream.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(errno)
        });
        match r {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Receives exactly `buf.len()` bytes and the fds attached to them (at most `max_fds`; more,
/// or a truncated control message, is an error and every fd received is closed).
pub(crate) async fn recv_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<Vec<OwnedFd>> {
    let mut got = 0;
    let mut fds = Vec::new();
    let mut cmsg = vec![0u8; 256];
    while got < buf.len() {
        stream.readable().await?;
        let r = stream.try_io(Interest::READABLE, || {
            let mut iov = [io::IoSliceMut::new(&mut buf[got..])];
            let msg = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(errno)?;
            let mut received = Vec::new();
            for c in msg.cmsgs().map_err(errno)? {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    for fd in raw {
                        // SAFETY: the kernel just installed `fd` in our table for this message
                        // (SCM_RIGHTS); nothing else owns it, so we take ownership (and close
                        // it on every error path by dropping).
                        received.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
            let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
            Ok((msg.bytes, received, truncated))
        });
        match r {
            Ok((0, _, _)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok((n, received, truncated)) => {
                got += n;
                fds.extend(received);
                if truncated || fds.len() > max_fds {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "too many file descriptors from the peer",
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(fds)
}

/// A pidfd for the process at the other end of `stream` (`SO_PEERCRED`, then `pidfd_open`,
/// Linux ≥ 5.3): readable once that process exits, even if the socket stays open (inherited
/// by a child). `None` where unavailable.
pub(crate) fn peer_pidfd(stream: &UnixStream) -> Option<OwnedFd> {
    let pid = u32::try_from(stream.peer_cred().ok()?.pid()?).ok()?;
    pidfd(pid)
}

/// A pidfd for process `pid` (`pidfd_open`, Linux ≥ 5.3): readable once it exits. `None`
/// where unavailable or for no such process.
pub(crate) fn pidfd(pid: u32) -> Option<OwnedFd> {
    let pid = nix::libc::pid_t::try_from(pid).ok().filter(|p| *p > 0)?;
    // SAFETY: a plain syscall with integer arguments; on success it returns a new descriptor
    // nobody else owns.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned by pidfd_open and is owned by no one else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}
