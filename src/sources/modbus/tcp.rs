//! Modbus TCP: one connection per device, kept open across polls and reconnected with backoff.
//! MBAP transaction ids let tokio-modbus reject an answer to an earlier request; after any
//! failure the connection is dropped anyway, so a late answer dies with it.

use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::client::{Client, Context as ModbusContext};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::slave::Slave;

use super::{Link, PollError};
use crate::backoff::Backoff;
use crate::firmware_profile::ReadBlock;
use crate::telemetry as t;

pub struct TcpLink {
    endpoint: String,
    label: String,
    connect_timeout: Duration,
    ctx: Option<ModbusContext>,
    retry_at: Instant,
    backoff: Backoff,
}

impl TcpLink {
    pub fn new(
        endpoint: &str,
        connect_timeout: Duration,
        backoff_initial: Duration,
        backoff_max: Duration,
    ) -> TcpLink {
        TcpLink {
            endpoint: endpoint.into(),
            label: format!("tcp://{endpoint}"),
            connect_timeout,
            ctx: None,
            retry_at: Instant::now(),
            backoff: Backoff::new(backoff_initial, backoff_max),
        }
    }

    async fn connect(&mut self) -> Result<ModbusContext, PollError> {
        if Instant::now() < self.retry_at {
            return Err(PollError::Io(format!("{} not connected", self.endpoint)));
        }
        let attempt = async {
            let addr = tokio::net::lookup_host(&self.endpoint)
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other("no address"))?;
            tokio_modbus::client::tcp::connect(addr).await
        };
        let result = match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            )),
        };
        match result {
            Ok(ctx) => {
                metrics::counter!(t::MODBUS_CONNECTS, "bus" => self.label.clone()).increment(1);
                tracing::info!(endpoint = %self.endpoint, "modbus TCP connected");
                self.backoff.reset();
                Ok(ctx)
            }
            Err(e) => {
                let wait = self.fail();
                tracing::warn!(endpoint = %self.endpoint, error = %e, retry_in_ms = wait.as_millis() as u64, "modbus TCP connect failed");
                Err(PollError::Io(e.to_string()))
            }
        }
    }

    /// Drops the connection; the next attempt waits out the backoff, which is returned.
    fn fail(&mut self) -> Duration {
        self.ctx = None;
        let wait = self.backoff.next_delay();
        self.retry_at = Instant::now() + wait;
        wait
    }
}

impl Link for TcpLink {
    fn label(&self) -> &str {
        &self.label
    }

    async fn read(
        &mut self,
        unit: u8,
        block: &ReadBlock,
        timeout: Duration,
    ) -> Result<Vec<u16>, PollError> {
        let mut ctx = match self.ctx.take() {
            Some(ctx) => ctx,
            None => self.connect().await?,
        };
        ctx.set_slave(Slave(unit));
        let result = tokio::time::timeout(timeout, ctx.call(super::request(block))).await;
        let error = match result {
            Ok(Ok(Ok(response))) => match super::words(block, response) {
                Ok(words) => {
                    self.ctx = Some(ctx);
                    return Ok(words);
                }
                Err(e) => e,
            },
            Ok(Ok(Err(exception))) => {
                self.ctx = Some(ctx);
                return Err(PollError::Exception(exception.to_string()));
            }
            Err(_) => PollError::Timeout,
            Ok(Err(tokio_modbus::Error::Protocol(e))) => PollError::Mismatch(e.to_string()),
            Ok(Err(tokio_modbus::Error::Transport(e))) => PollError::Io(e.to_string()),
        };
        // Drop the connection: whatever answer is still in flight goes with it. A timeout is
        // reconnected at once; a broken connection waits out the backoff.
        if matches!(error, PollError::Io(_)) {
            tracing::warn!(endpoint = %self.endpoint, error = %error, "modbus TCP connection lost");
            self.fail();
        }
        Err(error)
    }

    async fn settle(&mut self, _window: Duration) {}
}
