//! pcapng files (the format Wireshark writes by default), read and written without a C
//! library: what `lbctl capture` writes (one interface block per interface, nanosecond
//! timestamps, a comment per packet with the data plane's verdict, the direction flag) and
//! what the tests and `lbctl replay` read back.
//!
//! The reader takes either byte order, every interface's timestamp resolution, enhanced and
//! simple packet blocks, and skips the blocks it does not know. Every length is checked
//! against the data: a damaged file is an error naming the block, never a panic.

use std::io::{self, Write};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const SPB: u32 = 0x0000_0003;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;

pub const LINKTYPE_ETHERNET: u16 = 1;

/// Largest block the reader accepts (a packet of 256 KiB with room to spare).
const MAX_BLOCK: usize = 1 << 20;

/// `epb_flags` direction bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Unknown,
    Inbound,
    Outbound,
}

impl Direction {
    fn flags(self) -> u32 {
        match self {
            Direction::Unknown => 0,
            Direction::Inbound => 1,
            Direction::Outbound => 2,
        }
    }

    fn from_flags(f: u32) -> Self {
        match f & 3 {
            1 => Direction::Inbound,
            2 => Direction::Outbound,
            _ => Direction::Unknown,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PcapngError {
    #[error("pcapng: {0}")]
    Io(#[from] io::Error),
    #[error("pcapng: not a pcapng file (first block type {0:#010x})")]
    NotPcapng(u32),
    #[error("pcapng: bad byte-order magic {0:#010x}")]
    ByteOrder(u32),
    #[error("pcapng: block {index} at byte {offset}: {reason}")]
    Block {
        index: usize,
        offset: usize,
        reason: String,
    },
}

/// An interface of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: Option<String>,
    pub linktype: u16,
    pub snaplen: u32,
    /// Timestamp units per second (10^6 unless the file says otherwise).
    pub units_per_s: u64,
}

/// A packet of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub interface: u32,
    /// Nanoseconds since the Unix epoch (0 for simple packet blocks, which carry none).
    pub ts_ns: u64,
    pub orig_len: u32,
    pub data: Vec<u8>,
    pub comments: Vec<String>,
    pub direction: Direction,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    pub interfaces: Vec<Interface>,
    pub packets: Vec<Packet>,
}

/// Whether `bytes` start like a pcapng file.
pub fn is_pcapng(bytes: &[u8]) -> bool {
    bytes.len() >= 4
        && (u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == SHB
            || u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == SHB)
}

/// Reads a whole file (every section; interface ids are per section, so they are renumbered
/// across sections in file order).
pub fn parse(bytes: &[u8]) -> Result<Capture, PcapngError> {
    let first = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
    if first != SHB {
        return Err(PcapngError::NotPcapng(first));
    }
    let mut out = Capture::default();
    let mut little = true;
    let mut section_base = 0u32;
    let mut off = 0usize;
    let mut index = 0usize;
    while off < bytes.len() {
        let bad = |reason: String| PcapngError::Block {
            index,
            offset: off,
            reason,
        };
        let rest = &bytes[off..];
        if rest.len() < 12 {
            return Err(bad(format!("{} bytes left, a block needs 12", rest.len())));
        }
        let raw_type = [rest[0], rest[1], rest[2], rest[3]];
        if u32::from_le_bytes(raw_type) == SHB {
            let magic = [rest[8], rest[9], rest[10], rest[11]];
            little = match u32::from_le_bytes(magic) {
                BYTE_ORDER_MAGIC => true,
                m if m.swap_bytes() == BYTE_ORDER_MAGIC => false,
                m => return Err(PcapngError::ByteOrder(m)),
            };
            section_base = out.interfaces.len() as u32;
        }
        let u32_at = |b: &[u8], i: usize| u32_at(b, i, little);
        let kind = u32_at(rest, 0);
        let len = u32_at(rest, 4) as usize;
        if len < 12 || !len.is_multiple_of(4) || len > MAX_BLOCK || len > rest.len() {
            return Err(bad(format!(
                "length {len} (must be a multiple of 4, at least 12, at most {} here)",
                rest.len().min(MAX_BLOCK)
            )));
        }
        if u32_at(rest, len - 4) as usize != len {
            return Err(bad("trailing length differs from the leading one".into()));
        }
        let body = &rest[8..len - 4];
        match kind {
            SHB => {}
            IDB => {
                if body.len() < 8 {
                    return Err(bad("interface block shorter than 8 bytes".into()));
                }
                let linktype = if little {
                    u16::from_le_bytes([body[0], body[1]])
                } else {
                    u16::from_be_bytes([body[0], body[1]])
                };
                let mut iface = Interface {
                    name: None,
                    linktype,
                    snaplen: u32_at(body, 4),
                    units_per_s: 1_000_000,
                };
                for (code, value) in options(&body[8..], little).map_err(bad)? {
                    match code {
                        IF_NAME => iface.name = Some(String::from_utf8_lossy(value).into()),
                        IF_TSRESOL => {
                            let r = *value.first().unwrap_or(&6);
                            let exp = (r & 0x7f) as u32;
                            let units = if r & 0x80 != 0 {
                                2u64.checked_pow(exp)
                            } else {
                                10u64.checked_pow(exp)
                            };
                            iface.units_per_s = units
                                .filter(|u| *u > 0)
                                .ok_or_else(|| bad(format!("timestamp resolution {r:#04x}")))?;
                        }
                        _ => {}
                    }
                }
                out.interfaces.push(iface);
            }
            EPB => {
                if body.len() < 20 {
                    return Err(bad("packet block shorter than 20 bytes".into()));
                }
                let interface = section_base + u32_at(body, 0);
                let iface = out
                    .interfaces
                    .get(interface as usize)
                    .ok_or_else(|| bad(format!("interface {interface} was never described")))?;
                let ts = ((u32_at(body, 4) as u64) << 32) | u32_at(body, 8) as u64;
                let cap = u32_at(body, 12) as usize;
                let orig_len = u32_at(body, 16);
                let padded = cap.div_ceil(4) * 4;
                let data = body
                    .get(20..20 + cap)
                    .ok_or_else(|| bad(format!("claims {cap} bytes of packet")))?
                    .to_vec();
                let mut p = Packet {
                    interface,
                    ts_ns: (ts as u128 * 1_000_000_000 / iface.units_per_s as u128) as u64,
                    orig_len,
                    data,
                    comments: Vec::new(),
                    direction: Direction::Unknown,
                };
                let opts = body.get(20 + padded..).unwrap_or(&[]);
                for (code, value) in options(opts, little).map_err(bad)? {
                    match code {
                        OPT_COMMENT => p.comments.push(String::from_utf8_lossy(value).into()),
                        EPB_FLAGS if value.len() == 4 => {
                            p.direction = Direction::from_flags(u32_at(value, 0))
                        }
                        _ => {}
                    }
                }
                out.packets.push(p);
            }
            SPB => {
                if body.len() < 4 {
                    return Err(bad("simple packet block shorter than 4 bytes".into()));
                }
                let orig_len = u32_at(body, 0);
                let snap = out
                    .interfaces
                    .get(section_base as usize)
                    .map(|i| i.snaplen)
                    .unwrap_or(0);
                let cap = match snap {
                    0 => orig_len,
                    s => orig_len.min(s),
                } as usize;
                let data = body
                    .get(4..4 + cap)
                    .ok_or_else(|| bad(format!("claims {cap} bytes of packet")))?
                    .to_vec();
                out.packets.push(Packet {
                    interface: section_base,
                    ts_ns: 0,
                    orig_len,
                    data,
                    comments: Vec::new(),
                    direction: Direction::Unknown,
                });
            }
            _ => {}
        }
        off += len;
        index += 1;
    }
    Ok(out)
}

/// The 32-bit word at `b[i..i + 4]` in the file's byte order (the caller checked the length).
pub(crate) fn u32_at(b: &[u8], i: usize, little: bool) -> u32 {
    let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
    if little {
        u32::from_le_bytes(a)
    } else {
        u32::from_be_bytes(a)
    }
}

/// The options of a block: (code, value) up to the end option.
fn options(mut b: &[u8], little: bool) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let (code, len) = if little {
            (
                u16::from_le_bytes([b[0], b[1]]),
                u16::from_le_bytes([b[2], b[3]]) as usize,
            )
        } else {
            (
                u16::from_be_bytes([b[0], b[1]]),
                u16::from_be_bytes([b[2], b[3]]) as usize,
            )
        };
        if code == OPT_END {
            break;
        }
        let value = b
            .get(4..4 + len)
            .ok_or_else(|| format!("option {code} claims {len} bytes"))?;
        out.push((code, value));
        b = b.get(4 + len.div_ceil(4) * 4..).unwrap_or(&[]);
    }
    Ok(out)
}

