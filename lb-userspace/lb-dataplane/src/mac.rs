//! MAC addresses as people write them.

use std::{fmt, str::FromStr};

/// A MAC address written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)"
            ));
        }
        let mut mac = [0u8; 6];
        for (m, p) in mac.iter_mut().zip(parts) {
            *m = u8::from_str_radix(p, 16)
                .map_err(|_| format!("{s:?} is not a MAC address (bad byte {p:?})"))?;
        }
        Ok(Self(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}
