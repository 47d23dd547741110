//! The simulator's network: an embedded MQTT broker (rumqttd, in-process) and a proxy in front
//! of it that can cut the agent off, as a network outage or a broker restart would.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream as TokioStream};
use tokio::task::JoinHandle;

use super::SimError;

/// A free loopback port, as the kernel hands them out.
pub fn free_port() -> Result<u16, SimError> {
    let l = StdListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| SimError::Broker(format!("cannot find a free loopback port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| SimError::Broker(e.to_string()))?
        .port())
}

fn wait_accepting(port: u16, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Starts rumqttd on a free loopback port and returns the port once it accepts connections.
/// rumqttd has no shutdown: the broker lives until the process ends.
pub fn start_embedded_broker() -> Result<u16, SimError> {
    let port = free_port()?;
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: 256 * 1024,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "sim".into(),
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    // RouterConfig::default() refuses every client (max_connections 0) and a segment under
    // 1 KB panics the router: set every field.
    let router = rumqttd::RouterConfig {
        max_connections: 64,
        max_outgoing_packet_count: 200,
        max_segment_size: 16 * 1024 * 1024,
        max_segment_count: 10,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let config = rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("sim".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("sim-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!("embedded broker stopped: {e}");
            }
        })
        .map_err(|e| SimError::Broker(format!("cannot start the embedded broker: {e}")))?;
    if !wait_accepting(port, Duration::from_secs(10)) {
        return Err(SimError::Broker(format!(
            "embedded broker did not accept connections on 127.0.0.1:{port} within 10 s"
        )));
    }
    Ok(port)
}

/// A TCP proxy on its own loopback port. `down` closes every connection and refuses new ones;
/// `up` accepts again on the same port.
pub struct CutProxy {
    port: u16,
    upstream: u16,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl CutProxy {
    pub async fn start(upstream: u16) -> Result<CutProxy, SimError> {
        let mut proxy = CutProxy {
            port: free_port()?,
            upstream,
            accept: None,
            conns: Arc::default(),
        };
        proxy.up().await?;
        Ok(proxy)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_up(&self) -> bool {
        self.accept.is_some()
    }

    pub async fn up(&mut self) -> Result<(), SimError> {
        if self.accept.is_some() {
            return Ok(());
        }
        let listener = bind_retrying(self.port).await?;
        let upstream = self.upstream;
        let conns = self.conns.clone();
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    let Ok(mut server) =
                        TokioStream::connect((Ipv4Addr::LOCALHOST, upstream)).await
                    else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                let mut conns = conns.lock().unwrap_or_else(|e| e.into_inner());
                conns.retain(|t| !t.is_finished());
                conns.push(task);
            }
        }));
        Ok(())
    }

    pub fn down(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for conn in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            conn.abort();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.down();
    }
}

async fn bind_retrying(port: u16) -> Result<TcpListener, SimError> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() >= until => {
                return Err(SimError::Broker(format!(
                    "cannot listen on 127.0.0.1:{port} again: {e}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
