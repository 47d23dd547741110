//! The control task: credentials and door inputs in; decisions, the lock and events out.
//! Decide, then actuate, then hand the event to the writer: the lock never waits on disk or
//! network.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acceso_protocol::{AccessEvent, CardUid, Method, Outcome, Reason};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::access::{decide_card, decide_face, DoorRules, FaceMatch, Judgement, UserIndex};
use crate::clock::{Clock, WallTime};
use crate::door::{DoorAction, DoorMachine, DoorTiming, LockState, Wiring};
use crate::face::pipeline::FaceSeen;
use crate::factors::{Factor, TwoFactor, TwoFactorEvent};
use crate::hw::{HwError, Relay};
use crate::inputs::InputEvent;
use crate::observe::{Component, HealthState, Observation, Reporter};
use crate::reader::Presentation;
use crate::service::Heartbeat;

/// The lock: the relay and how it is wired. Shared with the panic guard.
#[derive(Clone)]
pub struct Lock {
    relay: Arc<Mutex<Box<dyn Relay>>>,
    wiring: Wiring,
}

impl Lock {
    pub fn new(relay: Box<dyn Relay>, wiring: Wiring) -> Lock {
        Lock {
            relay: Arc::new(Mutex::new(relay)),
            wiring,
        }
    }

    pub fn drive(&self, state: LockState) -> Result<(), HwError> {
        let mut relay = self.relay.lock().unwrap_or_else(|e| e.into_inner());
        relay.set(self.wiring.level(state))
    }

    /// From the panic hook: never block (the panicking thread may hold the lock).
    pub fn drive_from_panic(&self, state: LockState) {
        let relay = match self.relay.try_lock() {
            Ok(r) => Some(r),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(mut relay) = relay {
            let _ = relay.set(self.wiring.level(state));
        }
    }
}

/// Everything an event needs besides what happened.
pub struct Decider {
    pub device: String,
    pub rules: DoorRules,
    pub boot_id: String,
    pub clock: Arc<dyn Clock>,
    pub index: watch::Receiver<Arc<UserIndex>>,
}

/// A credential as read: what it is, and when.
pub enum Credential<'a> {
    Card(&'a Presentation),
    Face(&'a FaceSeen),
}

/// What a credential came to: an event to report now, or a first factor to hold.
enum Judged {
    Report(AccessEvent, Observation),
    FirstFactor(Factor),
}

impl Decider {
    /// The event of a decision made at wall-clock time `now`.
    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        now: WallTime,
        method: Method,
        card_uid: Option<CardUid>,
        user_id: Option<String>,
        reason: Reason,
        face_score: Option<f32>,
        since: Instant,
    ) -> (AccessEvent, Observation) {
        let latency_us = since.elapsed().as_micros() as u64;
        let event = AccessEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            device: self.device.clone(),
            door: self.rules.name.clone(),
            seq: 0, // assigned by the outbox
            boot_id: self.boot_id.clone(),
            time: now.time,
            time_trusted: now.trusted,
            method,
            card_uid: card_uid.clone(),
            user_id: user_id.clone(),
            face_score,
            decision: reason.outcome(),
            reason,
            latency_us,
            dropped: None,
        };
        let obs = Observation::Decision {
            method,
            card_uid,
            user_id,
            decision: reason.outcome(),
            reason,
            face_score,
            latency_us,
        };
        (event, obs)
    }

    /// An event about the door itself or the exit button, now.
    fn report(&self, method: Method, reason: Reason, since: Instant) -> (AccessEvent, Observation) {
        self.event(self.clock.now(), method, None, None, reason, None, since)
    }

    fn judge(&self, credential: Credential) -> Judged {
        let index = self.index.borrow().clone();
        let now = self.clock.now();
        let (judgement, method, card_uid, face_score, at) = match credential {
            Credential::Card(p) => (
                decide_card(&index, &p.uid, &self.rules, now),
                Method::Card,
                Some(p.uid.clone()),
                None,
                p.at,
            ),
            Credential::Face(f) => (
                decide_face(
                    // The user as they are now: an update may have changed or removed them
                    // since the frame was matched.
                    match (
                        f.user_id.as_deref().map(|id| index.user_by_id(id)),
                        f.ambiguous,
                    ) {
                        (Some(Some(u)), _) => FaceMatch::User(u),
                        (Some(None), _) => FaceMatch::Stranger,
                        (None, true) => FaceMatch::Ambiguous,
                        (None, false) => FaceMatch::Stranger,
                    },
                    &self.rules,
                    now,
                ),
                Method::Face,
                None,
                f.score,
                f.at,
            ),
        };
        match judgement {
            Judgement::Final(d) => {
                let (e, o) = self.event(now, method, card_uid, d.user_id, d.reason, face_score, at);
                Judged::Report(e, o)
            }
            Judgement::FirstFactor { user_id } => Judged::FirstFactor(Factor {
                user_id,
                method,
                card_uid,
                face_score,
                at,
            }),
        }
    }

    /// The event of a two-factor outcome.
    fn two_factor(&self, e: TwoFactorEvent) -> (AccessEvent, Observation) {
        let now = self.clock.now();
        match e {
            TwoFactorEvent::Both { card, face } => {
                let since = card.at.max(face.at);
                self.event(
                    now,
                    Method::CardAndFace,
                    card.card_uid,
                    Some(card.user_id),
                    Reason::Granted,
                    face.face_score,
                    since,
                )
            }
            TwoFactorEvent::Mismatch { card, face } => {
                let since = card.at.max(face.at);
                tracing::warn!(
                    "card of {} and face of {} at one door",
                    card.user_id,
                    face.user_id
                );
                self.event(
                    now,
                    Method::CardAndFace,
                    card.card_uid,
                    Some(card.user_id),
                    Reason::FactorsMismatch,
                    face.face_score,
                    since,
                )
            }
            TwoFactorEvent::Missing(f) => self.event(
                now,
                f.method,
                f.card_uid,
                Some(f.user_id),
                Reason::SecondFactorMissing,
                f.face_score,
                f.at,
            ),
        }
    }
}

