//! The MQTT session task: connect, reconnect, publish queued events, route incoming updates.
//!
//! An event leaves the outbox only when the broker's PUBACK for the publish that carried it
//! arrives. The session never waits on the door: decisions happen elsewhere and reach this task
//! only through the outbox.

use std::sync::Arc;
use std::time::Duration;

use acceso_protocol::{Topics, MAX_PAYLOAD_BYTES};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS,
};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::window::Window;
use crate::observe::{Component, HealthState, Reporter};
use crate::store::SharedStore;

/// At most this many unacknowledged publishes (AWS IoT Core's limit is 100).
const MAX_IN_FLIGHT: usize = 100;
/// How long a graceful stop waits for the acknowledgements of events in flight.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// Room for the MQTT header and topic on top of the largest payload we send.
const MAX_OUTGOING_PACKET: usize = MAX_PAYLOAD_BYTES + 4 * 1024;
/// Incoming packets may be larger than any valid update, so that an oversized one is read and
/// rejected like any bad message instead of killing the connection (rumqttc drops the
/// connection on a packet over its limit).
const MAX_INCOMING_PACKET: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub keepalive: Duration,
    pub reconnect: Duration,
    pub topics: Topics,
}

impl LinkSettings {
    /// The client and its event loop, configured for this link.
    pub fn connect(&self) -> (AsyncClient, EventLoop) {
        let mut opts = MqttOptions::new(&self.client_id, &self.host, self.port);
        opts.set_keep_alive(self.keepalive);
        // A persistent session: the broker keeps QoS 1 updates published while we are away.
        opts.set_clean_session(false);
        opts.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        opts.set_inflight(MAX_IN_FLIGHT as u16);
        // Updates are acknowledged only after they are applied (or rejected) for good.
        opts.set_manual_acks(true);
        AsyncClient::new(opts, 2 * MAX_IN_FLIGHT)
    }
}

/// Runs the session until `cancel`. `queued` is notified whenever an event enters the outbox.
#[allow(clippy::too_many_arguments)]
pub async fn run_link(
    settings: LinkSettings,
    client: AsyncClient,
    mut eventloop: EventLoop,
    store: SharedStore,
    queued: Arc<Notify>,
    updates: mpsc::UnboundedSender<Publish>,
    reporter: Reporter,
    cancel: CancellationToken,
) {
    let logs = settings.topics.logs();
    let updates_topic = settings.topics.updates();
    let mut window = Window::new(MAX_IN_FLIGHT);
    let mut connected = false;
    // Whether the outbox may hold events not yet handed over in this session.
    let mut maybe_more = false;
    let mut last_error: Option<String> = None;

    loop {
        if connected && maybe_more && window.room() > 0 {
            maybe_more = hand_over(&client, &store, &mut window, &logs, &reporter).await;
        }
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = queued.notified() => {
                maybe_more = true;
                continue;
            }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                connected = true;
                maybe_more = true;
                last_error = None;
                window.connected(ack.session_present);
                if let Err(e) = client.try_subscribe(&updates_topic, QoS::AtLeastOnce) {
                    tracing::error!("cannot queue subscription to {updates_topic}: {e}");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                // Healthy means connected and subscribed: only then do updates arrive.
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    reporter.health(
                        Component::Broker,
                        HealthState::Failed,
                        format!("broker refused the subscription to {updates_topic}: user updates will not arrive"),
                    );
                } else {
                    reporter.health(
                        Component::Broker,
                        HealthState::Ok,
                        format!(
                            "connected to {}:{}, subscribed to {updates_topic}",
                            settings.host, settings.port
                        ),
                    );
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(seq) = window.acked(ack.pkid) {
                    if let Err(e) = store.call(move |s| s.delete_queued(seq)).await {
                        reporter.health(Component::Store, HealthState::Failed, e.to_string());
                    }
                    maybe_more = true;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if publish.topic == updates_topic {
                    // The consumer acknowledges it once applied; if it is gone we are stopping.
                    if updates.send(publish).is_err() {
                        break;
                    }
                } else if let Err(e) = client.try_ack(&publish) {
                    tracing::warn!("cannot ack a message on {}: {e}", publish.topic);
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => window.written(pkid),
            Ok(_) => {}
            Err(e) => {
                let text = describe(&e);
                if connected || last_error.as_deref() != Some(text.as_str()) {
                    reporter.health(
                        Component::Broker,
                        HealthState::Degraded,
                        format!(
                            "{}:{}: {text}; events stay queued, retrying",
                            settings.host, settings.port
                        ),
                    );
                }
                connected = false;
                last_error = Some(text);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(settings.reconnect) => {}
                }
            }
        }
    }
    if connected {
        // Let the PUBACKs of what is in flight arrive, so a restart does not resend it.
        let _ = tokio::time::timeout(STOP_GRACE, async {
            while window.in_flight() > 0 {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(seq) = window.acked(ack.pkid) {
                            let _ = store.call(move |s| s.delete_queued(seq)).await;
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => window.written(pkid),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
        .await;
    }
    // Say goodbye so the broker does not publish a will for a clean stop; best effort.
    if connected && client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Hands queued events to the client while the window has room. Returns whether more may wait.
async fn hand_over(
    client: &AsyncClient,
    store: &SharedStore,
    window: &mut Window,
    topic: &str,
    reporter: &Reporter,
) -> bool {
    let (from, room) = (window.next_seq(), window.room());
    let batch = match store.call(move |s| s.queued_from(from, room)).await {
        Ok(batch) => batch,
        Err(e) => {
            reporter.health(
                Component::Store,
                HealthState::Failed,
                format!("cannot read the outbox: {e}"),
            );
            return false;
        }
    };
    let full = batch.len() == room;
    for event in batch {
        // Events are built by us from bounded fields; this cannot trigger, and if it ever did,
        // sending it would kill the connection, so it stays queued and is reported instead.
        if event.payload.len() > MAX_PAYLOAD_BYTES {
            reporter.health(
                Component::Broker,
                HealthState::Failed,
                format!(
                    "event seq {} is {} bytes, over the payload limit; kept in the outbox",
                    event.seq,
                    event.payload.len()
                ),
            );
            window.skip(event.seq);
            continue;
        }
        match client.try_publish(topic, QoS::AtLeastOnce, false, event.payload) {
            Ok(()) => window.handed(event.seq),
            Err(e) => {
                tracing::warn!(
                    "cannot hand event seq {} to the MQTT client: {e}",
                    event.seq
                );
                return true;
            }
        }
    }
    full
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::Io(io) => format!("network error: {io}"),
        ConnectionError::ConnectionRefused(code) => {
            format!("broker refused the connection: {code:?}")
        }
        ConnectionError::NetworkTimeout => "connection timed out".into(),
        other => other.to_string(),
    }
}
