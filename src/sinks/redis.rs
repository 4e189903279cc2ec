//! The Redis sink: PUBLISH to the reference channels (`sensor-readings`, `device-status`,
//! `alerts`), or XADD to streams, one pipeline per batch. The pipeline's replies are the
//! acknowledgement: every command answered means every record was taken.

pub mod commands;

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::{SinkError, Upstream, name_for};
use crate::config::{RedisMode, RedisSinkConfig};
use crate::store::RawRecord;

pub struct RedisSink {
    config: RedisSinkConfig,
    gateway_id: String,
    conn: Option<MultiplexedConnection>,
}

impl RedisSink {
    pub fn new(config: RedisSinkConfig, gateway_id: String) -> RedisSink {
        RedisSink {
            config,
            gateway_id,
            conn: None,
        }
    }

    /// A client of the configured server (also what the command channel subscribes with).
    pub(super) fn client(&self) -> Result<redis::Client, SinkError> {
        let c = &self.config;
        let mut settings = RedisConnectionInfo::default().set_db(c.db);
        if !c.username.is_empty() {
            settings = settings.set_username(&c.username);
        }
        if !c.password.is_empty() {
            settings = settings.set_password(c.password.expose());
        }
        let info = ConnectionAddr::Tcp(c.host.clone(), c.port)
            .into_connection_info()?
            .set_redis_settings(settings);
        Ok(redis::Client::open(info)?)
    }

    fn pipeline(&self, batch: &[RawRecord]) -> redis::Pipeline {
        let c = &self.config;
        let mut pipe = redis::pipe();
        for r in batch {
            match c.mode {
                RedisMode::Publish => {
                    pipe.cmd("PUBLISH")
                        .arg(name_for(&c.channels, r.kind))
                        .arg(&r.json)
                        .ignore();
                }
                RedisMode::Stream => {
                    pipe.cmd("XADD")
                        .arg(name_for(&c.streams, r.kind))
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(c.stream_maxlen)
                        .arg("*")
                        .arg("gatewayId")
                        .arg(&self.gateway_id)
                        .arg("seq")
                        .arg(r.seq)
                        .arg("deviceId")
                        .arg(&r.device_id)
                        .arg("data")
                        .arg(&r.json)
                        .ignore();
                }
            }
        }
        pipe
    }
}

impl Upstream for RedisSink {
    async fn connect(&mut self) -> Result<(), SinkError> {
        self.conn = None;
        let timeout = Duration::from_millis(self.config.delivery.request_timeout_ms);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut conn = self
            .client()?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        self.conn = Some(conn);
        Ok(())
    }

    async fn send(&mut self, batch: &[RawRecord]) -> Result<(), SinkError> {
        let pipe = self.pipeline(batch);
        let Some(conn) = self.conn.as_mut() else {
            return Err(SinkError::Redis(redis::RedisError::from((
                redis::ErrorKind::Io,
                "not connected",
            ))));
        };
        // Every reply is awaited (`ignore` only drops the values): an error in any command
        // fails the batch, which is then sent again whole.
        let result = pipe.query_async::<()>(conn).await;
        if result.is_err() {
            self.conn = None;
        }
        Ok(result?)
    }

    fn endpoints(&self) -> Vec<String> {
        vec![format!("{}:{}", self.config.host, self.config.port)]
    }
}
