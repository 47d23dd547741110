//! Exercises the mosquitto test harness in `tests/support/mosquitto.rs`: publish/subscribe
//! round-trips, stopping the broker, and restarting it on the same port.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rumqttc::{Publish, QoS};
use support::mosquitto::{publisher, subscriber, Mosquitto};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;

const TOPIC: &str = "acceso/test/harness";
const STEP: Duration = Duration::from_secs(10);

async fn recv(rx: &mut UnboundedReceiver<Publish>) -> Publish {
    timeout(STEP, rx.recv())
        .await
        .expect("timed out waiting for a publish")
        .expect("subscriber channel closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_stop_restart() {
    let mut broker = Mosquitto::start();
    let (host, port) = (broker.host(), broker.port());
    assert_eq!(host, "127.0.0.1");
    assert!(broker.log().contains("running"), "log:\n{}", broker.log());

    let (_sub, mut rx) = timeout(STEP, subscriber(host, port, TOPIC))
        .await
        .expect("subscriber timed out");
    let publ = timeout(STEP, publisher(host, port))
        .await
        .expect("publisher timed out");

    for i in 0..3 {
        timeout(
            STEP,
            publ.publish(TOPIC, QoS::AtLeastOnce, false, format!("msg-{i}")),
        )
        .await
        .expect("publish timed out")
        .expect("publish failed");
    }
    for i in 0..3 {
        let p = recv(&mut rx).await;
        assert_eq!(p.topic, TOPIC);
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert_eq!(&p.payload[..], format!("msg-{i}").as_bytes());
    }

    broker.stop();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "port {port} still accepts after stop()"
    );

    broker.restart();
    assert_eq!(broker.port(), port, "restart must reuse the port");
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok());

    // The existing clients reconnect on their own and the subscriber re-subscribes after
    // the new CONNACK; until that has happened a publish may be dropped, so keep
    // publishing until one round-trips.
    let round_trip = async {
        for i in 0u32.. {
            let payload = format!("after-restart-{i}");
            publ.publish(TOPIC, QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("publish after restart failed");
            if let Ok(Some(p)) = timeout(Duration::from_millis(300), rx.recv()).await {
                assert!(
                    p.payload.starts_with(b"after-restart-"),
                    "unexpected payload {:?}",
                    p.payload
                );
                return;
            }
        }
    };
    timeout(Duration::from_secs(20), round_trip)
        .await
        .unwrap_or_else(|_| panic!("no round-trip after restart\n{}", broker.log()));

    // A fresh pair of clients works against the restarted broker too.
    let (_sub2, mut rx2) = timeout(STEP, subscriber(host, port, "acceso/test/fresh"))
        .await
        .expect("second subscriber timed out");
    let publ2 = timeout(STEP, publisher(host, port))
        .await
        .expect("second publisher timed out");
    timeout(
        STEP,
        publ2.publish("acceso/test/fresh", QoS::AtLeastOnce, false, "fresh"),
    )
    .await
    .expect("publish timed out")
    .expect("publish failed");
    assert_eq!(&recv(&mut rx2).await.payload[..], b"fresh");

    broker.stop();
}
