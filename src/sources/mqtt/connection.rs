//! One device connection: CONNECT and credentials, then publishes into the pipeline with a
//! PUBACK only after their commit, in packet order.
//!
//! Back-pressure, never loss: the socket is not read while the connection has
//! `receive_maximum` QoS 1 publishes waiting for their commit, or while the shared budget of
//! in-flight bytes is spent, or while the pipeline's queue is full. TCP then pushes back on
//! the device. QoS 0 is held back the same way (it counts against the byte budget).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, LastWill,
    Packet, PingResp, PubAck, PubAckReason, SubAck, SubAckProperties, SubscribeReasonCode,
    UnsubAck, UnsubAckReason,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::ingest::{AckCursor, Ingest};
use crate::telemetry as t;

use super::super::topic::{LogThrottle, Reject, parse};
use super::auth::{Grant, Refusal};
use super::codec::{Codec, FrameError, PublishHeader, Version, connect_version};
use super::listener::Shared;

/// How long a reply may take to leave before the client is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// At shutdown, how long a connection waits for its last publishes' commits to PUBACK them.
const SHUTDOWN_ACKS: Duration = Duration::from_secs(2);
/// Bookkeeping a queued publish costs besides its frame (the parsed `Ingest`).
const PER_MESSAGE_BYTES: usize = 256;
/// Where subscribers go (SUBACK reason string, MQTT 5).
const SUBSCRIBE_ELSEWHERE: &str =
    "this port takes device publishes only; subscribe on mqtt.subscriber_listen";

fn rejected_connection(reason: &'static str) {
    metrics::counter!(t::MQTT_CONNECTIONS_REJECTED, "reason" => reason).increment(1);
}

fn closed(reason: &'static str) {
    metrics::counter!(t::MQTT_CONNECTIONS_CLOSED, "reason" => reason).increment(1);
}

/// Serves one accepted socket until it closes.
pub async fn serve(socket: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let (mut rd, mut wr) = socket.into_split();
    let mut buf = BytesMut::with_capacity(4096);
    let first = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        r = tokio::time::timeout(shared.connect_timeout, read_connect(&mut rd, &mut buf, shared.max_packet)) => r,
    };
    let (codec, packet) = match first {
        Err(_) => return rejected_connection("connect_timeout"),
        Ok(Err(None)) => return,
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
            return rejected_connection(e.reason());
        }
        Ok(Ok(c)) => c,
    };
    let Packet::Connect(connect, _props, will, _will_props, login) = packet else {
        return rejected_connection("malformed");
    };
    let mut out = BytesMut::new();
    let refuse = |code_v4: ConnectReturnCode, code_v5: ConnectReturnCode, out: &mut BytesMut| {
        let code = if codec.version == Version::V4 {
            code_v4
        } else {
            code_v5
        };
        codec.write(
            Packet::ConnAck(
                ConnAck {
                    session_present: false,
                    code,
                },
                None,
            ),
            out,
        );
    };
    if shared
        .connections
        .load(std::sync::atomic::Ordering::Acquire)
        > shared.max_connections
    {
        refuse(
            ConnectReturnCode::ServiceUnavailable,
            ConnectReturnCode::ServerBusy,
            &mut out,
        );
        let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await;
        return rejected_connection("too_many_connections");
    }
    if connect.client_id.is_empty() && !connect.clean_session {
        refuse(
            ConnectReturnCode::ClientIdentifierNotValid,
            ConnectReturnCode::ClientIdentifierNotValid,
            &mut out,
        );
        let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await;
        return rejected_connection("client_id");
    }
    let login = login.map(|l| (l.username, l.password));
    let username = login.as_ref().map(|(u, _)| u.clone());
    let grant = match shared.auth.authenticate(peer.ip(), login).await {
        Ok(g) => g,
        Err(refusal) => {
            let (v4, v5) = match refusal {
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
            };
            refuse(v4, v5, &mut out);
            let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await;
            tracing::info!(%peer, user = username.as_deref().unwrap_or(""), reason = refusal.as_str(), "MQTT: CONNECT refused");
            return rejected_connection(refusal.as_str());
        }
    };
    let assigned = connect.client_id.is_empty();
    let client_id = if assigned {
        shared.next_anonymous_id()
    } else {
        connect.client_id.clone()
    };
    let properties = (codec.version == Version::V5).then(|| ConnAckProperties {
        receive_max: Some(shared.receive_maximum),
        max_qos: Some(1),
        max_packet_size: Some(u32::try_from(shared.max_packet).unwrap_or(u32::MAX)),
        wildcard_subscription_available: Some(0),
        subscription_identifiers_available: Some(0),
        shared_subscription_available: Some(0),
        assigned_client_identifier: assigned.then(|| client_id.clone()),
        ..ConnAckProperties::default()
    });
    codec.write(
        Packet::ConnAck(
            ConnAck {
                // A device's session holds nothing on our side (no subscriptions, nothing
                // queued for it), so a persistent one is always present: the device keeps
                // and resends its unacknowledged publishes.
                session_present: !connect.clean_session,
                code: ConnectReturnCode::Success,
            },
            properties,
        ),
        &mut out,
    );
    let stop = CancellationToken::new();
    let session = shared.take_session(&client_id, stop.clone());
    let mut conn = Connection {
        shared,
        codec,
        grant,
        cursor: Arc::new(AckCursor::default()),
        seq: 0,
        marked: 0,
        hold: None,
        pending: VecDeque::new(),
        out,
        throttle: LogThrottle::default(),
        wr,
    };
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let end = conn.run(&mut rd, &mut buf, keep_alive, &stop).await;
    closed(end.reason);
    if end.will
        && let Some(will) = will
    {
        conn.publish_will(will).await;
    }
    shared.end_session(&client_id, session);
    let _ = tokio::time::timeout(WRITE_TIMEOUT, conn.wr.shutdown()).await;
    tracing::debug!(%peer, client_id, reason = end.reason, "MQTT connection closed");
}