pub struct Control {
    pub decider: Decider,
    pub lock: Lock,
    pub timing: DoorTiming,
    pub presentations: mpsc::Receiver<Presentation>,
    /// Closed when the door has no camera.
    pub faces: mpsc::Receiver<FaceSeen>,
    pub inputs: mpsc::Receiver<InputEvent>,
    pub events: mpsc::Sender<AccessEvent>,
    pub reporter: Reporter,
    /// A card and a face of one user within this long, on a two-factor door or for a
    /// two-factor user.
    pub two_factor_window: Duration,
    /// Beaten on every round of the loop (at least every [`HEARTBEAT_EVERY`]): the
    /// watchdog's pings stop when this loop is stuck.
    pub heartbeat: Heartbeat,
}

/// The control loop wakes at least this often, to beat its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);

impl Control {
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut door = DoorMachine::new(self.timing);
        let mut factors = TwoFactor::new(self.two_factor_window);
        // A closed channel (no reader, no camera, no inputs wired, or a thread that ended)
        // disables its branch: polling a closed receiver again would return at once, for ever.
        let (mut cards_open, mut faces_open, mut inputs_open) = (true, true, true);
        let mut alive = tokio::time::interval(HEARTBEAT_EVERY);
        alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.heartbeat.beat();
            let deadline = door.deadline();
            let waiting = factors.deadline();
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = alive.tick() => {}
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let now = Instant::now();
                    let actions = door.tick(now);
                    self.act(actions, now).await;
                }
                _ = sleep_until(waiting), if waiting.is_some() => {
                    if let Some(e) = factors.expire(Instant::now()) {
                        let (event, obs) = self.decider.two_factor(e);
                        self.report(event, obs).await;
                    }
                }
                p = self.presentations.recv(), if cards_open => {
                    let Some(p) = p else {
                        cards_open = false;
                        continue;
                    };
                    let judged = self.decider.judge(Credential::Card(&p));
                    self.judged(&mut door, &mut factors, judged).await;
                }
                f = self.faces.recv(), if faces_open => {
                    let Some(f) = f else {
                        faces_open = false;
                        continue;
                    };
                    let judged = self.decider.judge(Credential::Face(&f));
                    self.judged(&mut door, &mut factors, judged).await;
                }
                input = self.inputs.recv(), if inputs_open => {
                    let Some(input) = input else {
                        inputs_open = false;
                        continue;
                    };
                    let now = Instant::now();
                    match input {
                        InputEvent::ExitPressed => {
                            let actions = door.exit_request(now);
                            self.act(actions, now).await;
                            let (event, obs) =
                                self.decider.report(Method::ExitButton, Reason::ExitRequest, now);
                            self.report(event, obs).await;
                        }
                        InputEvent::Door { open } => {
                            let actions = door.door(open, now);
                            self.act(actions, now).await;
                        }
                    }
                }
            }
        }
        // Stop: drive the line even if the machine thinks it is locked.
        let was_unlocked = !door.lock_now().is_empty();
        if let Err(e) = self.lock.drive(LockState::Locked) {
            self.reporter
                .health(Component::Relay, HealthState::Failed, e.to_string());
        }
        if was_unlocked {
            self.reporter.emit(Observation::Relay {
                state: LockState::Locked,
            });
        }
    }

    /// A credential was judged: decided now, or a first factor held (which may complete or
    /// displace another).
    async fn judged(&mut self, door: &mut DoorMachine, factors: &mut TwoFactor, judged: Judged) {
        match judged {
            Judged::Report(event, obs) => self.decided(door, event, obs).await,
            Judged::FirstFactor(f) => {
                self.reporter.emit(Observation::FirstFactor {
                    method: f.method,
                    card_uid: f.card_uid.clone(),
                    user_id: f.user_id.clone(),
                    face_score: f.face_score,
                });
                for e in factors.offer(f) {
                    let (event, obs) = self.decider.two_factor(e);
                    self.decided(door, event, obs).await;
                }
            }
        }
    }

    /// A credential was decided: unlock if granted (before anything else), then report.
    async fn decided(&mut self, door: &mut DoorMachine, event: AccessEvent, obs: Observation) {
        if event.decision == Outcome::Granted {
            let now = Instant::now();
            let actions = door.grant(now);
            self.act(actions, now).await;
        }
        self.report(event, obs).await;
    }

    async fn act(&mut self, actions: Vec<DoorAction>, since: Instant) {
        for action in actions {
            match action {
                DoorAction::Lock(state) => {
                    if let Err(e) = self.lock.drive(state) {
                        self.reporter
                            .health(Component::Relay, HealthState::Failed, e.to_string());
                    }
                    self.reporter.emit(Observation::Relay { state });
                }
                DoorAction::Report(reason) => {
                    let (event, obs) = self.decider.report(Method::DoorContact, reason, since);
                    self.report(event, obs).await;
                }
            }
        }
    }

    async fn report(&self, event: AccessEvent, obs: Observation) {
        self.reporter.emit(obs);
        if self.events.send(event).await.is_err() {
            tracing::error!("event writer is gone; event not queued");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
