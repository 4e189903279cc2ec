//! A raw MQTT 3.1.1/5 client over TCP for tests that need exact bytes: chosen packet ids,
//! garbage, over-size frames, reason codes. Real sockets against the real listener.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    remaining_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// CONNECT for protocol level 4 or 5, keep-alive 30 s.
pub fn connect(level: u8, client_id: &str, clean: bool, login: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.push(level);
    let mut flags = if clean { 0x02 } else { 0 };
    if login.is_some() {
        flags |= 0xC0;
    }
    body.push(flags);
    body.extend_from_slice(&30u16.to_be_bytes());
    if level == 5 {
        body.push(0);
    }
    string(client_id.as_bytes(), &mut body);
    if let Some((u, p)) = login {
        string(u.as_bytes(), &mut body);
        string(p.as_bytes(), &mut body);
    }
    frame(0x10, &body)
}

pub fn publish(level: u8, qos: u8, dup: bool, pkid: u16, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic.as_bytes(), &mut body);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1) | if dup { 0x08 } else { 0 }, &body)
}

pub fn subscribe(level: u8, pkid: u16, filter: &str) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if level == 5 {
        body.push(0);
    }
    string(filter.as_bytes(), &mut body);
    body.push(1);
    frame(0x82, &body)
}

pub const PINGREQ: [u8; 2] = [0xC0, 0];
pub const DISCONNECT: [u8; 2] = [0xE0, 0];

pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn open(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Opens and sends CONNECT; returns the CONNACK's (session present, code).
    pub async fn connect(
        addr: SocketAddr,
        level: u8,
        client_id: &str,
        clean: bool,
        login: Option<(&str, &str)>,
    ) -> (Raw, u8, u8) {
        let mut raw = Raw::open(addr).await;
        raw.send(&connect(level, client_id, clean, login)).await;
        let (byte1, body) = raw.read().await.expect("CONNACK");
        assert_eq!(byte1, 0x20, "CONNACK");
        (raw, body[0], body[1])
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// The next packet as (first byte, body), or None once the server closed.
    pub async fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        self.read_within(Duration::from_secs(10)).await
    }

    pub async fn read_within(&mut self, limit: Duration) -> Option<(u8, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.buf.len() >= 2 {
                let mut len = 0usize;
                let mut shift = 0;
                let mut i = 1;
                let mut complete = false;
                while i < self.buf.len() && i <= 4 {
                    len |= ((self.buf[i] & 0x7F) as usize) << shift;
                    shift += 7;
                    i += 1;
                    if self.buf[i - 1] & 0x80 == 0 {
                        complete = true;
                        break;
                    }
                }
                if complete && self.buf.len() >= i + len {
                    let byte1 = self.buf[0];
                    let body = self.buf[i..i + len].to_vec();
                    self.buf.drain(..i + len);
                    return Some((byte1, body));
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("a packet or a close in time");
            match n {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// True once the server has closed the connection (reading whatever came before).
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Publishes `device`'s readings 0, 1, 2, … (64 in flight) until the connection dies;
/// returns the values whose PUBACK arrived.
pub async fn publish_until_killed(addr: SocketAddr, device: &str) -> Vec<u64> {
    let (raw, _, code) = Raw::connect(addr, 4, device, true, None).await;
    assert_eq!(code, 0, "CONNACK");
    let (mut rd, mut wr) = raw.stream.into_split();
    let window = Arc::new(tokio::sync::Semaphore::new(64));
    let sent: Arc<Mutex<HashMap<u16, u64>>> = Arc::default();
    let topic = format!("sensors/{device}/temperature");
    let writer = {
        let (window, sent) = (window.clone(), sent.clone());
        tokio::spawn(async move {
            for n in 0u64.. {
                let Ok(permit) = window.acquire().await else {
                    return;
                };
                permit.forget();
                let pkid = (n % 65_535) as u16 + 1;
                sent.lock().unwrap().insert(pkid, n);
                let frame = publish(4, 1, false, pkid, &topic, n.to_string().as_bytes());
                if wr.write_all(&frame).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut acked = Vec::new();
    let mut ack = [0u8; 4];
    while rd.read_exact(&mut ack).await.is_ok() {
        assert_eq!(&ack[..2], &[0x40, 2], "only PUBACKs come back");
        let pkid = u16::from_be_bytes([ack[2], ack[3]]);
        acked.push(sent.lock().unwrap()[&pkid]);
        window.add_permits(1);
    }
    window.close();
    writer.abort();
    acked
}
