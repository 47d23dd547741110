//! The MQTT session task: connect (plain or mutual TLS), reconnect with backoff, publish
//! queued events, route incoming updates, keep the device's status topic current.
//!
//! An event leaves the outbox only when the broker's PUBACK for the publish that carried it
//! arrives. The session never waits on the door: decisions happen elsewhere and reach this task
//! only through the outbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use acceso_protocol::{Topics, MAX_PAYLOAD_BYTES};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::tls::{explain, find_rustls, TlsTrouble};
use super::updates::Inbound;
use super::window::Window;
use crate::observe::{Component, HealthState, Reporter};
use crate::store::SharedStore;

/// At most this many unacknowledged publishes (AWS IoT Core's limit is 100).
const MAX_IN_FLIGHT: usize = 100;
/// Events are handed over in batches of at least this many (or when nothing is in flight),
/// so a steady stream of PUBACKs does not turn into one outbox read per event.
const REFILL_AT: usize = MAX_IN_FLIGHT / 4;
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
    /// The device id: client id (= AWS IoT thing name) and status topic.
    pub device: String,
    pub host: String,
    pub port: u16,
    pub keepalive: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub stable_after: Duration,
    pub topics: Topics,
    /// Mutual TLS, if configured.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl LinkSettings {
    /// The client and its event loop, configured for this link.
    pub fn connect(&self) -> (AsyncClient, EventLoop) {
        let mut opts = MqttOptions::new(&self.device, &self.host, self.port);
        opts.set_keep_alive(self.keepalive);
        // A persistent session: the broker keeps QoS 1 updates published while we are away.
        opts.set_clean_session(false);
        opts.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        opts.set_inflight(MAX_IN_FLIGHT as u16);
        // Updates are acknowledged only after they are applied (or rejected) for good.
        opts.set_manual_acks(true);
        opts.set_last_will(LastWill::new(
            self.topics.status_of(&self.device),
            status_payload(&self.device, "offline", None),
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(tls) = &self.tls {
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        AsyncClient::new(opts, 2 * MAX_IN_FLIGHT)
    }
}

fn status_payload(device: &str, state: &str, extra: Option<serde_json::Value>) -> Vec<u8> {
    let mut v = json!({ "device": device, "state": state, "time": jiff::Timestamp::now() });
    if let (Some(serde_json::Value::Object(extra)), Some(obj)) = (extra, v.as_object_mut()) {
        obj.extend(extra);
    }
    v.to_string().into_bytes()
}

/// Runs the session until `cancel`.
#[allow(clippy::too_many_arguments)]
pub async fn run_link(
    settings: LinkSettings,
    client: AsyncClient,
    mut eventloop: EventLoop,
    store: SharedStore,
    updates: mpsc::UnboundedSender<Inbound>,
    mut sync_requests: mpsc::UnboundedReceiver<Vec<u8>>,
    reporter: Reporter,
    cancel: CancellationToken,
) {
    let logs = settings.topics.logs();
    let updates_topic = settings.topics.updates();
    let sync_topic = settings.topics.sync_for(&settings.device);
    let sync_request_topic = settings.topics.sync_request();
    let mut requests_open = true;
    let status_topic = settings.topics.status_of(&settings.device);
    let mut window = Window::new(MAX_IN_FLIGHT);
    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut backoff = Backoff::new(
        settings.reconnect_min,
        settings.reconnect_max,
        settings.stable_after,
        seed,
    );
    let mut connected = false;
    // Whether the outbox may hold events not yet handed over in this session.
    let mut maybe_more = false;
    let mut last_error: Option<String> = None;
    // The detail of a clock problem this link reported (a broker certificate not valid yet).
    let mut clock_blamed: Option<String> = None;
    // Subscribed in this session: the status topic is ours to update.
    let mut subscribed = false;
    let mut published_health = None;
    // Acknowledged events leave the outbox on their own task, many per transaction.
    let (acked, acked_rx) = mpsc::unbounded_channel();
    let deleter = tokio::spawn(delete_acked(store.clone(), acked_rx, reporter.clone()));

    loop {
        let refill = window.room() >= REFILL_AT || (window.in_flight() == 0 && window.room() > 0);
        if connected && maybe_more && refill {
            maybe_more = hand_over(&client, &store, &mut window, &logs, &reporter).await;
        }
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = store.event_queued() => {
                maybe_more = true;
                continue;
            }
            r = sync_requests.recv(), if requests_open => {
                match r {
                    // QoS 1, but nothing waits for its PUBACK: an unanswered request is asked
                    // again by the consumer. Not connected: dropped, and asked on connect.
                    Some(payload) if connected => {
                        if client
                            .try_publish(&sync_request_topic, QoS::AtLeastOnce, false, payload)
                            .is_ok()
                        {
                            window.handed_other();
                        }
                    }
                    Some(_) => {}
                    None => requests_open = false,
                }
                continue;
            }
            _ = reporter.board().changed() => {
                if subscribed {
                    publish_status(&client, &store, &settings, &reporter, &mut window, &mut published_health).await;
                }
                continue;
            }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                // The broker's certificate is good for our clock now: take back a clock problem
                // this link reported, unless the clock's own judgement has replaced it since.
                if let Some(blamed) = clock_blamed.take() {
                    let still = reporter
                        .board()
                        .snapshot()
                        .get(&Component::Clock)
                        .is_some_and(|h| h.detail == blamed);
                    if still {
                        reporter.health(
                            Component::Clock,
                            HealthState::Ok,
                            "the broker's certificate is valid for this clock now",
                        );
                    }
                }
                connected = true;
                maybe_more = true;
                last_error = None;
                backoff.connected(Instant::now());
                window.connected(ack.session_present);
                // Subscribe after every CONNACK: without a session the broker forgot it.
                let filters = [&updates_topic, &sync_topic]
                    .map(|t| rumqttc::SubscribeFilter::new(t.to_string(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(filters) {
                    tracing::error!(
                        "cannot queue subscription to {updates_topic} and {sync_topic}: {e}"
                    );
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
                        format!("broker refused the subscription to {updates_topic} or {sync_topic}: user updates will not arrive (check the device policy)"),
                    );
                } else {
                    reporter.health(
                        Component::Broker,
                        HealthState::Ok,
                        format!(
                            "connected to {}:{}, subscribed to {updates_topic} and {sync_topic}",
                            settings.host, settings.port
                        ),
                    );
                    subscribed = true;
                    published_health = None;
                    if updates.send(Inbound::Connected).is_err() {
                        break;
                    }
                    publish_status(
                        &client,
                        &store,
                        &settings,
                        &reporter,
                        &mut window,
                        &mut published_health,
                    )
                    .await;
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(seq) = window.acked(ack.pkid) {
                    // The deleter lives as long as this task holds the sender.
                    let _ = acked.send(seq);
                    maybe_more = true;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let inbound = if publish.topic == updates_topic {
                    Some(Inbound::Update(publish))
                } else if publish.topic == sync_topic {
                    Some(Inbound::Sync(publish))
                } else {
                    if let Err(e) = client.try_ack(&publish) {
                        tracing::warn!("cannot ack a message on {}: {e}", publish.topic);
                    }
                    None
                };
                // The consumer acknowledges it once applied; if it is gone we are stopping.
                if let Some(inbound) = inbound {
                    if updates.send(inbound).is_err() {
                        break;
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => window.written(pkid),
            Ok(_) => {}
            Err(e) => {
                let (component, text) = describe(&e);
                let wait = backoff.failed(Instant::now());
                if connected || last_error.as_deref() != Some(text.as_str()) {
                    let detail = format!(
                        "{}:{}: {text}; events stay queued, retrying in {} ms",
                        settings.host,
                        settings.port,
                        wait.as_millis()
                    );
                    if component == Component::Clock {
                        clock_blamed = Some(detail.clone());
                    }
                    reporter.health(component, HealthState::Degraded, detail);
                }
                connected = false;
                subscribed = false;
                last_error = Some(text);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
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
                            let _ = acked.send(seq);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => window.written(pkid),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
        .await;
        // A clean DISCONNECT cancels the last will: say offline ourselves, then goodbye.
        let offline = status_payload(&settings.device, "offline", None);
        let _ = client.try_publish(&status_topic, QoS::AtMostOnce, true, offline);
        if client.try_disconnect().is_ok() {
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
    // Every acknowledged event leaves the outbox before the task ends.
    drop(acked);
    if tokio::time::timeout(STOP_GRACE, deleter).await.is_err() {
        tracing::error!("acknowledged events were not removed from the outbox within {STOP_GRACE:?}; they will be sent again");
    }
}

/// Removes acknowledged events from the outbox: whatever acknowledgements piled up during one
/// transaction go in the next, so under load one disk sync covers many events.
async fn delete_acked(
    store: SharedStore,
    mut acked: mpsc::UnboundedReceiver<u64>,
    reporter: Reporter,
) {
    while let Some(first) = acked.recv().await {
        let mut seqs = vec![first];
        while let Ok(seq) = acked.try_recv() {
            seqs.push(seq);
        }
        if let Err(e) = store.call(move |s| s.delete_acked(&seqs)).await {
            // They stay queued and are sent again after a restart; the cloud deduplicates.
            reporter.health(Component::Store, HealthState::Failed, e.to_string());
        }
    }
}

/// What the status message last published said, to skip repeats.
type StatusKey = (BTreeMap<Component, HealthState>, Option<u64>);

/// Publishes the retained status message (online, applied update version, events queued, the
/// health of every component) unless states and version are what was last published.
async fn publish_status(
    client: &AsyncClient,
    store: &SharedStore,
    settings: &LinkSettings,
    reporter: &Reporter,
    window: &mut Window,
    published: &mut Option<StatusKey>,
) {
    let health = reporter.board().snapshot();
    let facts = store
        .call(|s| {
            Ok((
                s.applied_version()?,
                s.queued_count()?,
                s.rejected_signatures()?,
            ))
        })
        .await
        .ok();
    let key: StatusKey = (
        health.iter().map(|(c, h)| (*c, h.state)).collect(),
        facts.map(|(v, _, _)| v),
    );
    if published.as_ref() == Some(&key) {
        return;
    }
    let mut extra = json!({ "health": health });
    if let (Some((version, queued, refused)), Some(obj)) = (facts, extra.as_object_mut()) {
        obj.insert("applied_version".into(), version.into());
        obj.insert("events_queued".into(), queued.into());
        obj.insert("rejected_signatures".into(), refused.into());
    }
    let payload = status_payload(&settings.device, "online", Some(extra));
    let topic = settings.topics.status_of(&settings.device);
    if client
        .try_publish(topic, QoS::AtLeastOnce, true, payload)
        .is_ok()
    {
        window.handed_other();
        *published = Some(key);
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
        // Sending an event over the payload limit would kill the connection: it stays queued
        // and reported, and never holds up the events behind it.
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

/// What a connection error means, and which component it points at.
fn describe(e: &ConnectionError) -> (Component, String) {
    if let Some(tls) = find_rustls(e) {
        return match explain(tls) {
            TlsTrouble::Clock(text) => (Component::Clock, text),
            TlsTrouble::Certificate(text) => (Component::Broker, text),
        };
    }
    let text = match e {
        ConnectionError::Io(io) => format!("network error: {io}"),
        ConnectionError::ConnectionRefused(code) => {
            format!("broker refused the connection: {code:?}")
        }
        ConnectionError::NetworkTimeout => "connection timed out".into(),
        other => other.to_string(),
    };
    (Component::Broker, text)
}
