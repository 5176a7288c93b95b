//! The controller listener and the broker's call to it: length-prefixed JSON frames carrying
//! the messages of [`crate::controller::rpc`], one request and one response per call.

use crate::controller::rpc::{self, RequestEnvelope, ResponseEnvelope};
use crate::controller::Controller;
use crate::protocol::{read_frame, write_frame};
use crate::server::halt::Halt;
use crate::server::signal::Signal;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Frames larger than this close the connection.
const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Connections to the controller listener at once; more are closed as accepted (brokers use
/// one connection per call, so only a flood reaches this).
const CONNECTIONS_MAX: usize = 1_000;
/// A controller connection that sends no whole request for this long is closed (a broker's
/// call sends its request at once).
const REQUEST_WAIT_MS: u64 = 30_000;
/// How often the controller checks broker sessions.
const TICK_INTERVAL_MS: u64 = 100;

async fn read_json<T: for<'de> Deserialize<'de>>(stream: &mut TcpStream) -> std::io::Result<Option<T>> {
    match read_frame(stream, FRAME_BYTES_MAX).await {
        Ok(frame) => serde_json::from_slice(&frame).map(Some).map_err(std::io::Error::other),
        Err(crate::protocol::FrameError::Closed) => Ok(None),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

async fn write_json<T: Serialize>(stream: &mut TcpStream, value: &T) -> std::io::Result<()> {
    let payload = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    write_frame(stream, &frame).await
}

/// Halts the process if the controller's metadata log failed; true if it did.
fn halt_if_log_failed(controller: &Controller, halt: &Halt) -> bool {
    match controller.log_failed() {
        Some(reason) => {
            halt.halt(reason);
            true
        }
        None => false,
    }
}

/// Serves the controller listener until `shutdown`, and fences silent brokers. A failed
/// metadata log halts the process (`halt`): no answer goes out after it.
pub async fn serve(listener: TcpListener, controller: Arc<Mutex<Controller>>, halt: Halt, shutdown: Signal<()>) {
    let ticker = {
        let (controller, halt) = (controller.clone(), halt.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(Duration::from_millis(TICK_INTERVAL_MS)) => {}
                }
                let mut controller = controller.lock().expect("controller lock poisoned");
                if let Err(e) = controller.tick(crate::env::now_ms()) {
                    tracing::error!(error = %e, "controller tick failed");
                }
                if halt_if_log_failed(&controller, &halt) {
                    return;
                }
            }
        })
    };
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if open.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= CONNECTIONS_MAX {
            open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!(%peer, "controller listener: {CONNECTIONS_MAX} connections open, refusing another");
            continue;
        }
        let (controller, halt) = (controller.clone(), halt.clone());
        let shutdown = shutdown.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let request_wait = Duration::from_millis(REQUEST_WAIT_MS);
            loop {
                let request = tokio::select! {
                    biased;
                    _ = shutdown.wait() => break,
                    request = tokio::time::timeout(request_wait, read_json::<RequestEnvelope>(&mut stream)) => request,
                };
                let envelope = match request {
                    Ok(Ok(Some(envelope))) => envelope,
                    Ok(Ok(None)) | Err(_) => break,
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "closing controller connection");
                        break;
                    }
                };
                let response = {
                    let mut controller = controller.lock().expect("controller lock poisoned");
                    let response = rpc::handle(&mut controller, envelope, crate::env::now_ms());
                    if halt_if_log_failed(&controller, &halt) {
                        break;
                    }
                    response
                };
                match tokio::time::timeout(request_wait, write_json(&mut stream, &response)).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
            open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
    let _ = ticker.await;
}

/// Why a controller call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("controller unreachable: {0}")]
    Unreachable(String),
    #[error("controller call timed out after {0:?}")]
    Timeout(Duration),
}

/// One call: connect, send, read the answer, all within `timeout` (the simulator never times a
/// connection out by itself).
pub async fn call(address: &str, envelope: &RequestEnvelope, timeout: Duration) -> Result<ResponseEnvelope, CallError> {
    let exchange = async {
        let mut stream =
            TcpStream::connect(address).await.map_err(|e| CallError::Unreachable(format!("{address}: {e}")))?;
        let _ = stream.set_nodelay(true);
        write_json(&mut stream, envelope).await.map_err(|e| CallError::Unreachable(e.to_string()))?;
        match read_json::<ResponseEnvelope>(&mut stream).await {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(CallError::Unreachable("connection closed".to_string())),
            Err(e) => Err(CallError::Unreachable(e.to_string())),
        }
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| CallError::Timeout(timeout))?
}
