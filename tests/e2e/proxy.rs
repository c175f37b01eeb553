//! A TCP proxy of the tests' own between the binaries and RabbitMQ or Postgres: it cuts
//! and stalls links so that the shared servers are never restarted.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards 127.0.0.1:<port> to a target. `cut` drops every connection and refuses new
/// ones; `stall` keeps every connection open but holds all bytes (a black-holed network,
/// a peer that stopped answering); `stall_replies` holds only the server's bytes (a
/// broker that takes the publishes but is slow to confirm them); `restore` ends any.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<Mutex<CancellationToken>>,
    stalled: tokio::sync::watch::Sender<bool>,
    replies_stalled: tokio::sync::watch::Sender<bool>,
}

/// Copies one direction, holding the bytes while the link (or this direction, `also`) is
/// stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
    mut also: Option<tokio::sync::watch::Receiver<bool>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if let Some(also) = also.as_mut() {
            if also.wait_for(|s| !*s).await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let (stalled, _) = tokio::sync::watch::channel(false);
        let (replies_stalled, _) = tokio::sync::watch::channel(false);
        let (u, g, st) = (up.clone(), generation.clone(), stalled.clone());
        let rst = replies_stalled.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let token = g.lock().expect("lock").clone();
                let (a, b) = (st.subscribe(), st.subscribe());
                let b2 = rst.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (in_r, in_w) = inbound.into_split();
                    let (out_r, out_w) = outbound.into_split();
                    tokio::select! {
                        () = token.cancelled() => {}
                        () = pump(in_r, out_w, a, None) => {}
                        () = pump(out_r, in_w, b, Some(b2)) => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            generation,
            stalled,
            replies_stalled,
        }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut g = self.generation.lock().expect("lock");
        g.cancel();
        *g = CancellationToken::new();
    }

    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Holds the server's bytes only: what the client sends still arrives.
    pub fn stall_replies(&self) {
        self.replies_stalled.send_replace(true);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
        self.stalled.send_replace(false);
        self.replies_stalled.send_replace(false);
    }
}

fn port_of(url: &str, default: u16) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(default)),
        None => (hostport.to_owned(), default),
    }
}

pub fn via(url: &str, proxy: SocketAddr, default: u16) -> String {
    let (host, port) = port_of(url, default);
    url.replacen(&format!("{host}:{port}"), &proxy.to_string(), 1)
}

pub async fn target(url: &str, default: u16) -> SocketAddr {
    let (host, port) = port_of(url, default);
    let host = if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    let mut addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("resolve");
    addrs.next().expect("an address")
}
