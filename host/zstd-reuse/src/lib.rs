//! The three functions of the `zstd` 0.9 crate that sled 0.34 calls when
//! it compresses its log (`block::compress`, `block::decompress`,
//! `stream::decode_all`), each using a zstd context kept per thread.
//!
//! The crate's own functions create a fresh context for every call, and a
//! context's creation (allocating and clearing its tables) cost more than
//! the compression itself: a third of the CPU of every sled write in a
//! profile of `cargo bench -p hookhost-core --bench store` (BENCHMARKS.md).
//! The workspace's `[patch.crates-io]` puts this crate in its place. Its
//! output is the same zstd frames, so data folders written either way read
//! either way.

use std::cell::RefCell;
use std::io;

use zstd_safe::{CCtx, DCtx, InBuffer, OutBuffer};

thread_local! {
    static COMPRESSOR: RefCell<CCtx<'static>> = RefCell::new(CCtx::create());
    static DECOMPRESSOR: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(zstd_safe::get_error_name(code))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// One-shot compression into zstd frames (`zstd::block`).
pub mod block {
    use super::*;

    /// One zstd frame holding `data` (its size recorded in the frame).
    pub fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
        COMPRESSOR.with(|cctx| {
            cctx.borrow_mut()
                .compress(&mut out, data, level)
                .map_err(zstd_error)
        })?;
        Ok(out)
    }

    /// The content of the frame `data`, which must fit in `capacity` bytes.
    pub fn decompress(data: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(capacity);
        DECOMPRESSOR.with(|dctx| {
            dctx.borrow_mut()
                .decompress(&mut out, data)
                .map_err(zstd_error)
        })?;
        Ok(out)
    }
}

/// Streaming decompression (`zstd::stream`).
pub mod stream {
    use super::*;

    /// The content of every zstd frame `source` holds, one after another.
    pub fn decode_all<R: io::Read>(mut source: R) -> io::Result<Vec<u8>> {
        let mut input = Vec::new();
        source.read_to_end(&mut input)?;
        let mut out = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            let frame_len = zstd_safe::find_frame_compressed_size(rest).map_err(zstd_error)?;
            let (frame, after) = rest.split_at(frame_len);
            decode_frame(frame, &mut out)?;
            rest = after;
        }
        Ok(out)
    }

    /// Appends one frame's content to `out`: in one call when the frame
    /// says its size (sled's do), else streamed.
    fn decode_frame(frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let size = zstd_safe::get_frame_content_size(frame);
        if size == zstd_safe::CONTENTSIZE_ERROR {
            return Err(invalid("not a zstd frame"));
        }
        if size != zstd_safe::CONTENTSIZE_UNKNOWN {
            let size = usize::try_from(size).map_err(|_| invalid("zstd frame too large"))?;
            out.extend_from_slice(&block::decompress(frame, size)?);
            return Ok(());
        }
        let mut dctx = DCtx::create();
        let mut input = InBuffer::around(frame);
        loop {
            let mut chunk = Vec::with_capacity(zstd_safe::dstream_out_size());
            let mut output = OutBuffer::around(&mut chunk);
            let hint = dctx
                .decompress_stream(&mut output, &mut input)
                .map_err(zstd_error)?;
            let produced = output.pos();
            out.extend_from_slice(&chunk[..produced]);
            if hint == 0 {
                return Ok(());
            }
            if input.pos() == frame.len() && produced == 0 {
                return Err(invalid("truncated zstd frame"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..50_000u32)
            .flat_map(|n| format!("{{\"n\":{n},\"type\":\"report\"}}").into_bytes())
            .collect()
    }

    #[test]
    fn what_is_compressed_comes_back_by_either_reader() {
        let data = sample();
        let frame = block::compress(&data, 1).unwrap();
        assert!(
            frame.len() < data.len() / 5,
            "{} of {}",
            frame.len(),
            data.len()
        );
        assert_eq!(block::decompress(&frame, data.len()).unwrap(), data);
        assert_eq!(stream::decode_all(&frame[..]).unwrap(), data);
        // The context is reused: a second, different input is not mixed
        // with the first.
        let other = b"another record".to_vec();
        let again = block::compress(&other, 5).unwrap();
        assert_eq!(stream::decode_all(&again[..]).unwrap(), other);
    }

    #[test]
    fn frames_in_a_row_and_frames_without_their_size_are_read() {
        let (a, b) = (sample(), b"second frame".to_vec());
        let mut both = block::compress(&a, 3).unwrap();
        both.extend(block::compress(&b, 3).unwrap());
        assert_eq!(
            stream::decode_all(&both[..]).unwrap(),
            [a.clone(), b].concat()
        );

        // A streamed frame does not record its size.
        let mut cctx = CCtx::create();
        let mut sized_later = Vec::with_capacity(zstd_safe::compress_bound(a.len()));
        {
            let mut output = OutBuffer::around(&mut sized_later);
            let mut input = InBuffer::around(&a);
            cctx.compress_stream(&mut output, &mut input).unwrap();
            while cctx.end_stream(&mut output).unwrap() != 0 {}
        }
        assert_eq!(
            zstd_safe::get_frame_content_size(&sized_later),
            zstd_safe::CONTENTSIZE_UNKNOWN
        );
        assert_eq!(stream::decode_all(&sized_later[..]).unwrap(), a);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(stream::decode_all(&b"not zstd at all"[..]).is_err());
        assert!(block::decompress(b"not zstd at all", 100).is_err());
        let frame = block::compress(&sample(), 1).unwrap();
        assert!(stream::decode_all(&frame[..frame.len() / 2]).is_err());
    }
}
