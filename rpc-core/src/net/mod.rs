//! Addresses and sockets shared by every transport: [`Address`] (`tcp://`, `unix://`,
//! `shm://`) and [`Io`], a connected socket of any kind that a client connects with
//! [`Io::connect`] and a [`Listener`](crate::serve::Listener) hands to a protocol.

mod address;
mod io;

pub use address::{Address, AddressError};
pub use io::{AsyncIo, CloseHandle, Io, IoGuard, IoStream, ReadHalf, WriteHalf};
