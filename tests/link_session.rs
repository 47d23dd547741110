//! The MQTT session's behaviour when the broker says no: a refused subscription, and a
//! second device with the same client id (each connection kicks the other right after CONNACK).

mod support;

use std::time::Duration;

use acceso::observe::{Component, HealthState, Observation};
use support::door::TestDoor;
use support::mosquitto::Mosquitto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A broker that accepts the connection and refuses every subscription with SUBACK 0x80, as
/// AWS IoT Core does when the device's policy does not allow it. (mosquitto 2.0 cannot stand
/// in here: for MQTT 3.1.1 clients it grants a subscription its ACL denies and then delivers
/// nothing.) A few bytes of MQTT 3.1.1 on a real socket.
async fn refusing_broker() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let Some((kind, body)) = read_packet(&mut sock).await else {
                        return;
                    };
                    let reply: Vec<u8> = match kind >> 4 {
                        1 => vec![0x20, 0x02, 0x00, 0x00], // CONNECT -> CONNACK accepted
                        8 => vec![0x90, 0x03, body[0], body[1], 0x80], // SUBSCRIBE -> failure
                        12 => vec![0xD0, 0x00],            // PINGREQ -> PINGRESP
                        3 if kind & 0x06 != 0 => {
                            // QoS 1 PUBLISH -> PUBACK with its packet id
                            let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
                            vec![0x40, 0x02, body[2 + topic_len], body[3 + topic_len]]
                        }
                        _ => continue,
                    };
                    if sock.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// One MQTT packet: its first byte and its body.
async fn read_packet(sock: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let kind = sock.read_u8().await.ok()?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = sock.read_u8().await.ok()?;
        len |= ((b & 0x7F) as usize) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0; len];
    sock.read_exact(&mut body).await.ok()?;
    Some((kind, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_to_updates_is_a_health_alarm() {
    let port = refusing_broker().await;
    let mut door = TestDoor::start(port, 1000).await;
    let detail = door
        .expect("a refused subscription", |o| match o {
            Observation::Health {
                component: Component::Broker,
                state: HealthState::Failed,
                detail,
            } => Some(detail.clone()),
            _ => None,
        })
        .await;
    assert!(detail.contains("refused the subscription"), "{detail}");
    assert!(detail.contains("acceso/updates"), "{detail}");
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_with_one_client_id_back_off_instead_of_fighting_in_a_tight_loop() {
    let broker = Mosquitto::start();
    let mut a = TestDoor::start_with(broker.port(), |c| c.broker.reconnect_max_ms = 2000).await;
    a.connected().await;
    let mut b = TestDoor::start_with(broker.port(), |c| c.broker.reconnect_max_ms = 2000).await;
    b.connected().await;
    let connects = || {
        broker
            .log()
            .lines()
            .filter(|l| l.contains("New client connected") && l.contains(" as test-door "))
            .count()
    };
    let before = connects();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = connects() - before;
    // Each connection dies right after its CONNACK, so the backoff must not reset: both
    // doors wait 0.1-2 s between attempts. Without the backoff this would be hundreds.
    assert!(
        (2..=24).contains(&during),
        "{during} connections in 5 s\n{}",
        broker.log()
    );
    a.stop().await;
    b.stop().await;
}
