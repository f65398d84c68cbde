//! Locking shared in-memory state.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, going on when a thread panicked while holding it: every state kept behind
/// these locks stays consistent between statements, so a panic elsewhere never leaves it half
/// changed, and refusing all later requests would turn one failure into an outage.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