/// Writes a pcapng file: a section header first, then interfaces and packets in any order
/// (an interface before its first packet).
pub struct Writer<W: Write> {
    out: W,
    interfaces: u32,
}

fn option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    // Option values are at most 65,535 bytes; a longer comment is cut.
    let value = &value[..value.len().min(u16::MAX as usize)];
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len().div_ceil(4) * 4, 0);
}

impl<W: Write> Writer<W> {
    /// Starts the file with a section header naming the application.
    pub fn new(mut out: W, application: &str) -> io::Result<Self> {
        let mut body = Vec::new();
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&(-1i64).to_le_bytes());
        option(&mut body, 4, application.as_bytes()); // shb_userappl
        option(&mut body, OPT_END, &[]);
        write_block(&mut out, SHB, &body)?;
        Ok(Self { out, interfaces: 0 })
    }

    /// Describes an Ethernet interface with nanosecond timestamps; returns its id.
    pub fn interface(&mut self, name: &str, snaplen: u32) -> io::Result<u32> {
        let mut body = Vec::new();
        body.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&snaplen.to_le_bytes());
        option(&mut body, IF_NAME, name.as_bytes());
        option(&mut body, IF_TSRESOL, &[9]);
        option(&mut body, OPT_END, &[]);
        write_block(&mut self.out, IDB, &body)?;
        self.interfaces += 1;
        Ok(self.interfaces - 1)
    }

    /// One packet: `ts_ns` since the Unix epoch, `orig_len` its length on the wire.
    pub fn packet(
        &mut self,
        interface: u32,
        ts_ns: u64,
        orig_len: u32,
        data: &[u8],
        comment: Option<&str>,
        direction: Direction,
    ) -> io::Result<()> {
        if interface >= self.interfaces {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pcapng: interface {interface} was not described"),
            ));
        }
        let mut body = Vec::with_capacity(data.len() + 64);
        body.extend_from_slice(&interface.to_le_bytes());
        body.extend_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts_ns as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        body.resize(body.len().div_ceil(4) * 4, 0);
        if let Some(c) = comment {
            option(&mut body, OPT_COMMENT, c.as_bytes());
        }
        if direction != Direction::Unknown {
            option(&mut body, EPB_FLAGS, &direction.flags().to_le_bytes());
        }
        option(&mut body, OPT_END, &[]);
        write_block(&mut self.out, EPB, &body)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