/// Reads until a whole CONNECT is buffered. `Err(None)`: the peer went away.
async fn read_connect(
    rd: &mut OwnedReadHalf,
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

/// Why a connection ended, and whether its last will is published.
struct End {
    reason: &'static str,
    will: bool,
}

impl End {
    fn abnormal(reason: &'static str) -> End {
        End { reason, will: true }
    }
}

/// A QoS 1 publish waiting for its PUBACK.
struct Pending {
    /// Acknowledged once the connection's messages up to this number are committed.
    upto: u64,
    pkid: u16,
    reason: PubAckReason,
    received: Instant,
}

struct Connection<'a> {
    shared: &'a Arc<Shared>,
    codec: Codec,
    grant: Grant,
    cursor: Arc<AckCursor>,
    /// Messages handed to the pipeline so far.
    seq: u64,
    /// Messages covered by the last barrier sent.
    marked: u64,
    /// In-flight bytes of the messages since the last barrier; released with it.
    hold: Option<OwnedSemaphorePermit>,
    pending: VecDeque<Pending>,
    out: BytesMut,
    throttle: LogThrottle,
    wr: OwnedWriteHalf,
}

impl Connection<'_> {
    async fn run(
        &mut self,
        rd: &mut OwnedReadHalf,
        buf: &mut BytesMut,
        keep_alive: Option<Duration>,
        stop: &CancellationToken,
    ) -> End {
        let cap = usize::from(self.shared.receive_maximum);
        let mut last_heard = tokio::time::Instant::now();
        let mut was_reading = true;
        loop {
            while self.pending.len() < cap {
                match self.codec.next(buf) {
                    Ok(None) => break,
                    Ok(Some((packet, header))) => {
                        if let Err(end) = self.handle(packet, header).await {
                            return end;
                        }
                    }
                    Err(e) => {
                        let code = match e {
                            FrameError::TooLarge(_) => DisconnectReasonCode::PacketTooLarge,
                            _ => DisconnectReasonCode::MalformedPacket,
                        };
                        self.disconnect(code);
                        let _ = self.flush().await;
                        return End::abnormal(e.reason());
                    }
                }
            }
            if let Err(end) = self.barrier().await {
                return end;
            }
            self.take_acks();
            if let Err(end) = self.flush().await {
                return end;
            }
            let reading = self.pending.len() < cap;
            if reading && !was_reading {
                // Not reading was our doing: the client's keep-alive counts from now.
                last_heard = tokio::time::Instant::now();
            }
            was_reading = reading;
            if reading {
                buf.reserve(8192);
            }
            let deadline = keep_alive.map(|k| last_heard + k);
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    // Taken over by a new connection with the same client id: no will, the
                    // device is still there.
                    self.disconnect(DisconnectReasonCode::SessionTakenOver);
                    let _ = self.flush().await;
                    return End { reason: "taken_over", will: false };
                }
                _ = self.shared.shutdown.cancelled() => return self.finish().await,
                _ = self.cursor.changed() => {}
                r = rd.read_buf(buf), if reading => match r {
                    Ok(0) => return End::abnormal("closed_by_peer"),
                    Ok(_) => last_heard = tokio::time::Instant::now(),
                    Err(_) => return End::abnormal("io"),
                },
                _ = sleep_until(deadline), if reading && deadline.is_some() => {
                    self.disconnect(DisconnectReasonCode::KeepAliveTimeout);
                    let _ = self.flush().await;
                    return End::abnormal("keep_alive");
                }
            }
        }
    }

    async fn handle(&mut self, packet: Packet, header: Option<PublishHeader>) -> Result<(), End> {
        match packet {
            Packet::Publish(publish, properties) => {
                let h = header.expect("a PUBLISH frame has its header peeked");
                if h.qos == 2 {
                    metrics::counter!(t::MQTT_PUBLISHES_REJECTED, "reason" => "qos2_unsupported")
                        .increment(1);
                    self.disconnect(DisconnectReasonCode::QoSNotSupported);
                    let _ = self.flush().await;
                    return Err(End::abnormal("qos2_unsupported"));
                }
                if properties.is_some_and(|p| p.topic_alias.is_some()) {
                    // We advertise no topic aliases (Topic Alias Maximum 0).
                    self.disconnect(DisconnectReasonCode::TopicAliasInvalid);
                    let _ = self.flush().await;
                    return Err(End::abnormal("malformed"));
                }
                let received = Instant::now();
                if !self.grant.allows_topic(&publish.topic) {
                    metrics::counter!(t::MQTT_PUBLISHES_REJECTED, "reason" => "not_authorized")
                        .increment(1);
                    if self.codec.version == Version::V4 {
                        // MQTT 3.1.1 has no negative PUBACK: closing is the only refusal.
                        return Err(End::abnormal("not_authorized"));
                    }
                    if h.qos == 1 {
                        self.queue_ack(h.pkid, PubAckReason::NotAuthorized, received);
                    }
                    return Ok(());
                }
                match parse(
                    &publish.topic,
                    &publish.payload,
                    self.shared.max_payload,
                    received,
                ) {
                    Ok(msg) => {
                        self.forward(msg, h.frame_len).await?;
                        if h.qos == 1 {
                            self.queue_ack(h.pkid, PubAckReason::Success, received);
                        }
                    }
                    Err(reason) => {
                        // Acknowledged (in order) and counted: a device must not resend
                        // garbage forever.
                        metrics::counter!(t::READINGS_REJECTED, "reason" => reason.as_str())
                            .increment(1);
                        self.throttle.warn(reason, &publish.topic);
                        if h.qos == 1 {
                            let code = match reason {
                                Reject::BadTopic => PubAckReason::TopicNameInvalid,
                                _ => PubAckReason::PayloadFormatInvalid,
                            };
                            self.queue_ack(h.pkid, code, received);
                        }
                    }
                }
                Ok(())
            }
            Packet::PingReq(_) => {
                self.codec.write(Packet::PingResp(PingResp), &mut self.out);
                Ok(())
            }
            Packet::Subscribe(subscribe, _) => {
                metrics::counter!(t::MQTT_SUBSCRIBES_REFUSED).increment(1);
                let (code, properties) = match self.codec.version {
                    Version::V4 => (SubscribeReasonCode::Failure, None),
                    Version::V5 => (
                        SubscribeReasonCode::NotAuthorized,
                        Some(SubAckProperties {
                            reason_string: Some(SUBSCRIBE_ELSEWHERE.into()),
                            user_properties: Vec::new(),
                        }),
                    ),
                };
                self.codec.write(
                    Packet::SubAck(
                        SubAck {
                            pkid: subscribe.pkid,
                            return_codes: vec![code; subscribe.filters.len()],
                        },
                        properties,
                    ),
                    &mut self.out,
                );
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                let reasons = match self.codec.version {
                    Version::V4 => Vec::new(),
                    Version::V5 => {
                        vec![UnsubAckReason::NoSubscriptionExisted; unsubscribe.filters.len()]
                    }
                };
                self.codec.write(
                    Packet::UnsubAck(
                        UnsubAck {
                            pkid: unsubscribe.pkid,
                            reasons,
                        },
                        None,
                    ),
                    &mut self.out,
                );
                Ok(())
            }
            Packet::Disconnect(disconnect, _) => Err(End {
                reason: "disconnect",
                will: disconnect.reason_code == DisconnectReasonCode::DisconnectWithWillMessage,
            }),
            // A second CONNECT, acknowledgements for publishes we never send, QoS 2 flow.
            _ => {
                self.disconnect(DisconnectReasonCode::ProtocolError);
                let _ = self.flush().await;
                Err(End::abnormal("protocol_error"))
            }
        }
    }

    fn queue_ack(&mut self, pkid: u16, reason: PubAckReason, received: Instant) {
        debug_assert!(
            self.pending.back().is_none_or(|p| p.upto <= self.seq),
            "PUBACKs leave in packet order"
        );
        self.pending.push_back(Pending {
            upto: self.seq,
            pkid,
            reason,
            received,
        });
    }

    /// Hands one message to the pipeline, first taking its bytes from the shared budget.
    async fn forward(&mut self, msg: Ingest, frame_len: usize) -> Result<(), End> {
        let cost = (frame_len + PER_MESSAGE_BYTES).min(self.shared.inflight_bytes_max);
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        let budget = self.shared.inflight_bytes.clone();
        let permit = match budget.clone().try_acquire_many_owned(cost) {
            Ok(p) => p,
            Err(_) => {
                // Our own unmarked messages must be able to free their bytes meanwhile.
                self.barrier().await?;
                tokio::select! {
                    _ = self.shared.shutdown.cancelled() => return Err(End::abnormal("shutdown")),
                    p = budget.acquire_many_owned(cost) => p.expect("the budget is never closed"),
                }
            }
        };
        match &mut self.hold {
            Some(h) => h.merge(permit),
            None => self.hold = Some(permit),
        }
        self.send(msg).await?;
        self.seq += 1;
        Ok(())
    }

    async fn send(&self, msg: Ingest) -> Result<(), End> {
        tokio::select! {
            _ = self.shared.shutdown.cancelled() => Err(End::abnormal("shutdown")),
            r = self.shared.ingest.send(msg) => r.map_err(|_| End::abnormal("pipeline_closed")),
        }
    }

    /// Sends the barrier covering every message handed over since the last one.
    async fn barrier(&mut self) -> Result<(), End> {
        if self.seq > self.marked {
            let token = self.cursor.token(self.seq, self.hold.take());
            self.send(Ingest::Ack(token)).await?;
            self.marked = self.seq;
        }
        Ok(())
    }

    /// Encodes the PUBACKs whose publishes are committed, in packet order.
    fn take_acks(&mut self) {
        let committed = self.cursor.committed();
        while self.pending.front().is_some_and(|p| p.upto <= committed) {
            let p = self.pending.pop_front().expect("front checked above");
            metrics::histogram!(t::MQTT_PUBACK_SECONDS).record(p.received.elapsed().as_secs_f64());
            let reason = match self.codec.version {
                Version::V4 => PubAckReason::Success,
                Version::V5 => p.reason,
            };
            self.codec.write(
                Packet::PubAck(
                    PubAck {
                        pkid: p.pkid,
                        reason,
                    },
                    None,
                ),
                &mut self.out,
            );
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(WRITE_TIMEOUT, self.wr.write_all(&self.out)).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            Ok(Err(_)) => Err(End::abnormal("io")),
            Err(_) => Err(End::abnormal("write_timeout")),
        }
    }

    /// MQTT 5 says why the server closes; 3.1.1 just closes.
    fn disconnect(&mut self, code: DisconnectReasonCode) {
        if self.codec.version == Version::V5 {
            self.codec.write(
                Packet::Disconnect(Disconnect { reason_code: code }, None),
                &mut self.out,
            );
        }
    }

    /// Shutdown: reads stop; publishes already handed over are acknowledged if their commit
    /// comes within [`SHUTDOWN_ACKS`] (sources stop before the pipeline and the writer).
    async fn finish(&mut self) -> End {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_ACKS;
        if self.seq > self.marked {
            let token = self.cursor.token(self.seq, self.hold.take());
            if self.shared.ingest.send(Ingest::Ack(token)).await.is_ok() {
                self.marked = self.seq;
            }
        }
        while !self.pending.is_empty() && self.cursor.committed() < self.marked {
            if tokio::time::timeout_at(deadline, self.cursor.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        self.take_acks();
        self.disconnect(DisconnectReasonCode::ServerShuttingDown);
        let _ = self.flush().await;
        End {
            reason: "shutdown",
            will: false,
        }
    }

    /// The last will goes through the same path as any publish (ACL, topic contract), so
    /// `devices/{id}/status` = `offline` marks the device offline.
    async fn publish_will(&mut self, will: LastWill) {
        if !self.grant.allows_topic(&will.topic) {
            metrics::counter!(t::MQTT_PUBLISHES_REJECTED, "reason" => "not_authorized")
                .increment(1);
            return;
        }
        match parse(
            &will.topic,
            &will.message,
            self.shared.max_payload,
            Instant::now(),
        ) {
            Ok(msg) => {
                if self.send(msg).await.is_ok() {
                    metrics::counter!(t::MQTT_WILLS_PUBLISHED).increment(1);
                }
            }
            Err(reason) => {
                metrics::counter!(t::READINGS_REJECTED, "reason" => reason.as_str()).increment(1);
                self.throttle.warn(reason, &will.topic);
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
