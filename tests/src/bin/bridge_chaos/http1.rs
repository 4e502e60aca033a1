//! A small HTTP/1.1 server on a loopback port, enough for what the harness serves: the Lambda
//! Runtime API stand-ins, the API Gateway fronts and the store proxies. Requests one after
//! another on kept-alive connections, bodies by `Content-Length` or chunked. Built on tokio's
//! readiness calls alone (`readable`/`try_read`), the runtime features the workspace enables.

use std::future::Future;
use std::io::ErrorKind;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

/// Longest request head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path and query, as sent.
    pub target: String,
    /// Lower-cased names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(self.target.as_str(), |(path, _)| path)
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, query)| query)
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, headers: Vec::new(), body: body.into() }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut response = Self::new(status, value.to_string());
        response.headers.push(("content-type".into(), "application/json".into()));
        response
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// Binds a loopback port.
pub async fn bind() -> Result<(TcpListener, u16), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("cannot bind a loopback port: {e}"))?;
    let port = listener.local_addr().map_err(|e| format!("no local address: {e}"))?.port();
    Ok((listener, port))
}

/// Serves `listener` until the task is aborted: one task per connection, requests in turn.
/// `handler` answering `None` closes the connection without an answer.
pub async fn serve<H, F>(listener: TcpListener, handler: H)
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: Future<Output = Option<Response>> + Send + 'static,
{
    let handler = Arc::new(handler);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let handler = handler.clone();
        tokio::spawn(async move {
            let mut connection = Connection { stream, buffer: Vec::new() };
            while let Some(request) = connection.read_request().await {
                let Some(response) = handler(request).await else { return };
                if connection.write_response(&response).await.is_err() {
                    return;
                }
            }
        });
    }
}

struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    /// More bytes into the buffer; false at the end of the stream or on an error.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.stream.readable().await.is_err() {
                return false;
            }
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buffer.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(_) => return false,
            }
        }
    }

    /// Where `needle` starts in the buffer, reading until it is there (None: the connection
    /// ended first, or more than a request head came without it).
    async fn find_next(&mut self, needle: &[u8]) -> Option<usize> {
        loop {
            if let Some(at) = self.buffer.windows(needle.len()).position(|window| window == needle) {
                return Some(at);
            }
            if self.buffer.len() > MAX_HEAD_BYTES || !self.fill().await {
                return None;
            }
        }
    }

    /// The next request on the connection; None when it ends or cannot be read.
    async fn read_request(&mut self) -> Option<Request> {
        let head_end = self.find_next(b"\r\n\r\n").await?;
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        self.buffer.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let value = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let body = if value("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            self.read_chunked().await?
        } else {
            let length: usize = value("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while self.buffer.len() < length {
                if !self.fill().await {
                    return None;
                }
            }
            self.buffer.drain(..length).collect()
        };
        Some(Request { method, target, headers, body })
    }

    async fn read_chunked(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = self.find_next(b"\r\n").await?;
            let size_text = String::from_utf8_lossy(&self.buffer[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            self.buffer.drain(..line_end + 2);
            if size == 0 {
                // Trailer lines, up to the empty one.
                loop {
                    let end = self.find_next(b"\r\n").await?;
                    self.buffer.drain(..end + 2);
                    if end == 0 {
                        return Some(body);
                    }
                }
            }
            while self.buffer.len() < size + 2 {
                if !self.fill().await {
                    return None;
                }
            }
            body.extend(self.buffer.drain(..size));
            self.buffer.drain(..2);
        }
    }

    async fn write_response(&mut self, response: &Response) -> std::io::Result<()> {
        let mut bytes = format!("HTTP/1.1 {} {}\r\n", response.status, reason(response.status)).into_bytes();
        for (name, value) in &response.headers {
            bytes.extend(format!("{name}: {value}\r\n").into_bytes());
        }
        bytes.extend(format!("content-length: {}\r\n\r\n", response.body.len()).into_bytes());
        bytes.extend_from_slice(&response.body);
        let mut written = 0;
        while written < bytes.len() {
            self.stream.writable().await?;
            match self.stream.try_write(&bytes[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
