//! The cluster's range of service addresses. A service's virtual IP is the range's address at
//! the service's [`address_index`](shoal_scheduler::Service::address_index), which the state
//! machine gives it at creation (the lowest free one), so every agent derives the same address
//! without asking, and an address comes free when its service is removed.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The range every service's virtual IP comes from unless the agent is told otherwise: private
/// (10/8) and out of the way of Docker's default pools (172.17/16 and up, 192.168/16).
pub const DEFAULT_RANGE: &str = "10.254.0.0/16";

/// Why a range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressRangeError {
    /// Not `A.B.C.D/N`.
    #[error("{0:?} is not an IPv4 range like 10.254.0.0/16")]
    Syntax(String),
    /// Too small to be of use, or host bits set.
    #[error("{0}: give a range of /8 to /24 with no host bits set, like 10.254.0.0/16")]
    Shape(String),
}

/// An IPv4 range of service addresses (`10.254.0.0/16`). The first address (the network's) is
/// never handed out: offset 0 is `base + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    base: Ipv4Addr,
    prefix: u8,
}

impl AddressRange {
    /// How many services can hold an address at once.
    pub fn capacity(&self) -> u32 {
        // The network address and the broadcast address are left out.
        (1u32 << (32 - self.prefix)) - 2
    }

    /// The address at `index`, if the range is that large.
    pub fn address(&self, index: u32) -> Option<Ipv4Addr> {
        (index < self.capacity()).then(|| Ipv4Addr::from(u32::from(self.base) + 1 + index))
    }

    /// The offset of `address`, if it is one of the range's.
    pub fn index(&self, address: Ipv4Addr) -> Option<u32> {
        let offset = u32::from(address).checked_sub(u32::from(self.base) + 1)?;
        (offset < self.capacity()).then_some(offset)
    }

    /// The network address.
    pub fn base(&self) -> Ipv4Addr {
        self.base
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl Default for AddressRange {
    fn default() -> Self {
        DEFAULT_RANGE.parse().unwrap_or(AddressRange {
            base: Ipv4Addr::new(10, 254, 0, 0),
            prefix: 16,
        })
    }
}

impl FromStr for AddressRange {
    type Err = AddressRangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || AddressRangeError::Syntax(text.to_owned());
        let (ip, prefix) = text.trim().split_once('/').ok_or_else(syntax)?;
        let base: Ipv4Addr = ip.parse().map_err(|_| syntax())?;
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        if !(8..=24).contains(&prefix) {
            return Err(AddressRangeError::Shape(text.to_owned()));
        }
        let host_bits = u32::MAX >> prefix;
        if u32::from(base) & host_bits != 0 {
            return Err(AddressRangeError::Shape(text.to_owned()));
        }
        Ok(AddressRange { base, prefix })
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_addresses_map_both_ways_within_the_range() {
        let range: AddressRange = "10.254.0.0/16".parse().expect("range");
        assert_eq!(range.capacity(), 65_534);
        assert_eq!(range.address(0), Some(Ipv4Addr::new(10, 254, 0, 1)));
        assert_eq!(range.address(300), Some(Ipv4Addr::new(10, 254, 1, 45)));
        assert_eq!(
            range.address(65_533),
            Some(Ipv4Addr::new(10, 254, 255, 254))
        );
        assert_eq!(
            range.address(65_534),
            None,
            "the broadcast address is not handed out"
        );
        for index in [0, 1, 255, 256, 65_533] {
            let address = range.address(index).expect("in range");
            assert_eq!(range.index(address), Some(index));
        }
        assert_eq!(range.index(Ipv4Addr::new(10, 254, 0, 0)), None);
        assert_eq!(range.index(Ipv4Addr::new(10, 255, 0, 1)), None);
        assert_eq!(range.to_string(), "10.254.0.0/16");
    }

    #[test]
    fn bad_ranges_are_refused_with_what_to_give() {
        for bad in [
            "10.254.0.0",
            "10.254.0.0/x",
            "ten/16",
            "10.254.0.1/16",
            "10.0.0.0/30",
            "10.0.0.0/4",
        ] {
            let refused = bad.parse::<AddressRange>().expect_err(bad);
            assert!(refused.to_string().contains("10.254.0.0/16"), "{refused}");
        }
    }
}
