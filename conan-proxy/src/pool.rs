//! Keep-alive connections to backends: HTTP/1.1 (`hyper::client::conn::http1`), reused
//! newest first, each driven by the task that uses it rather than a task of its own.
//!
//! A request's task polls the connection while it waits for the response head; the
//! response body polls it while the body streams to the client, and gives it back to the
//! pool at the body's end. Nothing hops to another task and back for a request, which is
//! what a pool of spawned connections costs (a channel to the connection's task, a oneshot
//! back).
//!
//! A connection waiting in the pool is not polled, so a backend closing it is noticed when
//! it is next taken out (the close is already in the socket: polling the connection once
//! ends it) or when the sweeper drops it after `IDLE_FOR`. `IDLE_FOR` is 4 s, below
//! Node's 5 s `keepAliveTimeout`, so a connection the app is about to close is not reused.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::forward::{RequestBody, error_text};

/// How long a connection may wait in the pool.
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(4);

type Driver = Connection<TokioIo<TcpStream>, RequestBody>;

/// One connection to a backend and the means to drive it.
pub(crate) struct Link {
    addr: SocketAddr,
    sender: SendRequest<RequestBody>,
    /// `None` once the connection future completed (closed, failed). It is dropped then,
    /// so a request still queued on it is handed back (`TrySendError`'s message) instead
    /// of waiting on a connection nobody polls.
    conn: Option<Pin<Box<Driver>>>,
}

impl Link {
    /// Drives the connection: reads and writes what is ready. After it ended, nothing.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            self.conn = None;
            if let Err(e) = result {
                tracing::debug!(backend = %self.addr, error = %error_text(&e), "backend connection ended");
            }
        }
    }

    /// Whether a new request can be sent on it now (polls it once).
    fn usable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx);
        self.conn.is_some() && matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(())))
    }
}

/// Why a request got no response.
pub(crate) enum SendFailure {
    /// Nothing of the request was sent: the connection could not be made.
    Connect(String),
    /// The request was (maybe partly) sent, then the connection failed.
    AfterSend(String),
}

struct Idle {
    link: Link,
    since: Instant,
}

/// The idle connections, per backend address.
pub(crate) struct Pool {
    idle: Mutex<foldhash::HashMap<SocketAddr, Vec<Idle>>>,
    max_idle_per_backend: usize,
    connect_timeout: Duration,
    sweeping: std::sync::atomic::AtomicBool,
}

impl Pool {
    pub(crate) fn new(max_idle_per_backend: usize, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::default(),
            max_idle_per_backend,
            connect_timeout,
            sweeping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, foldhash::HashMap<SocketAddr, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `req` to `addr` on an idle connection, or a new one: the response head and
    /// the connection, which the response body drives and gives back.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Link), SendFailure> {
        self.start_sweeper();
        let mut req = req;
        while let Some(link) = self.take(addr).await {
            match send_on(link, req).await {
                Ok(sent) => return Ok(sent),
                // It closed before the request was written: the request is whole.
                Err(Unsent::Back(r)) => req = *r,
                Err(Unsent::Failed(why)) => return Err(SendFailure::AfterSend(why)),
            }
        }
        let link = self.connect(addr).await.map_err(SendFailure::Connect)?;
        match send_on(link, req).await {
            Ok(sent) => Ok(sent),
            Err(Unsent::Back(_)) => Err(SendFailure::Connect(
                "the new connection closed before the request was sent".to_owned(),
            )),
            Err(Unsent::Failed(why)) => Err(SendFailure::AfterSend(why)),
        }
    }

