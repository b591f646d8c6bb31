//! A webhook receiver on loopback that keeps every request whole (path, headers, raw body), so a
//! test can check the HMAC signature over the exact bytes sent.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// True when `X-FourEyes-Signature` is `sha256=` HMAC-SHA256(key, timestamp "." body), the
    /// scheme `notify/README.md` documents for receivers.
    pub fn signed_with(&self, key: &str) -> bool {
        let (Some(ts), Some(sig)) = (
            self.header("x-foureyes-timestamp"),
            self.header("x-foureyes-signature"),
        ) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        sig == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// Answers 200 to every request on `127.0.0.1:port` and keeps them.
pub struct Receiver {
    pub port: u16,
    got: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    pub fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let keep = got.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(read) = s.try_clone() else { continue };
                let mut r = BufReader::new(read);
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = Vec::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.push((k.trim().to_string(), v.trim().to_string()));
                    }
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0)
                    .min(16 << 20);
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let mut s = s;
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                keep.lock().unwrap().push(Request {
                    path,
                    headers,
                    body,
                });
            }
        });
        Self { port, got }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }

    /// The first request so far, or within `timeout`, that `pred` accepts.
    pub fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&Request) -> bool) -> Request {
        super::wait_until(what, timeout, || {
            self.got.lock().unwrap().iter().find(|r| pred(r)).cloned()
        })
    }
}
