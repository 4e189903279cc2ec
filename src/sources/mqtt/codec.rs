//! Framing for the device listener on rumqttd's own MQTT 3.1.1 (`V4`) and 5 (`V5`) codecs.
//!
//! rumqttd's `Publish` keeps QoS, DUP and the packet id crate-private, so they are read here
//! from the frame's fixed and variable header before the codec consumes it. The protocol
//! level is likewise read from CONNECT to pick the codec: rumqttd's readers each accept only
//! their own level.

use bytes::BytesMut;
use rumqttd::protocol::v4::{V4, check};
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Error as ProtoError, Packet, Protocol};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V4,
    V5,
}

/// What the listener needs of a PUBLISH that rumqttd's type does not show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishHeader {
    pub qos: u8,
    pub pkid: u16,
    /// Bytes of the whole frame (what it costs while it waits for its commit).
    pub frame_len: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("packet of {0} bytes is over the maximum packet size")]
    TooLarge(usize),
    #[error("malformed packet: {0}")]
    Malformed(ProtoError),
    #[error("first packet is not CONNECT")]
    NotConnect,
    #[error("unsupported protocol level {0}")]
    Level(u8),
}

impl FrameError {
    /// The `reason` label in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::TooLarge(_) => "oversize",
            FrameError::Malformed(_) | FrameError::NotConnect => "malformed",
            FrameError::Level(_) => "protocol_version",
        }
    }
}

fn frame(buf: &BytesMut, max: usize) -> Result<Option<(u8, usize, usize)>, FrameError> {
    match check(buf.iter(), max) {
        Ok(h) => Ok(Some((h.byte1, h.fixed_header_len, h.frame_length()))),
        Err(ProtoError::InsufficientBytes(_)) => Ok(None),
        Err(ProtoError::PayloadSizeLimitExceeded(n)) => Err(FrameError::TooLarge(n)),
        Err(e) => Err(FrameError::Malformed(e)),
    }
}

/// The protocol level of the CONNECT at the start of `buf`, once it is complete.
pub fn connect_version(buf: &BytesMut, max: usize) -> Result<Option<Version>, FrameError> {
    // Garbage is refused at its first byte, not after its bogus length arrived.
    if buf.first().is_some_and(|b| b >> 4 != 1) {
        return Err(FrameError::NotConnect);
    }
    let Some((byte1, header, _)) = frame(buf, max)? else {
        return Ok(None);
    };
    if byte1 >> 4 != 1 {
        return Err(FrameError::NotConnect);
    }
    // Protocol name (u16 length + bytes), then the level.
    let name_len = buf
        .get(header..header + 2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or(FrameError::NotConnect)?;
    match buf.get(header + 2 + name_len).copied() {
        Some(4) => Ok(Some(Version::V4)),
        Some(5) => Ok(Some(Version::V5)),
        Some(level) => Err(FrameError::Level(level)),
        None => Err(FrameError::NotConnect),
    }
}

pub struct Codec {
    pub version: Version,
    max_packet: usize,
}

impl Codec {
    pub fn new(version: Version, max_packet: usize) -> Codec {
        Codec {
            version,
            max_packet,
        }
    }

    /// The next complete packet in `buf`, if any.
    pub fn next(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<(Packet, Option<PublishHeader>)>, FrameError> {
        let Some((byte1, header, frame_len)) = frame(buf, self.max_packet)? else {
            return Ok(None);
        };
        let publish = (byte1 >> 4 == 3).then(|| {
            let qos = (byte1 >> 1) & 0b11;
            let topic_len = buf
                .get(header..header + 2)
                .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
            let at = header + 2 + topic_len;
            let pkid = match (qos, buf.get(at..at + 2)) {
                (1 | 2, Some(b)) if at + 2 <= frame_len => u16::from_be_bytes([b[0], b[1]]),
                _ => 0,
            };
            PublishHeader {
                qos,
                pkid,
                frame_len,
            }
        });
        let packet = match self.version {
            Version::V4 => V4.read_mut(buf, self.max_packet),
            Version::V5 => V5.read_mut(buf, self.max_packet),
        }
        .map_err(FrameError::Malformed)?;
        Ok(Some((packet, publish)))
    }

    /// Appends `packet` to `out`. Only packets valid for the version are passed (rumqttd's V4
    /// writer panics on properties).
    pub fn write(&self, packet: Packet, out: &mut BytesMut) {
        let written = match self.version {
            Version::V4 => V4.write(packet, out),
            Version::V5 => V5.write(packet, out),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot encode an MQTT reply");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn connect(level: u8) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_slice(&[
            0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', level, 2, 0, 60, 0, 0,
        ]);
        b
    }

    #[test]
    fn version_from_connect() {
        assert_eq!(
            connect_version(&connect(4), 1024).unwrap(),
            Some(Version::V4)
        );
        assert_eq!(
            connect_version(&connect(5), 1024).unwrap(),
            Some(Version::V5)
        );
        assert!(matches!(
            connect_version(&connect(3), 1024),
            Err(FrameError::Level(3))
        ));
        assert_eq!(
            connect_version(&BytesMut::from(&[0x10][..]), 1024).unwrap(),
            None
        );
        assert!(matches!(
            connect_version(&BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]), 1024),
            Err(FrameError::NotConnect)
        ));
    }

    #[test]
    fn publish_header_and_size_limit() {
        let mut b = BytesMut::new();
        // QoS 1, DUP, topic "a/b", pkid 0x1234, payload "7"
        b.put_slice(&[0x3A, 8, 0, 3, b'a', b'/', b'b', 0x12, 0x34, b'7']);
        let mut codec = Codec::new(Version::V4, 1024);
        let (packet, header) = codec.next(&mut b).unwrap().unwrap();
        assert!(matches!(packet, Packet::Publish(..)));
        assert_eq!(
            header,
            Some(PublishHeader {
                qos: 1,
                pkid: 0x1234,
                frame_len: 10
            })
        );
        assert!(b.is_empty());
        let mut big = BytesMut::new();
        big.put_slice(&[0x30, 0x80, 0x80, 0x01]);
        assert!(matches!(
            Codec::new(Version::V4, 1024).next(&mut big),
            Err(FrameError::TooLarge(16384))
        ));
    }
}
