//! The fake generic component: DoCommand only.

use async_trait::async_trait;

use crate::resource::{Component, Object, Result};
use crate::sim::History;

/// A simulated generic component: DoCommand only.
#[derive(Debug)]
pub struct FakeGeneric {
    history: History,
}

impl FakeGeneric {
    /// A generic component.
    pub fn new(name: &str) -> Self {
        Self {
            history: History::new(name),
        }
    }
}

#[async_trait]
impl Component for FakeGeneric {
    async fn do_command(&self, command: Object) -> Result<Object> {
        crate::sim::do_command(&self.history, command)
    }
}
