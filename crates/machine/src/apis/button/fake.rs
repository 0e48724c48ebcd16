//! The fake button: records every push and counts them.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde_json::json;

use super::Button;
use crate::resource::{Component, Object, Result};
use crate::sim::History;

/// A simulated button: records every push.
#[derive(Debug)]
pub struct FakeButton {
    history: History,
    pushes: AtomicU64,
}

impl FakeButton {
    /// A button never pushed.
    pub fn new(name: &str) -> Self {
        Self {
            history: History::new(name),
            pushes: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl Component for FakeButton {
    async fn do_command(&self, command: Object) -> Result<Object> {
        crate::sim::do_command(&self.history, command)
    }

    async fn status(&self) -> Result<Object> {
        let mut o = Object::new();
        o.insert("pushes".into(), json!(self.pushes.load(Ordering::Relaxed)));
        Ok(o)
    }
}

#[async_trait]
impl Button for FakeButton {
    async fn push(&self, _extra: &Object) -> Result<()> {
        let n = self.pushes.fetch_add(1, Ordering::Relaxed) + 1;
        self.history.record("push", json!({"count": n}));
        Ok(())
    }
}
