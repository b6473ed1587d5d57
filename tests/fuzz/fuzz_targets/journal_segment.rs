//! Journal segments as recovery reads them after a crash: any bytes are read
//! up to the first bad frame, never a panic. With the first byte odd, the
//! rest is framed with a correct length and CRC, so the payload decoder is
//! reached; and whatever decodes re-encodes to the same frame.
#![no_main]

use hookhost_core::intake::journal::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 {
        let mut framed = Vec::with_capacity(rest.len() + 8);
        framed.extend_from_slice(&(rest.len() as u32).to_le_bytes());
        framed.extend_from_slice(&crc32(rest).to_le_bytes());
        framed.extend_from_slice(rest);
        framed
    } else {
        rest.to_vec()
    };
    let read = decode(&bytes);
    if read.torn_frames == 0 && read.answers.len() <= 1 && mode & 1 == 1 {
        // One frame read whole: encoding what it held gives it back.
        let again = encode(&read.events, read.answers.first());
        let reread = decode(&again);
        assert_eq!(reread.events, read.events);
        assert_eq!(reread.answers, read.answers);
    }
});

/// CRC-32 (IEEE), as the journal frames use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}
