//! One RS-485 line: the serial port, tokio-modbus's RTU client on it, and the line discipline
//! tokio-modbus leaves to us.
//!
//! tokio-modbus's RTU client clears only its own read buffer before a request, matches a reply
//! by slave id and function code, and on a bad CRC drops bytes one by one and keeps waiting (so
//! a corrupt reply surfaces as a timeout). A reply that comes after our timeout stays in the
//! port and would be read as the answer to the next request if that went to the same slave
//! with the same function code. So around each request this line:
//!
//! - waits the inter-frame gap (t3.5) after the last byte seen on the line, and discards
//!   whatever is pending in the port before sending;
//! - after a timeout, reads and discards until the line has been silent for the gap; bytes
//!   that arrived during a timed-out request mean a garbled reply (counted as `crc`);
//! - after a garbled or mismatched reply, discards until the line has been silent for the
//!   request's timeout, because the real answer may still be on its way;
//! - checks every reply's length against the request (see [`super::words`]).
//!
//! The scheduler adds the rest: a timed-out slave is not addressed again in the same cycle,
//! and its next poll starts by re-reading the block that timed out (see [`super::poll`]).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context as ModbusContext};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::slave::Slave;
use tokio_serial::{SerialPort, SerialStream};

use super::{Link, PollError};
use crate::backoff::Backoff;
use crate::config::SerialPortConfig;
use crate::firmware_profile::ReadBlock;
use crate::sources::serial_port::open_port;
use crate::telemetry as t;

/// Longest a drain may take on a line that never goes quiet (a babbling slave).
const DRAIN_MAX: Duration = Duration::from_secs(2);

struct PortState {
    stream: SerialStream,
    rx_bytes: u64,
    last_io: Instant,
}

/// The port, shared between tokio-modbus (which owns a transport) and the line discipline
/// here. Only the line's owner task touches either, never concurrently.
#[derive(Clone)]
struct SharedPort(Arc<Mutex<PortState>>);

impl SharedPort {
    fn lock(&self) -> std::sync::MutexGuard<'_, PortState> {
        self.0.lock().expect("serial port mutex poisoned")
    }
}

impl AsyncRead for SharedPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut state = self.lock();
        let before = buf.filled().len();
        let result = Pin::new(&mut state.stream).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            state.rx_bytes += n as u64;
            state.last_io = Instant::now();
        }
        result
    }
}

impl AsyncWrite for SharedPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.lock();
        let result = Pin::new(&mut state.stream).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            state.last_io = Instant::now();
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.lock().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.lock().stream).poll_shutdown(cx)
    }
}

struct Open {
    ctx: ModbusContext,
    port: SharedPort,
}

/// One serial port with every slave on it; owned by one task.
pub struct RtuLine {
    settings: SerialPortConfig,
    gap: Duration,
    open: Option<Open>,
    retry_at: Instant,
    backoff: Backoff,
}

impl RtuLine {
    pub fn new(
        settings: SerialPortConfig,
        backoff_initial: Duration,
        backoff_max: Duration,
    ) -> RtuLine {
        RtuLine {
            gap: settings.inter_frame_gap(),
            settings,
            open: None,
            retry_at: Instant::now(),
            backoff: Backoff::new(backoff_initial, backoff_max),
        }
    }

