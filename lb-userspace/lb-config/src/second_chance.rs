//! `second_chance` and `second_chance_window_s` of a VIP (docs/dataplane.md, "Second chance").

use std::time::Duration;

use lb_common::{Algorithm, ForwardMode};
use lb_dataplane::SecondChance;

/// Window when `second_chance = true` names none: long enough for a balancer restart and
/// a backend change to settle, short enough that stale previous tables stop costing GUE.
pub const DEFAULT_WINDOW_S: u32 = 60;
/// Longest window accepted (one hour).
pub const MAX_WINDOW_S: u32 = 3600;

/// The setting, or the field at fault and why. The previous choice can only be recomputed
/// for stateless algorithms, and only an encapsulating mode can carry it.
pub fn parse(
    enabled: bool,
    window_s: Option<u32>,
    algorithm: Algorithm,
    mode: ForwardMode,
) -> Result<SecondChance, (&'static str, String)> {
    if !enabled {
        return match window_s {
            Some(_) => Err((
                "second_chance_window_s",
                "set only with second_chance = true".into(),
            )),
            None => Ok(SecondChance::Off),
        };
    }
    if mode != ForwardMode::Ipip {
        return Err((
            "second_chance",
            "needs mode = \"ipip\" (dsr-l2 cannot carry the previous choice)".into(),
        ));
    }
    if !matches!(algorithm, Algorithm::Maglev | Algorithm::IpHash) {
        return Err((
            "second_chance",
            "needs algorithm maglev or ip-hash (the previous choice must be recomputable)".into(),
        ));
    }
    let window = window_s.unwrap_or(DEFAULT_WINDOW_S);
    if window == 0 || window > MAX_WINDOW_S {
        return Err((
            "second_chance_window_s",
            format!("1 to {MAX_WINDOW_S} seconds"),
        ));
    }
    Ok(SecondChance::On {
        window: Duration::from_secs(window.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stateless_ipip_vips_take_it() {
        let ok = parse(true, None, Algorithm::Maglev, ForwardMode::Ipip);
        assert_eq!(
            ok,
            Ok(SecondChance::On {
                window: Duration::from_secs(60)
            })
        );
        assert_eq!(
            parse(false, None, Algorithm::Maglev, ForwardMode::DsrL2),
            Ok(SecondChance::Off)
        );
        for (en, w, a, m, field) in [
            (
                true,
                None,
                Algorithm::Maglev,
                ForwardMode::DsrL2,
                "second_chance",
            ),
            (
                true,
                None,
                Algorithm::LeastConnections,
                ForwardMode::Ipip,
                "second_chance",
            ),
            (
                true,
                Some(0),
                Algorithm::IpHash,
                ForwardMode::Ipip,
                "second_chance_window_s",
            ),
            (
                true,
                Some(3601),
                Algorithm::IpHash,
                ForwardMode::Ipip,
                "second_chance_window_s",
            ),
            (
                false,
                Some(5),
                Algorithm::Maglev,
                ForwardMode::Ipip,
                "second_chance_window_s",
            ),
        ] {
            assert_eq!(parse(en, w, a, m).map_err(|e| e.0), Err(field));
        }
    }
}
