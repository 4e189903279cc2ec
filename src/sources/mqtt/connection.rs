//! One device connection: CONNECT and credentials, then publishes into the pipeline with a
//! PUBACK only after their commit, in packet order.
//!
//! Back-pressure, never loss: the socket is not read while the connection has
//! `receive_maximum` QoS 1 publishes waiting for their commit, or while the shared budget of
//! in-flight bytes is spent, or while the pipeline's queue is full. TCP then pushes back on
//! the device. QoS 0 is held back the same way (it counts against the byte budget).

mod handshake;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttd::protocol::{
    Disconnect, DisconnectReasonCode, LastWill, Packet, PingResp, PubAck, PubAckReason, Publish,
    PublishProperties, SubAck, SubAckProperties, Subscribe, SubscribeReasonCode, UnsubAck,
    UnsubAckReason, Unsubscribe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::ingest::{AckCursor, Ingest};
use crate::telemetry as t;

use super::super::topic::{LogThrottle, Reject, parse};
use super::auth::Grant;
use super::codec::{Codec, FrameError, PublishHeader, Version};
use super::listener::{DeviceReader, DeviceWriter, Shared};
use handshake::Accepted;

/// How long a reply may take to leave before the client is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// At shutdown, how long a connection waits for its last publishes' commits to PUBACK them.
const SHUTDOWN_ACKS: Duration = Duration::from_secs(2);
/// A client silent this long (at least; 4x its last gap between publishes) while PUBACKs are
/// pending is taken to be at its own in-flight limit: its commit is made durable at once.
const QUIET_FLOOR: Duration = Duration::from_millis(2);
/// Bookkeeping a queued publish costs besides its frame (the parsed `Ingest`).
const PER_MESSAGE_BYTES: usize = 256;
/// Where subscribers go (SUBACK reason string, MQTT 5).
const SUBSCRIBE_ELSEWHERE: &str =
    "this port takes device publishes only; subscribe on mqtt.subscriber_listen";

fn closed(reason: &'static str) {
    metrics::counter!(t::MQTT_CONNECTIONS_CLOSED, "reason" => reason).increment(1);
}

/// Serves one accepted socket until it closes.
pub async fn serve(
    (mut rd, mut wr): (DeviceReader, DeviceWriter),
    peer: SocketAddr,
    shared: &Arc<Shared>,
) {
    let mut buf = BytesMut::with_capacity(4096);
    let Some(Accepted {
        codec,
        grant,
        client_id,
        keep_alive,
        will,
        out,
    }) = handshake::accept(&mut rd, &mut wr, &mut buf, peer, shared).await
    else {
        return;
    };
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
        quiet: Quiet::default(),
        pending: VecDeque::new(),
        out,
        throttle: LogThrottle::default(),
        wr,
        puback_seconds: metrics::histogram!(t::MQTT_PUBACK_SECONDS),
    };
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

/// When the client last published, to tell a client that waits for PUBACKs (its own
/// in-flight limit, below ours) from one that publishes at its own pace: the store's durable
/// cadence would throttle the first to its limit per cadence.
#[derive(Default)]
struct Quiet {
    last: Option<Instant>,
    gap: Duration,
    /// An urgent barrier was sent since the last publish.
    nudged: bool,
}

impl Quiet {
    fn published(&mut self, at: Instant) {
        if let Some(last) = self.last {
            self.gap = at.saturating_duration_since(last);
        }
        self.last = Some(at);
        self.nudged = false;
    }

    /// When a silent client with PUBACKs pending is taken to be waiting for them.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        let last = self.last.filter(|_| !self.nudged)?;
        Some(tokio::time::Instant::from_std(
            last + (self.gap * 4).max(QUIET_FLOOR),
        ))
    }
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
    quiet: Quiet,
    pending: VecDeque<Pending>,
    out: BytesMut,
    throttle: LogThrottle,
    wr: DeviceWriter,
    /// `edge_gateway_mqtt_puback_seconds`, looked up once (one sample per QoS 1 publish).
    puback_seconds: metrics::Histogram,
}

