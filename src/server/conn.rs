//! Connections: plain TCP or TLS (rustls), HTTP/1.1 with bounded headers, a header read
//! timeout, and an idle timeout that also cuts a download whose phone stopped reading (so a
//! stuck phone cannot hold one of its site's download tokens forever). A [`Meter`] counts the
//! bytes the kernel accepted on the connection, so a download that trickles (a phone reading a
//! byte now and then, which the idle timeout never sees) can be cut below a minimum rate.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading TLS certificate chain {path}: {message}")]
    Cert { path: String, message: String },
    #[error("reading TLS private key {path}: {message}")]
    Key { path: String, message: String },
    #[error("reading client CA bundle {path}: {message}")]
    ClientCa { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS acceptor from PEM files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            message: e.to_string(),
        })?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The address a connection comes from (a request extension: the failure limit is per source).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Bytes written to one connection's socket, and a way to cut the connection from a request
/// handler (its task drops the connection when told).
#[derive(Debug, Default)]
pub struct Meter {
    written: AtomicU64,
    cut: tokio::sync::Notify,
}

impl Meter {
    /// Bytes the kernel accepted so far on this connection.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Asks the connection's task to close it now.
    pub fn cut(&self) {
        self.cut.notify_one();
    }

    /// Completes once [`Meter::cut`] was called.
    pub async fn cut_requested(&self) {
        self.cut.notified().await;
    }
}

/// Watches a download on a metered connection: once per `window` (the first one is the grace
/// period), fewer than `min_rate × window` bytes accepted by the kernel cuts the connection.
/// Measured at the socket, not in the body stream: a phone reading slowly stops hyper from
/// asking the body for more, so only the socket sees it. Abort the task when the download ends.
pub async fn enforce_min_rate(meter: Arc<Meter>, min_rate: u64, window: Duration) {
    let floor = (min_rate as f64 * window.as_secs_f64()) as u64;
    let mut last = meter.written();
    loop {
        tokio::time::sleep(window).await;
        let now = meter.written();
        if now.saturating_sub(last) < floor {
            tracing::info!(
                min_rate,
                window_secs = window.as_secs_f64(),
                bytes = now - last,
                "download slower than the minimum rate; cutting it"
            );
            meter.cut();
            return;
        }
        last = now;
    }
}

/// An I/O stream that fails with `TimedOut` when neither reading nor writing has made
/// progress for `timeout`.
///
/// Progress only records an instant; the timer is re-armed when it fires early, so a busy
/// connection costs one timer update per `timeout`, not one per read or write.
pub struct IdleTimeout<T> {
    inner: T,
    meter: Arc<Meter>,
    timeout: Duration,
    last_progress: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    pub fn new(inner: T, timeout: Duration) -> Self {
        Self::metered(inner, timeout, Arc::default())
    }

    /// Like [`IdleTimeout::new`], counting written bytes into `meter`.
    pub fn metered(inner: T, timeout: Duration, meter: Arc<Meter>) -> Self {
        Self {
            inner,
            meter,
            timeout,
            last_progress: Instant::now(),
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// Notes progress after a write, or checks the deadline while the write is pending.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match poll {
            Poll::Ready(r) => {
                if let Ok(n) = r
                    && n > 0
                {
                    self.meter.written.fetch_add(n as u64, Ordering::Relaxed);
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.check(cx)?;
                Poll::Pending
            }
        }
    }

    fn progressed(&mut self) {
        self.last_progress = Instant::now();
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            match self.deadline.as_mut().poll(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(()) => {
                    let due = self.last_progress + self.timeout;
                    if due <= Instant::now() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle"));
                    }
                    self.deadline.as_mut().reset(due);
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                this.check(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                this.check(cx)?;
                Poll::Pending
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
        Poll::Ready(r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_cut_after_the_idle_timeout() {
        // The peer never reads: once the 1 KiB pipe is full, writes stall.
        let (ours, _peer) = tokio::io::duplex(1024);
        let mut io = IdleTimeout::new(ours, Duration::from_millis(200));
        let started = Instant::now();
        let chunk = [0u8; 4096];
        let err = loop {
            if let Err(e) = io.write(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_download_slower_than_the_minimum_rate_is_cut_and_a_fast_one_is_not() {
        let (ours, mut peer) = tokio::io::duplex(64 * 1024);
        let meter = Arc::new(Meter::default());
        let mut io = IdleTimeout::metered(ours, Duration::from_secs(60), meter.clone());
        // 1,000 bytes/s over 200 ms windows: 200 bytes per window.
        let watchdog = tokio::spawn(enforce_min_rate(
            meter.clone(),
            1_000,
            Duration::from_millis(200),
        ));
        let reader = tokio::spawn(async move {
            let mut sink = vec![0u8; 4096];
            while tokio::io::AsyncReadExt::read(&mut peer, &mut sink)
                .await
                .is_ok_and(|n| n > 0)
            {}
        });
        // Fast: 2,000 bytes at a time, as fast as the reader takes them, for several windows.
        let fast_until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < fast_until {
            io.write_all(&[1u8; 2000]).await.expect("write");
            tokio::task::yield_now().await;
        }
        assert!(!watchdog.is_finished(), "a fast download is not cut");
        // Then a trickle: a byte now and then, which the 60 s idle timeout would never cut.
        tokio::select! {
            _ = meter.cut_requested() => {}
            _ = async {
                loop {
                    io.write_all(&[1u8]).await.expect("write");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            } => {}
        }
        watchdog.await.expect("the watchdog ends once it cut");
        reader.abort();
    }

    #[tokio::test]
    async fn a_moving_stream_is_not_cut() {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut io = IdleTimeout::new(ours, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut sink)
                .await
                .map(|_| sink.len())
        });
        // Steady progress for longer than the timeout.
        for _ in 0..40 {
            io.write_all(&[1u8; 512])
                .await
                .expect("write while the peer reads");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        io.shutdown().await.expect("shutdown");
        drop(io);
        assert_eq!(reader.await.expect("reader").expect("read"), 40 * 512);
    }
}
