//! The journal's frame format: `[payload length: u32 LE][CRC-32 of
//! payload: u32 LE][payload]`; a payload is a run of entries, tag `1` an
//! event, tag `2` an `Idempotency-Key` answer (see the module docs above).

use super::Recovered;
use crate::model::{Remembered, StoredEvent};

const TAG_EVENT: u8 = 1;
const TAG_ANSWER: u8 = 2;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn encode_frame(events: &[StoredEvent], answer: Option<&Remembered>) -> Vec<u8> {
    let size: usize = events
        .iter()
        .map(|e| 29 + e.id.len() + e.event_type.len() + e.timestamp.len() + e.data.len())
        .sum();
    let mut out =
        Vec::with_capacity(8 + size + answer.map_or(0, |a| 23 + a.key.len() + a.body.len()));
    out.extend_from_slice(&[0; 8]);
    for e in events {
        out.push(TAG_EVENT);
        put_str(&mut out, &e.id);
        put_str(&mut out, &e.event_type);
        put_str(&mut out, &e.timestamp);
        put_str(&mut out, &e.data);
        out.extend_from_slice(&e.received_at_ms.to_le_bytes());
    }
    if let Some(a) = answer {
        out.push(TAG_ANSWER);
        put_str(&mut out, &a.key);
        put_str(&mut out, &a.body);
        out.extend_from_slice(&a.status.to_le_bytes());
        out.extend_from_slice(&a.at_ms.to_le_bytes());
    }
    let len = (out.len() - 8) as u32;
    let crc = crc32fast::hash(&out[8..]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a payload's fields in order; `None` when it runs short.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

fn decode_payload(payload: &[u8], segment: u64, into: &mut Recovered) -> Option<()> {
    let mut events = Vec::new();
    let mut answers = Vec::new();
    let mut fields = Fields(payload);
    while !fields.0.is_empty() {
        match fields.u8()? {
            TAG_EVENT => events.push(StoredEvent {
                id: fields.string()?,
                event_type: fields.string()?,
                timestamp: fields.string()?,
                data: fields.string()?,
                received_at_ms: fields.u64()?,
                errors: Vec::new(),
                plugin_decisions: Default::default(),
            }),
            TAG_ANSWER => answers.push(Remembered {
                key: fields.string()?,
                body: fields.string()?,
                status: fields.u16()?,
                at_ms: fields.u64()?,
            }),
            _ => return None,
        }
    }
    into.segments
        .extend(std::iter::repeat_n(segment, events.len()));
    into.events.extend(events);
    into.answers.extend(answers);
    Some(())
}

pub(super) fn read_segment(mut bytes: &[u8], segment: u64, into: &mut Recovered) {
    while !bytes.is_empty() {
        let good = (|| {
            let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
            let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
            let payload = bytes.get(8..8 + len)?;
            (crc32fast::hash(payload) == crc).then_some(())?;
            decode_payload(payload, segment, into)?;
            Some(8 + len)
        })();
        match good {
            Some(n) => bytes = &bytes[n..],
            None => {
                into.torn_frames += 1;
                return;
            }
        }
    }
}