impl Connection<'_> {
    /// The read loop: handle what is buffered, PUBACK what is committed, then wait for the
    /// socket, a commit, the keep-alive deadline, a take-over or shutdown.
    async fn run(
        &mut self,
        rd: &mut DeviceReader,
        buf: &mut BytesMut,
        keep_alive: Option<Duration>,
        stop: &CancellationToken,
    ) -> End {
        let cap = usize::from(self.shared.receive_maximum);
        let mut last_heard = tokio::time::Instant::now();
        let mut was_reading = true;
        loop {
            let at_cap = match self.handle_buffered(buf, cap).await {
                Ok(at_cap) => at_cap,
                Err(end) => return end,
            };
            if let Err(end) = self.acknowledge().await {
                return end;
            }
            // Frames left in the buffer at the cap wait for no socket event: a client with more
            // than `cap` publishes in flight has sent them and now waits for their PUBACKs.
            if at_cap && self.pending.len() < cap {
                continue;
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
            let quiet = self
                .quiet
                .deadline()
                .filter(|_| reading && !self.pending.is_empty());
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    // Taken over by a new connection with the same client id: no will, the
                    // device is still there.
                    self.close_with(DisconnectReasonCode::SessionTakenOver).await;
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
                    self.close_with(DisconnectReasonCode::KeepAliveTimeout).await;
                    return End::abnormal("keep_alive");
                }
                _ = sleep_until(quiet), if quiet.is_some() => {
                    if let Err(end) = self.nudge().await {
                        return end;
                    }
                }
            }
        }
    }

    /// Handles the whole packets buffered, while fewer than `cap` PUBACKs are pending; true
    /// when it stopped at the cap with bytes still buffered.
    async fn handle_buffered(&mut self, buf: &mut BytesMut, cap: usize) -> Result<bool, End> {
        while self.pending.len() < cap {
            match self.codec.next(buf) {
                Ok(None) => break,
                Ok(Some((packet, header))) => self.handle(packet, header).await?,
                Err(e) => {
                    let code = match e {
                        FrameError::TooLarge(_) => DisconnectReasonCode::PacketTooLarge,
                        _ => DisconnectReasonCode::MalformedPacket,
                    };
                    self.close_with(code).await;
                    return Err(End::abnormal(e.reason()));
                }
            }
        }
        Ok(self.pending.len() >= cap && !buf.is_empty())
    }

    /// Marks what was handed over, encodes the PUBACKs already committed and sends them.
    async fn acknowledge(&mut self) -> Result<(), End> {
        self.barrier().await?;
        self.take_acks();
        self.flush().await
    }

    /// Packet dispatch.
    async fn handle(&mut self, packet: Packet, header: Option<PublishHeader>) -> Result<(), End> {
        match packet {
            Packet::Publish(publish, properties) => {
                let h = header.expect("a PUBLISH frame has its header peeked");
                self.handle_publish(publish, properties, h).await
            }
            Packet::PingReq(_) => {
                self.codec.write(Packet::PingResp(PingResp), &mut self.out);
                Ok(())
            }
            Packet::Subscribe(subscribe, _) => {
                self.refuse_subscribe(&subscribe);
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                self.answer_unsubscribe(&unsubscribe);
                Ok(())
            }
            Packet::Disconnect(disconnect, _) => Err(End {
                reason: "disconnect",
                will: disconnect.reason_code == DisconnectReasonCode::DisconnectWithWillMessage,
            }),
            // A second CONNECT, acknowledgements for publishes we never send, QoS 2 flow.
            _ => {
                self.close_with(DisconnectReasonCode::ProtocolError).await;
                Err(End::abnormal("protocol_error"))
            }
        }
    }

    /// A PUBLISH: refused (QoS 2, topic alias, ACL) or parsed and handed to the pipeline,
    /// with its PUBACK queued behind the commit.
    async fn handle_publish(
        &mut self,
        publish: Publish,
        properties: Option<PublishProperties>,
        h: PublishHeader,
    ) -> Result<(), End> {
        if h.qos == 2 {
            metrics::counter!(t::MQTT_PUBLISHES_REJECTED, "reason" => "qos2_unsupported")
                .increment(1);
            self.close_with(DisconnectReasonCode::QoSNotSupported).await;
            return Err(End::abnormal("qos2_unsupported"));
        }
        if properties.is_some_and(|p| p.topic_alias.is_some()) {
            // We advertise no topic aliases (Topic Alias Maximum 0).
            self.close_with(DisconnectReasonCode::TopicAliasInvalid)
                .await;
            return Err(End::abnormal("malformed"));
        }
        let received = Instant::now();
        self.quiet.published(received);
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
                metrics::counter!(t::READINGS_REJECTED, "reason" => reason.as_str()).increment(1);
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

    /// Subscriptions belong on the subscriber port: every filter is refused.
    fn refuse_subscribe(&mut self, subscribe: &Subscribe) {
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
    }

    fn answer_unsubscribe(&mut self, unsubscribe: &Unsubscribe) {
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
                self.barrier_urgent(true).await?;
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
        self.barrier_urgent(false).await
    }

    /// [`Self::barrier`], urgent (made durable at once) when `stuck`, when this connection is
    /// at its in-flight cap, or when the shared byte budget is nearly spent: reading waits for
    /// it, so waiting for the durable cadence would throttle a flood to cap / cadence.
    async fn barrier_urgent(&mut self, stuck: bool) -> Result<(), End> {
        if self.seq > self.marked {
            let budget_low =
                self.shared.inflight_bytes.available_permits() * 4 < self.shared.inflight_bytes_max;
            let at_cap = self.pending.len() >= usize::from(self.shared.receive_maximum);
            let urgent = stuck || at_cap || budget_low;
            let token = self.cursor.token(self.seq, self.hold.take(), urgent);
            self.send(Ingest::Ack(token)).await?;
            self.marked = self.seq;
        }
        Ok(())
    }

    /// The client went quiet with PUBACKs pending: an urgent barrier covering what is
    /// already marked makes the store commit durably now.
    async fn nudge(&mut self) -> Result<(), End> {
        self.quiet.nudged = true;
        let token = self.cursor.token(self.marked, None, true);
        self.send(Ingest::Ack(token)).await
    }

    /// Encodes the PUBACKs whose publishes are committed, in packet order.
    fn take_acks(&mut self) {
        let committed = self.cursor.committed();
        while self.pending.front().is_some_and(|p| p.upto <= committed) {
            let p = self.pending.pop_front().expect("front checked above");
            self.puback_seconds
                .record(p.received.elapsed().as_secs_f64());
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

    /// Says why (MQTT 5) and sends what is encoded; the caller then ends the connection.
    async fn close_with(&mut self, code: DisconnectReasonCode) {
        self.disconnect(code);
        let _ = self.flush().await;
    }

    /// Shutdown: reads stop; publishes already handed over are acknowledged if their commit
    /// comes within [`SHUTDOWN_ACKS`] (sources stop before the pipeline and the writer).
    async fn finish(&mut self) -> End {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_ACKS;
        if self.seq > self.marked {
            let token = self.cursor.token(self.seq, self.hold.take(), true);
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
        self.close_with(DisconnectReasonCode::ServerShuttingDown)
            .await;
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
