//! The snapshot container (`docs/FORMATS.md` §6.1): a magic header followed
//! by self-checking frames, so that a snapshot can be written, read, sent
//! and received a piece at a time with bounded memory, and every piece is
//! checked on its own before anything is built on it.
//!
//! A frame is `kind (u8) ‖ len (u32, big-endian) ‖ payload (len bytes) ‖
//! SHA-256(kind ‖ len ‖ payload)`. The digest makes a frame verifiable
//! without any other: a flipped bit, a truncated chunk or a chunk sent at
//! the wrong offset is found where it arrives. What the payloads mean is the
//! store's (`quorate-store`'s snapshot module); this module knows only the
//! container.
//!
//! Pure: byte slices in, results out; no IO.

use crate::canonical::sha256;

/// The first eight bytes of every snapshot: "QSNAP", two zero bytes, and
/// the container version. Version 2: payloads in the binary codec
/// (FORMATS.md §6.0); version 1 carried them as JSON.
pub const MAGIC: [u8; 8] = *b"QSNAP\0\0\x02";

/// The largest payload a frame may carry. Writers cut their batches well
/// below it; a reader refuses a longer length before allocating for it.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// Bytes a frame adds around its payload: kind, length and digest.
pub const OVERHEAD: usize = 1 + 4 + 32;

/// Why bytes are not a well-formed run of frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not a quorate snapshot (the first 8 bytes are not the container's magic)")]
    BadMagic,
    #[error(
        "a quorate snapshot of container version {0}, which this build does not read (it reads version {v}): \
         have a node of this build make a new snapshot",
        v = MAGIC[7]
    )]
    OtherVersion(u8),
    #[error(
        "frame at byte {offset} declares {len} payload bytes, more than the {MAX_PAYLOAD} allowed"
    )]
    TooLong { offset: u64, len: usize },
    #[error("frame at byte {offset} is cut short ({have} of {need} bytes)")]
    Truncated {
        offset: u64,
        have: usize,
        need: usize,
    },
    #[error("frame at byte {offset} does not match its digest")]
    Digest { offset: u64 },
}

/// One frame, borrowed from the bytes it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
}

/// The bytes of one frame.
pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    let digest = sha256(&out);
    out.extend_from_slice(&digest);
    out
}

/// The total length of the frame starting at `buf[0]`, read from its
/// header, or `None` when `buf` is too short to hold the header.
/// `offset` is where `buf` starts in the container, for the error.
pub fn frame_len(buf: &[u8], offset: u64) -> Result<Option<usize>, FrameError> {
    let Some(header) = buf.get(..5) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLong { offset, len });
    }
    Ok(Some(len + OVERHEAD))
}

/// Parses and checks the frame at the start of `buf`. Returns the frame and
/// its total length, or `None` if `buf` holds no complete frame yet.
pub fn parse(buf: &[u8], offset: u64) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(total) = frame_len(buf, offset)? else {
        return Ok(None);
    };
    let Some(whole) = buf.get(..total) else {
        return Ok(None);
    };
    let body = &whole[..total - 32];
    if sha256(body) != whole[total - 32..] {
        return Err(FrameError::Digest { offset });
    }
    Ok(Some((
        Frame {
            kind: body[0],
            payload: &body[5..],
        },
        total,
    )))
}

/// Checks that `head` starts with this build's [`MAGIC`], telling another
/// container version from bytes that are not a snapshot at all.
pub fn check_magic(head: &[u8]) -> Result<(), FrameError> {
    match head.get(..MAGIC.len()) {
        Some(m) if m == MAGIC.as_slice() => Ok(()),
        Some(m) if m[..7] == MAGIC[..7] => Err(FrameError::OtherVersion(m[7])),
        _ => Err(FrameError::BadMagic),
    }
}

/// Checks that `chunk`, which starts at byte `offset` of a container, is
/// exactly a run of whole, intact frames (preceded by the magic when
/// `offset` is 0). Returns how many frames it holds. This is what a
/// receiver checks of every chunk before it keeps it.
pub fn check_chunk(chunk: &[u8], offset: u64) -> Result<usize, FrameError> {
    let mut at = 0usize;
    if offset == 0 {
        check_magic(chunk)?;
        at = MAGIC.len();
    }
    let mut frames = 0;
    while at < chunk.len() {
        let here = offset + at as u64;
        match parse(&chunk[at..], here)? {
            Some((_, len)) => {
                at += len;
                frames += 1;
            }
            None => {
                let need = frame_len(&chunk[at..], here)?.unwrap_or(5);
                return Err(FrameError::Truncated {
                    offset: here,
                    have: chunk.len() - at,
                    need,
                });
            }
        }
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(frames: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (k, p) in frames {
            out.extend(encode(*k, p));
        }
        out
    }

    #[test]
    fn frames_round_trip_and_chunks_check() {
        let c = container(&[(1, b"header"), (2, b""), (3, &[7u8; 1000])]);
        assert_eq!(check_chunk(&c, 0), Ok(3));
        let first = MAGIC.len() + OVERHEAD + 6;
        let (f, len) = parse(&c[MAGIC.len()..], 8).expect("parses").expect("whole");
        assert_eq!(
            (f.kind, f.payload, len),
            (1, b"header".as_slice(), first - 8)
        );
        // A chunk that starts at a frame boundary past the magic.
        assert_eq!(check_chunk(&c[first..], first as u64), Ok(2));
    }

    #[test]
    fn every_damage_is_found_where_it_is() {
        let c = container(&[(1, b"header"), (2, b"records")]);
        // Every single flipped bit anywhere is refused.
        for i in 0..c.len() {
            for bit in 0..8 {
                let mut bad = c.clone();
                bad[i] ^= 1 << bit;
                assert!(check_chunk(&bad, 0).is_err(), "flip at byte {i} bit {bit}");
            }
        }
        // Every truncation is refused, except at a frame boundary.
        let boundaries = [8, 8 + OVERHEAD + 6, c.len()];
        for cut in 0..c.len() {
            let r = check_chunk(&c[..cut], 0);
            assert_eq!(r.is_ok(), boundaries.contains(&cut), "cut at {cut}: {r:?}");
        }
        // A chunk presented at the wrong offset is not a run of frames.
        assert_eq!(check_chunk(&c[8..], 0), Err(FrameError::BadMagic));
        // A snapshot of the JSON container (version 1) is named as such.
        let mut v1 = c.clone();
        v1[7] = 1;
        assert_eq!(check_chunk(&v1, 0), Err(FrameError::OtherVersion(1)));
        assert!(
            FrameError::OtherVersion(1)
                .to_string()
                .contains("reads version 2")
        );
        assert!(check_chunk(&c[9..], 9).is_err());
    }

    #[test]
    fn a_huge_declared_length_is_refused_before_reading() {
        let mut f = vec![2u8];
        f.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            check_chunk(&f, 100),
            Err(FrameError::TooLong { offset: 100, .. })
        ));
    }
}