    /// The newest idle connection to `addr` that is still usable; the others taken out on
    /// the way are dropped (closed).
    async fn take(&self, addr: SocketAddr) -> Option<Link> {
        loop {
            let mut link = {
                let mut idle = self.idle();
                let list = idle.get_mut(&addr)?;
                let Some(entry) = list.pop() else {
                    idle.remove(&addr);
                    return None;
                };
                if entry.since.elapsed() > IDLE_FOR {
                    // Older ones are older still.
                    list.clear();
                    idle.remove(&addr);
                    return None;
                }
                entry.link
            };
            if poll_fn(|cx| Poll::Ready(link.usable(cx))).await {
                return Some(link);
            }
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Link, String> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => {
                    return Err(format!(
                        "connect timed out after {}",
                        conan_core::time::format_duration(self.connect_timeout)
                    ));
                }
            };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| error_text(&e))?;
        Ok(Link {
            addr,
            sender,
            conn: Some(Box::pin(conn)),
        })
    }

    /// Gives `link` back after its response ended, unless the pool of its backend is full.
    pub(crate) fn put(&self, link: Link) {
        if link.conn.is_none() || link.sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        let list = idle.entry(link.addr).or_default();
        if list.len() < self.max_idle_per_backend {
            list.push(Idle {
                link,
                since: Instant::now(),
            });
        }
    }

    /// Drops the connections idle past `IDLE_FOR`, every `IDLE_FOR`, while the pool lives:
    /// those of a backend no request goes to any more would stay open otherwise.
    fn start_sweeper(self: &Arc<Self>) {
        if self
            .sweeping
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let pool: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE_FOR).await;
                let Some(pool) = pool.upgrade() else { return };
                let stale: Vec<Idle> = {
                    let mut idle = pool.idle();
                    let mut stale = Vec::new();
                    idle.retain(|_, list| {
                        let keep = list.partition_point(|e| e.since.elapsed() > IDLE_FOR);
                        stale.extend(list.drain(..keep));
                        !list.is_empty()
                    });
                    stale
                };
                // Closed outside the lock.
                drop(stale);
            }
        });
    }

    /// Idle connections now, all backends (for tests).
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.idle().values().map(Vec::len).sum()
    }
}

enum Unsent {
    /// Not written at all: here it is again.
    Back(Box<Request<RequestBody>>),
    /// Failed after (maybe part of) it was written.
    Failed(String),
}

/// Sends `req` on `link`, driving the connection until the response head arrives.
async fn send_on(
    mut link: Link,
    req: Request<RequestBody>,
) -> Result<(Response<Incoming>, Link), Unsent> {
    let response = link.sender.try_send_request(req);
    let mut response = std::pin::pin!(response);
    let result = poll_fn(|cx| {
        link.drive(cx);
        response.as_mut().poll(cx)
    })
    .await;
    match result {
        Ok(res) => Ok((res, link)),
        Err(mut e) => match e.take_message() {
            Some(req) => Err(Unsent::Back(Box::new(req))),
            None => Err(Unsent::Failed(error_text(e.error()))),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper::body::Body;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A backend that answers every request on a connection with `hello` (keep-alive),
    /// counting connections; with `close_after_answer` it closes each connection once it
    /// answered, without saying so (as an app whose keep-alive timeout ran out would).
    async fn backend(close_after_answer: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                            if stream.write_all(answer).await.is_err() {
                                return;
                            }
                            if close_after_answer {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get(addr: SocketAddr) -> Request<RequestBody> {
        Request::get("/")
            .header(hyper::header::HOST, addr.to_string())
            .body(RequestBody::Empty)
            .unwrap()
    }

    /// Sends one GET and reads its body to the end, driving the link, then gives it back.
    async fn round_trip(pool: &Arc<Pool>, addr: SocketAddr) -> String {
        let Ok((res, mut link)) = pool.send(addr, get(addr)).await else {
            panic!("no response");
        };
        let mut body = res.into_body();
        let mut text = Vec::new();
        loop {
            let frame = poll_fn(|cx| {
                link.drive(cx);
                Pin::new(&mut body).poll_frame(cx)
            })
            .await;
            match frame {
                Some(Ok(f)) => text.extend_from_slice(f.data_ref().map_or(&[][..], |d| d)),
                Some(Err(e)) => panic!("body: {e}"),
                None => break,
            }
        }
        pool.put(link);
        String::from_utf8(text).unwrap()
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let (addr, accepted) = backend(false).await;
        let pool = Pool::new(8, Duration::from_secs(1));
        for _ in 0..5 {
            assert_eq!(round_trip(&pool, addr).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_while_idle_is_replaced_without_an_error() {
        let (addr, accepted) = backend(true).await;
        let pool = Pool::new(8, Duration::from_secs(1));
        assert_eq!(round_trip(&pool, addr).await, "hello");
        // Let the backend's close arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..3 {
            assert_eq!(round_trip(&pool, addr).await, "hello");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_failure() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let pool = Pool::new(8, Duration::from_secs(1));
        match pool.send(addr, get(addr)).await {
            Err(SendFailure::Connect(why)) => assert!(why.contains("refused"), "{why}"),
            Err(SendFailure::AfterSend(why)) => panic!("after send: {why}"),
            Ok(_) => panic!("an answer from nothing"),
        }
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let (addr, accepted) = backend(false).await;
        let pool = Pool::new(8, Duration::from_secs(1));
        let Ok((res, link)) = pool.send(addr, get(addr)).await else {
            panic!("no response");
        };
        drop((res, link));
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(round_trip(&pool, addr).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
