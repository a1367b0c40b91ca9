//! A fault-injecting HTTP proxy in front of a plain test registry: it answers chosen requests with an error
//! status, or cuts a response off after some body bytes, and forwards the rest. It stands in for the flaky
//! networks and overloaded registries users meet, which a healthy loopback registry never produces.
//!
//! Every request is forced to `Connection: close`, so each request has its own connection and the proxy can
//! decide per request without parsing response framing.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Forward,
    /// Answer with this status and an empty body.
    Status(u16),
    /// Forward, but close the connection after this many bytes of the response body.
    CutAfter(usize),
}

/// One request the proxy saw: method, path, its `Range` header, and what it did.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub fault: Fault,
}

type Plan = dyn Fn(&str, &str, usize) -> Fault + Send + Sync;

/// The proxy; it stops accepting when dropped (connections in flight finish on their own).
pub struct FaultyProxy {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    listener: TcpListener,
}

impl FaultyProxy {
    /// Proxies `127.0.0.1:PORT` to `upstream` (`host:port`). `plan(method, path, n)` decides each request,
    /// `n` counting earlier requests for the same path.
    pub fn start(
        upstream: &str,
        plan: impl Fn(&str, &str, usize) -> Fault + Send + Sync + 'static,
    ) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accept = listener.try_clone().unwrap();
        let plan: Arc<Plan> = Arc::new(plan);
        let upstream = upstream.to_string();
        let log = Arc::clone(&seen);
        thread::spawn(move || {
            for conn in accept.incoming() {
                let Ok(conn) = conn else { return };
                let (plan, log, upstream) = (Arc::clone(&plan), Arc::clone(&log), upstream.clone());
                thread::spawn(move || serve(conn, &upstream, &*plan, &log));
            }
        });
        FaultyProxy {
            port,
            seen,
            listener,
        }
    }

    /// `127.0.0.1:PORT`, the registry host to name in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests for blobs (`/v2/.../blobs/...`).
    pub fn blob_requests(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.contains("/blobs/"))
            .collect()
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        // Unblock the accept loop: shut the listening socket down.
        // SAFETY: shutdown(2) on a descriptor this struct owns; the accept loop then sees an error and ends.
        unsafe {
            libc::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(&self.listener),
                libc::SHUT_RDWR,
            );
        }
    }
}

fn serve(mut client: TcpStream, upstream: &str, plan: &Plan, log: &Mutex<Vec<Seen>>) {
    // A client that tries TLS first on loopback (as ours does) gets what an HTTP server says to a TLS
    // hello, as Go's server (docker-registry) does, so it falls back to plain HTTP.
    let mut first = [0u8; 1];
    if client.peek(&mut first).ok() != Some(1) || first[0] == 0x16 {
        let _ = client.write_all(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        );
        return;
    }
    let Some(head) = read_head(&mut client) else {
        return;
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let headers: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    let range = headers
        .iter()
        .find(|h| h.to_ascii_lowercase().starts_with("range:"))
        .map(|h| h[6..].trim().to_string());
    let fault = {
        let mut seen = log.lock().unwrap();
        let n = seen.iter().filter(|s| s.path == path).count();
        let fault = plan(&method, &path, n);
        seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            range,
            fault,
        });
        fault
    };
    if let Fault::Status(code) = fault {
        let _ = write!(
            client,
            "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let mut forwarded = format!("{request_line}\r\n");
    for h in headers
        .iter()
        .filter(|h| !h.to_ascii_lowercase().starts_with("connection:"))
    {
        forwarded.push_str(h);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    if server.write_all(forwarded.as_bytes()).is_err() {
        return;
    }
    // Pulls send no request bodies, so the response is all that is left.
    let Some(response_head) = read_head(&mut server) else {
        return;
    };
    if client.write_all(&response_head).is_err() {
        return;
    }
    let mut budget = match fault {
        Fault::CutAfter(n) => n,
        _ => usize::MAX,
    };
    let mut buf = [0u8; 16 * 1024];
    while budget > 0 {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n.min(budget),
        };
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
        budget -= n;
    }
    let _ = client.shutdown(Shutdown::Both);
}

/// Reads up to and including the blank line that ends an HTTP head, byte by byte (heads are small).
fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    Some(head)
}
