//! lb-api's wire enums to the data plane's values and back. The API names a protocol,
//! algorithm and mode by enum; the maps hold numbers and `lb_common`'s enums.

use lb_api::types::{Algorithm, Mode, Protocol};
use lb_common::{Algorithm as DpAlgorithm, ForwardMode, IPPROTO_UDP};

pub fn protocol(p: u8) -> Protocol {
    if p == IPPROTO_UDP {
        Protocol::Udp
    } else {
        Protocol::Tcp
    }
}

// The way back is the config's parsers (VipInput); kept to test the round trip.
#[cfg(test)]
pub fn ip_protocol(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => lb_common::IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
    }
}

pub fn algorithm(a: DpAlgorithm) -> Algorithm {
    match a {
        DpAlgorithm::Maglev => Algorithm::Maglev,
        DpAlgorithm::IpHash => Algorithm::IpHash,
        DpAlgorithm::WeightedRoundRobin => Algorithm::WeightedRoundRobin,
        DpAlgorithm::LeastConnections => Algorithm::LeastConnections,
    }
}

// The way back is the config's parsers (VipInput); kept to test the round trip.
#[cfg(test)]
pub fn dataplane_algorithm(a: Algorithm) -> DpAlgorithm {
    match a {
        Algorithm::Maglev => DpAlgorithm::Maglev,
        Algorithm::IpHash => DpAlgorithm::IpHash,
        Algorithm::WeightedRoundRobin => DpAlgorithm::WeightedRoundRobin,
        Algorithm::LeastConnections => DpAlgorithm::LeastConnections,
    }
}

pub fn mode(m: ForwardMode) -> Mode {
    match m {
        ForwardMode::DsrL2 => Mode::DsrL2,
        ForwardMode::Ipip => Mode::Ipip,
    }
}

// The way back is the config's parsers (VipInput); kept to test the round trip.
#[cfg(test)]
pub fn forward_mode(m: Mode) -> ForwardMode {
    match m {
        Mode::DsrL2 => ForwardMode::DsrL2,
        Mode::Ipip => ForwardMode::Ipip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_goes_there_and_back() {
        for a in Algorithm::ALL {
            assert_eq!(algorithm(dataplane_algorithm(*a)), *a);
            // The config file spells them the same way.
            assert_eq!(
                lb_config::parse_algorithm(a.name()),
                Ok(dataplane_algorithm(*a))
            );
        }
        for m in Mode::ALL {
            assert_eq!(mode(forward_mode(*m)), *m);
            assert_eq!(lb_config::parse_mode(m.name()), Ok(forward_mode(*m)));
        }
        for p in Protocol::ALL {
            assert_eq!(protocol(ip_protocol(*p)), *p);
            assert_eq!(lb_config::parse_protocol(p.name()), Ok(ip_protocol(*p)));
        }
    }
}
