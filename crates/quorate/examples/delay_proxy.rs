//! A TCP proxy that delays every byte by a fixed time in each direction:
//! a cross-region link on one machine, for `deploy/bench/wan.sh` (this
//! kernel has no `tc netem`). It forwards bytes, not messages, so TLS runs
//! end to end through it and the peers see each other's certificates.
//!
//! ```text
//! delay_proxy LISTEN UPSTREAM DELAY_MS
//! delay_proxy 127.0.0.1:8101 127.0.0.1:7101 25     # 50 ms round trip
//! ```
//!
//! Each chunk read is released `DELAY_MS` after it was read, in order, so
//! a round trip through the proxy gains 2 × DELAY_MS and bandwidth is not
//! limited. A benchmark tool, not part of the product.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, delay_ms] = args.as_slice() else {
        anyhow::bail!(
            "usage: delay_proxy LISTEN UPSTREAM DELAY_MS (e.g. 127.0.0.1:8101 127.0.0.1:7101 25)"
        );
    };
    let delay = Duration::from_millis(delay_ms.parse()?);
    let listener = TcpListener::bind(listen).await?;
    eprintln!("delay_proxy: {listen} -> {upstream}, {delay:?} each way");
    loop {
        let (client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(pipe(cr, sw, delay), pipe(sr, cw, delay));
        });
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    // Bounded: a slow reader on the far side pushes back on this side.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(4096);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
