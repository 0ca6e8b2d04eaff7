//! A tar stream checked header by header before the tar reader sees it.
//! The tar crate reads a GNU long name (`L`, `K`) or a PAX header (`x`,
//! `g`) whole into memory, however large its header says it is, and
//! builds a list of every extension block of a GNU sparse file (`S`): a
//! small compressed upload could make the daemon allocate gigabytes.
//! Here those sizes are bounded before a byte of them is passed on, sparse
//! files are refused, and a PAX record that would change an entry's size
//! (`size`, `GNU.sparse.*`) is refused, so the sizes the tar reader acts
//! on are the ones checked.

use std::io::{self, Read};

/// Longest GNU long name or link target (PATH_MAX).
pub const MAX_LONG_NAME: u64 = 4096;
/// Largest PAX extended header.
pub const MAX_PAX: u64 = 64 * 1024;

const BLOCK: usize = 512;

enum State {
    /// Collecting a 512-byte header.
    Header { filled: usize },
    /// Passing `left` bytes of an entry's data (padding included),
    /// keeping them when `keep` (a PAX header, checked at its end).
    Data { left: u64, keep: bool },
    /// After the end-of-archive blocks: whatever follows is passed as is.
    Done,
}

pub struct TarGuard<R> {
    inner: R,
    state: State,
    header: [u8; BLOCK],
    pax: Vec<u8>,
    zero_blocks: u8,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> TarGuard<R> {
        TarGuard {
            inner,
            state: State::Header { filled: 0 },
            header: [0; BLOCK],
            pax: Vec::new(),
            zero_blocks: 0,
        }
    }

    /// Checks the bytes about to be handed on, in order.
    fn inspect(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Header { filled } => {
                    let n = (BLOCK - *filled).min(bytes.len());
                    self.header[*filled..*filled + n].copy_from_slice(&bytes[..n]);
                    *filled += n;
                    bytes = &bytes[n..];
                    if *filled == BLOCK {
                        self.state = self.header_done()?;
                    }
                }
                State::Data { left, keep } => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    if *keep {
                        self.pax.extend_from_slice(&bytes[..n]);
                    }
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        if *keep {
                            check_pax(&self.pax)?;
                            self.pax.clear();
                        }
                        self.state = State::Header { filled: 0 };
                    }
                }
            }
        }
        Ok(())
    }

    fn header_done(&mut self) -> io::Result<State> {
        if self.header.iter().all(|&b| b == 0) {
            self.zero_blocks += 1;
            return Ok(if self.zero_blocks >= 2 {
                State::Done
            } else {
                State::Header { filled: 0 }
            });
        }
        self.zero_blocks = 0;
        let size = parse_size(&self.header[124..136])?;
        let kind = self.header[156];
        let bound = match kind {
            b'L' | b'K' => Some((MAX_LONG_NAME, "a GNU long name")),
            b'x' | b'g' => Some((MAX_PAX, "a PAX header")),
            b'S' => return Err(refuse("sparse files are not allowed".into())),
            _ => None,
        };
        if let Some((max, what)) = bound
            && size > max
        {
            return Err(refuse(format!("{what} of {size} bytes (at most {max})")));
        }
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        if padded == 0 {
            return Ok(State::Header { filled: 0 });
        }
        let keep = matches!(kind, b'x' | b'g');
        if keep {
            // Only the data, not the padding, is the PAX text.
            self.pax.reserve(size as usize);
        }
        Ok(State::Data { left: padded, keep })
    }
}

fn refuse(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// A tar size field: octal text, or base-256 when the top bit is set.
fn parse_size(field: &[u8]) -> io::Result<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| refuse("an entry size beyond 64 bits".into()))?;
        }
        return Ok(v);
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| refuse(format!("an entry size of {text:?}")))
}

/// PAX records are `LEN key=value\n`; refuses the keys that change an
/// entry's size.
fn check_pax(text: &[u8]) -> io::Result<()> {
    for record in text.split(|&b| b == b'\n') {
        let Some(space) = record.iter().position(|&b| b == b' ') else {
            continue;
        };
        let kv = &record[space + 1..];
        let key = kv.split(|&b| b == b'=').next().unwrap_or_default();
        if key == b"size" || key.starts_with(b"GNU.sparse") {
            return Err(refuse(format!(
                "a PAX header setting {}, which packages do not need",
                String::from_utf8_lossy(key)
            )));
        }
    }
    Ok(())
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.inspect(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(size);
        h.set_path("x").expect("path");
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn read_all(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        TarGuard::new(bytes).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn huge_long_names_and_pax_headers_are_refused_before_their_data() {
        // The header claims a GiB; only the header is there.
        for (kind, what) in [
            (b'L', "GNU long name"),
            (b'x', "PAX header"),
            (b'K', "GNU long name"),
        ] {
            let e = read_all(&header(kind, 1 << 30)).expect_err("refused");
            assert!(e.to_string().contains(what), "{e}");
        }
        let e = read_all(&header(b'S', 10)).expect_err("sparse");
        assert!(e.to_string().contains("sparse"), "{e}");
    }

    #[test]
    fn pax_size_overrides_are_refused_and_ordinary_archives_pass() {
        let record = b"20 size=99999999999\n";
        let mut archive = header(b'x', record.len() as u64);
        archive.extend_from_slice(record);
        archive.resize(archive.len().div_ceil(512) * 512, 0);
        let e = read_all(&archive).expect_err("size override");
        assert!(e.to_string().contains("size"), "{e}");

        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        let long = "d/".repeat(80) + "file";
        b.append_data(&mut h, &long, &b"abc"[..]).expect("append");
        let bytes = b.into_inner().expect("tar");
        assert_eq!(read_all(&bytes).expect("passes"), bytes);
    }

    #[test]
    fn sizes_parse_in_octal_and_base_256() {
        assert_eq!(parse_size(b"00000000017\0").expect("octal"), 0o17);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 5;
        assert_eq!(parse_size(&big).expect("base-256"), 5);
    }
}
