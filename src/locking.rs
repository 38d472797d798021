//! Locking the small in-memory state gatehouse shares between tasks (caches, budgets, counters).
//!
//! A poisoned mutex only means another task panicked while holding it; the state behind every
//! lock here is updated whole (a value replaced, a counter moved), never left half-written, so
//! carrying on with it is right and turning one panic into a panic of every later caller is not.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, carrying on after a panic in another holder.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
