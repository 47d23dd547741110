//! A TCP relay that counts the connections made through it that sent something: how often a
//! client tried to reach a server, whatever the server logs (mosquitto logs a failed TLS
//! handshake in one of two ways depending on how far it got, with or without the port, so its
//! log is no count). A connection that sends nothing is not counted: the broker harness of a
//! test running alongside probes the free port it picked, which may be ours.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

pub struct Relay {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Listens on a free loopback port and forwards every connection to `127.0.0.1:<target>`.
    pub fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopping) = (accepted.clone(), stop.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = pipe(client, server, count.clone());
            }
        });
        Relay {
            port,
            accepted,
            stop,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Copies both ways until either side closes, then closes both; counts the client's connection
/// once its first bytes arrive.
fn pipe(client: TcpStream, server: TcpStream, count: Arc<AtomicUsize>) -> io::Result<()> {
    let (client2, server2) = (client.try_clone()?, server.try_clone()?);
    thread::spawn(move || {
        let mut client = client;
        let mut server = server;
        let mut first = [0u8; 4096];
        match client.read(&mut first) {
            Ok(n) if n > 0 => {
                count.fetch_add(1, Ordering::SeqCst);
                if server.write_all(&first[..n]).is_ok() {
                    copy_then_close(client, server);
                    return;
                }
            }
            _ => {}
        }
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    });
    thread::spawn(move || copy_then_close(server2, client2));
    Ok(())
}

fn copy_then_close(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
