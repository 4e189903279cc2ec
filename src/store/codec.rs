//! The stored form of a record in the `log` table, and what it costs against the byte budget.
//!
//! `[kind u8][ts_ms i64 LE][len u8][deviceId][len u8][sensorType][reference JSON]`.
//! The header lets eviction remove index entries without parsing JSON.

use super::StoreError;
use crate::record::{Record, RecordKind};

/// The parts of an encoded record.
pub(super) struct Decoded<'a> {
    pub kind: RecordKind,
    pub ts_ms: i64,
    pub device_id: &'a str,
    pub sensor_type: &'a str,
    pub json: &'a [u8],
}

impl Decoded<'_> {
    /// The reference JSON, parsed; a record that does not parse is corrupt.
    pub fn json_value(&self, seq: u64) -> Result<serde_json::Value, StoreError> {
        serde_json::from_slice(self.json).map_err(|_| StoreError::Corrupt { seq })
    }
}

pub(super) fn encode(record: &Record, gateway_id: &str, seq: u64) -> Vec<u8> {
    let device = truncate(record.device_id().unwrap_or(""));
    let sensor = match record {
        Record::Reading(r) => truncate(&r.sensor_type),
        Record::Alarm(a) => truncate(&a.sensor_type),
        Record::Relayed(r) => truncate(r.sensor_type.as_deref().unwrap_or("")),
        _ => "",
    };
    let mut out = Vec::with_capacity(160);
    out.push(record.kind() as u8);
    out.extend_from_slice(&record.ts_ms().to_le_bytes());
    out.push(device.len() as u8);
    out.extend_from_slice(device.as_bytes());
    out.push(sensor.len() as u8);
    out.extend_from_slice(sensor.as_bytes());
    serde_json::to_writer(&mut out, &record.to_wire(gateway_id, Some(seq)))
        .expect("serializing to a Vec cannot fail");
    out
}

/// Ids are limited to 255 bytes at ingest; this only guards the header format.
fn truncate(s: &str) -> &str {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(super) fn decode(raw: &[u8]) -> Option<Decoded<'_>> {
    let kind = RecordKind::from_u8(*raw.first()?)?;
    let ts_ms = i64::from_le_bytes(raw.get(1..9)?.try_into().ok()?);
    let dlen = usize::from(*raw.get(9)?);
    let device_id = std::str::from_utf8(raw.get(10..10 + dlen)?).ok()?;
    let spos = 10 + dlen;
    let slen = usize::from(*raw.get(spos)?);
    let sensor_type = std::str::from_utf8(raw.get(spos + 1..spos + 1 + slen)?).ok()?;
    let json = raw.get(spos + 1 + slen..)?;
    Some(Decoded {
        kind,
        ts_ms,
        device_id,
        sensor_type,
        json,
    })
}

/// [`decode`] for a record read back from the log at `seq`: undecodable means corrupt.
pub(super) fn decode_stored(seq: u64, raw: &[u8]) -> Result<Decoded<'_>, StoreError> {
    decode(raw).ok_or(StoreError::Corrupt { seq })
}

/// The kind byte of an encoded record, unchecked: enough to pick records by kind without
/// decoding the rest.
pub(super) fn kind_byte(raw: &[u8]) -> Option<u8> {
    raw.first().copied()
}

/// What one stored record costs against the byte budget: its value plus its index keys.
pub(super) fn cost(d: &Decoded<'_>, raw_len: usize) -> u64 {
    let index = if d.kind == RecordKind::Reading {
        2 * d.device_id.len() + d.sensor_type.len() + 2 * 16
    } else {
        0
    };
    let kind_index = if d.kind == RecordKind::Reading { 0 } else { 9 };
    // + the log key.
    (raw_len + 8 + kind_index + index) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::reading;

    #[test]
    fn header_round_trips_and_truncates_long_ids() {
        let long = "é".repeat(200);
        let raw = encode(&reading(&long, "t", 1.5, 42), "gw", 7);
        let d = decode(&raw).unwrap();
        assert_eq!(d.kind, RecordKind::Reading);
        assert_eq!(kind_byte(&raw), Some(RecordKind::Reading as u8));
        assert_eq!(d.ts_ms, 42);
        // 255 bytes would split a two-byte character.
        assert_eq!(d.device_id, "é".repeat(127));
        assert_eq!(d.sensor_type, "t");
        let json = d.json_value(7).unwrap();
        assert_eq!(
            (json["seq"].as_u64(), json["value"].as_f64()),
            (Some(7), Some(1.5))
        );
        assert!(decode(&raw[..5]).is_none());
        assert!(matches!(
            decode_stored(3, &[]),
            Err(StoreError::Corrupt { seq: 3 })
        ));
    }
}