    /// The open port, reopening it (rate-limited by backoff) after it failed.
    fn ensure_open(&mut self) -> Result<&mut Open, PollError> {
        if self.open.is_none() {
            if Instant::now() < self.retry_at {
                return Err(PollError::Io(format!("{} is not open", self.settings.path)));
            }
            match open_port(&self.settings) {
                Ok(stream) => {
                    metrics::counter!(t::MODBUS_CONNECTS, "bus" => self.settings.path.clone())
                        .increment(1);
                    tracing::info!(port = %self.settings.path, baud = self.settings.baud_rate, "modbus RTU port open");
                    let port = SharedPort(Arc::new(Mutex::new(PortState {
                        stream,
                        rx_bytes: 0,
                        last_io: Instant::now(),
                    })));
                    let ctx = tokio_modbus::client::rtu::attach(port.clone());
                    self.open = Some(Open { ctx, port });
                    self.backoff.reset();
                }
                Err(e) => {
                    let wait = self.backoff.next_delay();
                    self.retry_at = Instant::now() + wait;
                    tracing::warn!(port = %self.settings.path, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot open modbus RTU port");
                    return Err(PollError::Io(e.to_string()));
                }
            }
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    fn close(&mut self, why: &io::Error) {
        if self.open.take().is_some() {
            tracing::warn!(port = %self.settings.path, error = %why, "modbus RTU port failed; reopening");
            // Wait the current delay before reopening; it grows only when reopening fails.
            self.retry_at = Instant::now() + self.backoff.peek_delay();
        }
    }

    /// Reads and discards until the line has been silent for `quiet` (at least the gap).
    async fn drain(&mut self, quiet: Duration) {
        let Some(open) = &self.open else { return };
        let quiet = quiet.max(self.gap);
        let mut port = open.port.clone();
        let deadline = Instant::now() + DRAIN_MAX;
        let mut buf = [0u8; 256];
        let mut discarded = 0usize;
        while Instant::now() < deadline {
            match tokio::time::timeout(quiet, port.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => break,
            }
        }
        if discarded > 0 {
            metrics::counter!(t::MODBUS_DISCARDED_BYTES, "bus" => self.settings.path.clone())
                .increment(discarded as u64);
            tracing::debug!(port = %self.settings.path, discarded, "discarded stray bytes on the line");
        }
    }
}

impl Link for RtuLine {
    fn label(&self) -> &str {
        &self.settings.path
    }

    async fn read(
        &mut self,
        unit: u8,
        block: &ReadBlock,
        timeout: Duration,
    ) -> Result<Vec<u16>, PollError> {
        let gap = self.gap;
        let open = self.ensure_open()?;
        // t3.5 after the last byte on the line, then drop whatever came in meanwhile.
        let last_io = open.port.lock().last_io;
        tokio::time::sleep_until(last_io + gap).await;
        let cleared = open
            .port
            .lock()
            .stream
            .clear(tokio_serial::ClearBuffer::Input);
        if let Err(e) = cleared {
            let e = io::Error::other(e.to_string());
            self.close(&e);
            return Err(PollError::Io(e.to_string()));
        }
        let rx_before = open.port.lock().rx_bytes;
        open.ctx.set_slave(Slave(unit));
        let result = tokio::time::timeout(timeout, open.ctx.call(super::request(block))).await;
        let received = open.port.lock().rx_bytes - rx_before;
        match result {
            Err(_) if received > 0 => {
                self.drain(timeout).await;
                Err(PollError::BadFrame(format!(
                    "{received} bytes but no valid frame (CRC or framing error)"
                )))
            }
            Err(_) => {
                self.drain(gap).await;
                Err(PollError::Timeout)
            }
            Ok(Ok(Ok(response))) => match super::words(block, response) {
                Ok(words) => Ok(words),
                Err(e) => {
                    self.drain(timeout).await;
                    Err(e)
                }
            },
            Ok(Ok(Err(exception))) => Err(PollError::Exception(exception.to_string())),
            Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                self.drain(timeout).await;
                Err(PollError::Mismatch(e.to_string()))
            }
            Ok(Err(tokio_modbus::Error::Transport(e)))
                if e.kind() == io::ErrorKind::InvalidData =>
            {
                self.drain(timeout).await;
                Err(PollError::BadFrame(e.to_string()))
            }
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                self.close(&e);
                Err(PollError::Io(e.to_string()))
            }
        }
    }

    async fn settle(&mut self, window: Duration) {
        self.drain(window).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Parity;

    #[test]
    fn inter_frame_gap_from_line_settings() {
        let mut s = SerialPortConfig::default();
        assert_eq!(s.bits_per_char(), 10);
        // 3.5 × 10 bits at 9600 baud
        assert_eq!(s.inter_frame_gap(), Duration::from_micros(3_645));
        s.parity = Parity::Even;
        assert_eq!(s.inter_frame_gap(), Duration::from_micros(4_010));
        s.baud_rate = 115_200;
        assert_eq!(s.inter_frame_gap(), Duration::from_micros(1_750));
        s.inter_frame_gap_us = 500;
        assert_eq!(s.inter_frame_gap(), Duration::from_micros(500));
    }
}