fn write_block(out: &mut impl Write, kind: u32, body: &[u8]) -> io::Result<()> {
    let len = (body.len() + 12) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&len.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), "test").unwrap();
        let eth0 = w.interface("eth0", 256).unwrap();
        w.packet(
            eth0,
            1_700_000_000_123_456_789,
            60,
            &[1, 2, 3, 4, 5],
            Some("TX tx_forward vip=web"),
            Direction::Inbound,
        )
        .unwrap();
        let eth1 = w.interface("eth1", 64).unwrap();
        w.packet(eth1, 5, 3, &[9, 9, 9], None, Direction::Outbound)
            .unwrap();
        w.into_inner()
    }

    #[test]
    fn what_is_written_reads_back() {
        let bytes = sample();
        assert!(is_pcapng(&bytes));
        let c = parse(&bytes).unwrap();
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.interfaces[0].name.as_deref(), Some("eth0"));
        assert_eq!(c.interfaces[0].units_per_s, 1_000_000_000);
        let p = &c.packets[0];
        assert_eq!(p.ts_ns, 1_700_000_000_123_456_789);
        assert_eq!((p.orig_len, p.data.as_slice()), (60, &[1, 2, 3, 4, 5][..]));
        assert_eq!(p.comments, vec!["TX tx_forward vip=web".to_string()]);
        assert_eq!(p.direction, Direction::Inbound);
        assert_eq!(c.packets[1].interface, 1);
        assert_eq!(c.packets[1].direction, Direction::Outbound);
        assert!(c.packets[1].comments.is_empty());
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            let _ = parse(&bytes[..cut]);
        }
        let mut flipped = bytes.clone();
        for i in 0..flipped.len() {
            let keep = flipped[i];
            for v in [0u8, 0xff, 0x7f, 0x80] {
                flipped[i] = v;
                let _ = parse(&flipped);
            }
            flipped[i] = keep;
        }
        assert!(matches!(
            parse(&[0xd4, 0xc3, 0xb2, 0xa1, 0, 0, 0, 0]),
            Err(PcapngError::NotPcapng(_))
        ));
        let mut unknown_iface = bytes.clone();
        let len_at =
            |b: &[u8], at: usize| u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap());
        let idb = len_at(&bytes, 0) as usize;
        let epb = idb + len_at(&bytes, idb) as usize;
        unknown_iface[epb + 8] = 7; // the first packet names interface 7
        assert!(parse(&unknown_iface).is_err());
    }

    #[test]
    fn a_big_endian_file_with_microseconds_reads() {
        // SHB, IDB (no options), EPB of 4 bytes at 1.5 s, all big-endian.
        let mut f = Vec::new();
        let block = |f: &mut Vec<u8>, kind: u32, body: &[u8]| {
            let len = (body.len() + 12) as u32;
            f.extend_from_slice(&kind.to_be_bytes());
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(body);
            f.extend_from_slice(&len.to_be_bytes());
        };
        let mut shb = BYTE_ORDER_MAGIC.to_be_bytes().to_vec();
        shb.extend_from_slice(&[0, 1, 0, 0]);
        shb.extend_from_slice(&(-1i64).to_be_bytes());
        block(&mut f, SHB, &shb);
        block(&mut f, IDB, &[0, 1, 0, 0, 0, 0, 0xff, 0xff]);
        let mut epb = vec![0u8; 4];
        epb.extend_from_slice(&0u32.to_be_bytes());
        epb.extend_from_slice(&1_500_000u32.to_be_bytes());
        epb.extend_from_slice(&4u32.to_be_bytes());
        epb.extend_from_slice(&4u32.to_be_bytes());
        epb.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        block(&mut f, EPB, &epb);
        let c = parse(&f).unwrap();
        assert_eq!(c.packets[0].ts_ns, 1_500_000_000);
        assert_eq!(c.packets[0].data, vec![0xde, 0xad, 0xbe, 0xef]);
    }
}
