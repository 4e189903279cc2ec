//! The CONNECT phase of one device connection: read the CONNECT, refuse it (CONNACK with
//! the version's reason code) or accept it with the CONNACK encoded for the connection to
//! send first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttd::protocol::{ConnAck, ConnAckProperties, ConnectReturnCode, LastWill, Login, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::auth::{Grant, Refusal};
use super::super::codec::{Codec, FrameError, Version, connect_version};
use super::super::listener::{DeviceReader, DeviceWriter, Shared};
use crate::telemetry as t;

use super::WRITE_TIMEOUT;

fn rejected_connection(reason: &'static str) {
    metrics::counter!(t::MQTT_CONNECTIONS_REJECTED, "reason" => reason).increment(1);
}

/// An accepted CONNECT: what the connection runs with.
pub(super) struct Accepted {
    pub codec: Codec,
    pub grant: Grant,
    pub client_id: String,
    pub keep_alive: Option<Duration>,
    pub will: Option<LastWill>,
    /// Holds the encoded CONNACK.
    pub out: BytesMut,
}

/// Reads the CONNECT and answers it; `None` once the connection is refused or gone.
pub(super) async fn accept(
    rd: &mut DeviceReader,
    wr: &mut DeviceWriter,
    buf: &mut BytesMut,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Option<Accepted> {
    let (codec, packet) = first_packet(rd, wr, buf, peer, shared).await?;
    let Packet::Connect(connect, _props, will, _will_props, login) = packet else {
        rejected_connection("malformed");
        return None;
    };
    if shared
        .connections
        .load(std::sync::atomic::Ordering::Acquire)
        > shared.max_connections
    {
        refuse(
            &codec,
            wr,
            ConnectReturnCode::ServiceUnavailable,
            ConnectReturnCode::ServerBusy,
        )
        .await;
        rejected_connection("too_many_connections");
        return None;
    }
    if connect.client_id.is_empty() && !connect.clean_session {
        refuse(
            &codec,
            wr,
            ConnectReturnCode::ClientIdentifierNotValid,
            ConnectReturnCode::ClientIdentifierNotValid,
        )
        .await;
        rejected_connection("client_id");
        return None;
    }
    let grant = authenticate(&codec, wr, peer, shared, login).await?;
    let assigned = connect.client_id.is_empty();
    let client_id = if assigned {
        shared.next_anonymous_id()
    } else {
        connect.client_id.clone()
    };
    let mut out = BytesMut::new();
    codec.write(
        Packet::ConnAck(
            ConnAck {
                // A device's session holds nothing on our side (no subscriptions, nothing
                // queued for it), so a persistent one is always present: the device keeps
                // and resends its unacknowledged publishes.
                session_present: !connect.clean_session,
                code: ConnectReturnCode::Success,
            },
            connack_properties(&codec, shared, assigned.then(|| client_id.clone())),
        ),
        &mut out,
    );
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    Some(Accepted {
        codec,
        grant,
        client_id,
        keep_alive,
        will,
        out,
    })
}

/// The first packet within `connect_timeout`, with the codec of its protocol level; an
/// unsupported level is refused here.
async fn first_packet(
    rd: &mut DeviceReader,
    wr: &mut DeviceWriter,
    buf: &mut BytesMut,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Option<(Codec, Packet)> {
    let first = tokio::select! {
        _ = shared.shutdown.cancelled() => return None,
        r = tokio::time::timeout(shared.connect_timeout, read_connect(rd, buf, shared.max_packet)) => r,
    };
    match first {
        Err(_) => {
            rejected_connection("connect_timeout");
            None
        }
        Ok(Err(None)) => None,
        Ok(Err(Some(e))) => {
            if let FrameError::Level(level) = e {
                // 3.1 and unknown levels: the 3.1.1 refusal is what such clients understand.
                let mut out = BytesMut::new();
                Codec::new(Version::V4, shared.max_packet).write(
                    Packet::ConnAck(
                        ConnAck {
                            session_present: false,
                            code: ConnectReturnCode::RefusedProtocolVersion,
                        },
                        None,
                    ),
                    &mut out,
                );
                let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await;
                tracing::debug!(%peer, level, "MQTT: unsupported protocol level");
            }
            rejected_connection(e.reason());
            None
        }
        Ok(Ok(c)) => Some(c),
    }
}

/// Reads until a whole CONNECT is buffered. `Err(None)`: the peer went away.
async fn read_connect(
    rd: &mut DeviceReader,
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<(Codec, Packet), Option<FrameError>> {
    loop {
        if let Some(version) = connect_version(buf, max_packet).map_err(Some)? {
            let mut codec = Codec::new(version, max_packet);
            if let Some((packet, _)) = codec.next(buf).map_err(Some)? {
                return Ok((codec, packet));
            }
        }
        buf.reserve(4096);
        match rd.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(_) => {}
        }
    }
}

/// Checks the credentials (and the per-IP brake); a refusal is answered here.
async fn authenticate(
    codec: &Codec,
    wr: &mut DeviceWriter,
    peer: SocketAddr,
    shared: &Shared,
    login: Option<Login>,
) -> Option<Grant> {
    let login = login.map(|l| (l.username, l.password));
    let username = login.as_ref().map(|(u, _)| u.clone());
    match shared.auth.authenticate(peer.ip(), login).await {
        Ok(g) => Some(g),
        Err(refusal) => {
            let (v4, v5) = refusal_codes(refusal);
            refuse(codec, wr, v4, v5).await;
            tracing::info!(%peer, user = username.as_deref().unwrap_or(""), reason = refusal.as_str(), "MQTT: CONNECT refused");
            rejected_connection(refusal.as_str());
            None
        }
    }
}

/// The CONNACK codes (3.1.1, 5) for a refused login.
fn refusal_codes(refusal: Refusal) -> (ConnectReturnCode, ConnectReturnCode) {
    match refusal {
        Refusal::BadCredentials => (
            ConnectReturnCode::BadUserNamePassword,
            ConnectReturnCode::BadUserNamePassword,
        ),
        Refusal::NotAuthorized => (
            ConnectReturnCode::NotAuthorized,
            ConnectReturnCode::NotAuthorized,
        ),
        Refusal::RateLimited => (
            ConnectReturnCode::NotAuthorized,
            ConnectReturnCode::ConnectionRateExceeded,
        ),
    }
}

/// Sends the refusing CONNACK, with the code of the connection's protocol version.
async fn refuse(
    codec: &Codec,
    wr: &mut DeviceWriter,
    code_v4: ConnectReturnCode,
    code_v5: ConnectReturnCode,
) {
    let code = if codec.version == Version::V4 {
        code_v4
    } else {
        code_v5
    };
    let mut out = BytesMut::new();
    codec.write(
        Packet::ConnAck(
            ConnAck {
                session_present: false,
                code,
            },
            None,
        ),
        &mut out,
    );
    let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await;
}

/// What MQTT 5 clients learn at CONNACK: our limits and an assigned client id.
fn connack_properties(
    codec: &Codec,
    shared: &Shared,
    assigned_client_identifier: Option<String>,
) -> Option<ConnAckProperties> {
    (codec.version == Version::V5).then(|| ConnAckProperties {
        receive_max: Some(shared.receive_maximum),
        max_qos: Some(1),
        max_packet_size: Some(u32::try_from(shared.max_packet).unwrap_or(u32::MAX)),
        wildcard_subscription_available: Some(0),
        subscription_identifiers_available: Some(0),
        shared_subscription_available: Some(0),
        assigned_client_identifier,
        ..ConnAckProperties::default()
    })
}
