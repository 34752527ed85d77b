//! `lbctl bgp`: the speaker, its sessions and the announced prefixes as text.

use lb_api::bgp::Overview;

use crate::table::{Align, Table};

pub fn render(o: &Overview) -> String {
    let sp = &o.speaker;
    let mut out = format!(
        "AS {}, router id {}, hold time {} s{}, kernel table {}{}\nspeaker: {} {}{}{}\n\n",
        o.local_as,
        o.router_id,
        o.hold_time_s,
        o.bfd_detection_ms
            .map(|ms| format!(", BFD (detection {ms} ms)"))
            .unwrap_or_default(),
        o.table,
        if o.stopping {
            ", STOPPING: everything withdrawn, draining"
        } else {
            ""
        },
        sp.kind,
        sp.version.as_deref().unwrap_or("?"),
        if sp.running { "" } else { " NOT ANSWERING" },
        match (&sp.error, sp.adopted) {
            (Some(e), _) => format!(" ({e})"),
            (None, true) => format!(" (adopted; started {} times by lbd)", sp.starts),
            (None, false) => format!(" (started {} times by lbd)", sp.starts),
        },
    );
    let mut sessions = Table::new(&[
        ("PEER", Align::Left),
        ("AS", Align::Right),
        ("STATE", Align::Left),
        ("SINCE", Align::Left),
        ("EXPORTED", Align::Right),
        ("BFD", Align::Left),
        ("LAST ERROR", Align::Left),
    ]);
    for s in &o.sessions {
        sessions.row([
            s.peer.to_string(),
            s.peer_as.to_string(),
            s.state.name().to_string(),
            s.since.clone().unwrap_or_else(|| "-".into()),
            s.exported.to_string(),
            match s.bfd_up {
                Some(true) => "up".into(),
                Some(false) => "down".into(),
                None => "-".into(),
            },
            s.last_error.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&sessions.render());
    out.push('\n');
    let mut prefixes = Table::new(&[
        ("PREFIX", Align::Left),
        ("VIPS", Align::Left),
        ("ANNOUNCED", Align::Left),
        ("ANNOUNCEMENTS", Align::Right),
        ("WITHDRAWALS", Align::Right),
        ("WHY NOT", Align::Left),
    ]);
    for p in &o.prefixes {
        prefixes.row([
            p.prefix.clone(),
            p.vips.join(","),
            if p.announced { "yes" } else { "no" }.to_string(),
            p.announcements.to_string(),
            p.withdrawals.to_string(),
            p.reason.clone().unwrap_or_default(),
        ]);
    }
    if prefixes.is_empty() {
        out.push_str("no VIP to announce\n");
    } else {
        out.push_str(&prefixes.render());
    }
    out
}
