//! The Redis sink: PUBLISH to the reference channels (`sensor-readings`, `device-status`,
//! `alerts`), or XADD to streams, one pipeline per batch. The pipeline's replies are the
//! acknowledgement: every command answered means every record was taken.
//!
//! With `tls = true` we open the TCP connection and the rustls session ourselves
//! (`crate::tls`, the ring provider) and hand the stream to redis-rs, which then does AUTH and
//! SELECT as on a plain link: its own TLS features would pick the process-wide provider and
//! cannot take a server name or an added CA file.

pub mod command_sender;
pub mod commands;
pub mod feed;

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use tokio::net::TcpStream;

use super::{SinkError, Upstream, name_for};
use crate::config::{RedisMode, RedisSinkConfig};
use crate::store::RawRecord;
use crate::tls::{ProblemLog, TlsConnector, rustls::pki_types::ServerName};

pub struct RedisSink {
    config: RedisSinkConfig,
    gateway_id: String,
    conn: Option<MultiplexedConnection>,
    /// Built at the first connect (reads the system CA bundle once).
    tls: Option<(TlsConnector, ProblemLog)>,
}

impl RedisSink {
    pub fn new(config: RedisSinkConfig, gateway_id: String) -> RedisSink {
        RedisSink {
            config,
            gateway_id,
            conn: None,
            tls: None,
        }
    }

    fn settings(&self) -> RedisConnectionInfo {
        let c = &self.config;
        let mut settings = RedisConnectionInfo::default().set_db(c.db);
        if !c.username.is_empty() {
            settings = settings.set_username(&c.username);
        }
        if !c.password.is_empty() {
            settings = settings.set_password(c.password.expose());
        }
        settings
    }

    /// A client of the configured server (also what the command channel subscribes with).
    pub(super) fn client(&self) -> Result<redis::Client, SinkError> {
        let c = &self.config;
        let info = ConnectionAddr::Tcp(c.host.clone(), c.port)
            .into_connection_info()?
            .set_redis_settings(self.settings());
        Ok(redis::Client::open(info)?)
    }

    fn connector(&mut self) -> Result<(TlsConnector, ProblemLog), SinkError> {
        if let Some(c) = &self.tls {
            return Ok(c.clone());
        }
        let tls = self.config.tls().unwrap_or_default();
        let setup = crate::tls::client_config(&tls)
            .map_err(|e| SinkError::Tls(format!("TLS set-up: {e}")))?;
        let connector = TlsConnector::from(setup.config);
        Ok(self.tls.insert((connector, setup.problems)).clone())
    }

    /// TCP, then the TLS handshake (a certificate problem comes back in plain words), then
    /// redis-rs on the encrypted stream.
    async fn connect_tls(
        &mut self,
        config: AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, SinkError> {
        let (connector, problems) = self.connector()?;
        let c = &self.config;
        let name = if c.server_name.is_empty() {
            &c.host
        } else {
            &c.server_name
        };
        let name = ServerName::try_from(name.clone())
            .map_err(|_| SinkError::Tls(format!("`{name}` is not a valid TLS server name")))?;
        let tcp = TcpStream::connect((c.host.as_str(), c.port))
            .await
            .map_err(redis::RedisError::from)?;
        let _ = tcp.set_nodelay(true);
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| SinkError::tls_aware(e, |e| redis::RedisError::from(e).into()))?;
        problems.take();
        let stream = problems.watch(stream);
        let (conn, driver) =
            MultiplexedConnection::new_with_config(&self.settings(), stream, config)
                .await
                .map_err(|e| match problems.take() {
                    Some(problem) => SinkError::Tls(problem.to_string()),
                    None => e.into(),
                })?;
        tokio::spawn(driver);
        Ok(conn)
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
        let mut conn = if self.config.tls {
            self.connect_tls(config).await?
        } else {
            self.client()?
                .get_multiplexed_async_connection_with_config(&config)
                .await?
        };
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
