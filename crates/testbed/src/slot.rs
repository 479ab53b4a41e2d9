//! Parallel instances: each claims a numbered slot with an exclusive `flock`
//! (released by the kernel even if the process dies) and gets its own block of
//! loopback addresses 127.77.<slot>.0/24, so ports never collide.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::error::{io, Error, Result};

const SLOTS: u16 = 250;
pub(crate) const SIP_PORT: u16 = 5060;
pub(crate) const AMI_PORT: u16 = 5038;

#[derive(Debug)]
pub(crate) struct Slot {
    pub number: u8,
    _lock: File,
}

impl Slot {
    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 77, self.number, host)
    }
    pub fn pbx_ip(&self) -> Ipv4Addr {
        self.ip(1)
    }
    pub fn carrier_ip(&self) -> Ipv4Addr {
        self.ip(2)
    }
    /// Phone 10x sits on 127.77.<slot>.1x.
    pub fn phone_ip(&self, ext: u16) -> Ipv4Addr {
        self.ip(10 + (ext - 100) as u8)
    }
}

fn lock_dir() -> PathBuf {
    std::env::var_os("RINGLINK_TESTBED_LOCK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ringlink/testbed/slots"))
}

/// Claims the first free slot, starting from one derived from the process id
/// so that parallel test processes rarely race for the same lock.
pub(crate) fn claim() -> Result<Slot> {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let start = (std::process::id() % u32::from(SLOTS)) as u16;
    for i in 0..SLOTS {
        let number = ((start + i) % SLOTS + 1) as u8;
        let path = dir.join(format!("slot-{number}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        // SAFETY: flock on a valid open descriptor has no memory effects.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            continue;
        }
        let slot = Slot { number, _lock: file };
        if addresses_free(&slot) {
            return Ok(slot);
        }
    }
    Err(Error::NoFreeSlot(SLOTS))
}

/// Something outside the test bed may hold one of the slot's addresses.
fn addresses_free(slot: &Slot) -> bool {
    let tcp = TcpListener::bind(SocketAddr::from((slot.pbx_ip(), AMI_PORT))).is_ok();
    let udp = [slot.pbx_ip(), slot.carrier_ip(), slot.phone_ip(101)]
        .into_iter()
        .all(|ip| UdpSocket::bind(SocketAddr::from((ip, SIP_PORT))).is_ok());
    tcp && udp
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn fake_slot(number: u8) -> Slot {
        let file = tempfile_for_test();
        Slot { number, _lock: file }
    }

    fn tempfile_for_test() -> File {
        let path = std::env::temp_dir().join(format!("ringlink-testbed-unit-{}", std::process::id()));
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap()
    }

    #[test]
    fn addresses_follow_the_slot_plan() {
        let slot = fake_slot(7);
        assert_eq!(slot.pbx_ip().to_string(), "127.77.7.1");
        assert_eq!(slot.carrier_ip().to_string(), "127.77.7.2");
        assert_eq!(slot.phone_ip(101).to_string(), "127.77.7.11");
        assert_eq!(slot.phone_ip(105).to_string(), "127.77.7.15");
    }
}
