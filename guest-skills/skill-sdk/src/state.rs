//! What a skill keeps between `load` and `handle`: one value per instance
//! in a `thread_local!` cell (a component instance is single-threaded).
//!
//! ```ignore
//! thread_local! { static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) }; }
//! // in load:   skill_sdk::state::set(&STATE, loaded);
//! // in handle: skill_sdk::state::with(&STATE, |l| ...)
//! ```

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::Error;

/// A skill's loaded state.
pub type Cell<T> = LocalKey<RefCell<Option<T>>>;

/// Stores what `load` built (replacing an earlier load's).
pub fn set<T: 'static>(cell: &'static Cell<T>, value: T) {
    cell.with(|c| *c.borrow_mut() = Some(value));
}

/// Runs `f` on the loaded state; `internal` error before `load`.
pub fn with<T: 'static, R>(
    cell: &'static Cell<T>,
    f: impl FnOnce(&T) -> Result<R, Error>,
) -> Result<R, Error> {
    cell.with(|c| {
        let state = c.borrow();
        let loaded = state
            .as_ref()
            .ok_or_else(|| crate::internal("handle called before load"))?;
        f(loaded)
    })
}
