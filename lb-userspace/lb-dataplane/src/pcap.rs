//! Classic pcap files (Ethernet link type), read and written without a C library. The reader
//! also takes pcapng (what Wireshark and `lbctl capture` write), through [`crate::pcapng`].

use std::io::{self, Read, Write};

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const LINKTYPE_ETHERNET: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("pcap: {0}")]
    Io(#[from] io::Error),
    #[error("pcap: not a pcap or pcapng file (magic {0:#010x})")]
    BadMagic(u32),
    #[error(transparent)]
    Pcapng(#[from] crate::pcapng::PcapngError),
    #[error("pcap: link type {0} is not Ethernet (1)")]
    LinkType(u32),
    #[error("pcap: record {index} claims {len} bytes (snap length {snaplen})")]
    BadRecord {
        index: usize,
        len: u32,
        snaplen: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub ts_sec: u32,
    /// Microseconds (or nanoseconds in a nanosecond file; kept as read).
    pub ts_frac: u32,
    pub data: Vec<u8>,
}

pub fn read(mut r: impl Read) -> Result<Vec<Record>, PcapError> {
    let mut all = Vec::new();
    r.read_to_end(&mut all)?;
    if crate::pcapng::is_pcapng(&all) {
        return from_pcapng(&all);
    }
    let mut r = io::Cursor::new(all);
    let mut hdr = [0u8; 24];
    r.read_exact(&mut hdr)?;
    let magic_le = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let little = match magic_le {
        MAGIC_US | MAGIC_NS => true,
        m if m.swap_bytes() == MAGIC_US || m.swap_bytes() == MAGIC_NS => false,
        m => return Err(PcapError::BadMagic(m)),
    };
    let u32_at = |b: &[u8], i: usize| crate::pcapng::u32_at(b, i, little);
    let snaplen = u32_at(&hdr, 16).max(65535);
    let link = u32_at(&hdr, 20);
    if link != LINKTYPE_ETHERNET {
        return Err(PcapError::LinkType(link));
    }
    let mut out = Vec::new();
    loop {
        let mut rec = [0u8; 16];
        match r.read_exact(&mut rec) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let incl = u32_at(&rec, 8);
        if incl > snaplen.max(262_144) {
            return Err(PcapError::BadRecord {
                index: out.len(),
                len: incl,
                snaplen,
            });
        }
        let mut data = vec![0u8; incl as usize];
        r.read_exact(&mut data)?;
        out.push(Record {
            ts_sec: u32_at(&rec, 0),
            ts_frac: u32_at(&rec, 4),
            data,
        });
    }
    Ok(out)
}

/// The packets of a pcapng file, every interface Ethernet (timestamps to the microsecond, as
/// the pcap files written here hold them).
fn from_pcapng(bytes: &[u8]) -> Result<Vec<Record>, PcapError> {
    let c = crate::pcapng::parse(bytes)?;
    c.packets
        .into_iter()
        .map(|p| {
            let link = c
                .interfaces
                .get(p.interface as usize)
                .map(|i| i.linktype as u32)
                .unwrap_or(0);
            if link != LINKTYPE_ETHERNET {
                return Err(PcapError::LinkType(link));
            }
            Ok(Record {
                ts_sec: (p.ts_ns / 1_000_000_000) as u32,
                ts_frac: (p.ts_ns % 1_000_000_000 / 1_000) as u32,
                data: p.data,
            })
        })
        .collect()
}

pub fn write(mut w: impl Write, records: &[Record]) -> Result<(), PcapError> {
    w.write_all(&MAGIC_US.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&0i32.to_le_bytes())?;
    w.write_all(&0u32.to_le_bytes())?;
    w.write_all(&65535u32.to_le_bytes())?;
    w.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
    for r in records {
        w.write_all(&r.ts_sec.to_le_bytes())?;
        w.write_all(&r.ts_frac.to_le_bytes())?;
        w.write_all(&(r.data.len() as u32).to_le_bytes())?;
        w.write_all(&(r.data.len() as u32).to_le_bytes())?;
        w.write_all(&r.data)?;
    }
    Ok(())
}
