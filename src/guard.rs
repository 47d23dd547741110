//! The panic guard: whatever panics, the lock goes back to its idle state first.
//!
//! A panic in any thread runs the registered guards from the panic hook, before anything else
//! (a panic inside a tokio task would otherwise be caught and leave the relay as it was). The
//! daemon then ends the process so systemd restarts it; the restarted agent drives the lock to
//! idle again at start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

type Guard = Box<dyn Fn() + Send + Sync>;

static GUARDS: Mutex<Vec<(u64, Guard)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(0);
static HOOK: Once = Once::new();

/// Keeps a guard registered; dropping it unregisters the guard.
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        let mut guards = GUARDS.lock().unwrap_or_else(|e| e.into_inner());
        guards.retain(|(id, _)| *id != self.0);
    }
}

/// Runs `guard` on every panic while the returned registration lives.
pub fn on_panic(guard: impl Fn() + Send + Sync + 'static) -> Registration {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            run_guards();
            previous(info);
        }));
    });
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    GUARDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, Box::new(guard)));
    Registration(id)
}

fn run_guards() {
    // try_lock: a panic while the list is being changed must not deadlock the hook.
    let guards = match GUARDS.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for (_, guard) in guards.iter() {
        guard();
    }
}
