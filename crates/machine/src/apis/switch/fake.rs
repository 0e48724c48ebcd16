//! The fake switch: a number of labelled positions; records every change.

use std::sync::Mutex;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::Switch;
use crate::resource::{Component, Object, ResourceError, Result};
use crate::sim::History;
use crate::sync::lock;

/// Attributes of a fake switch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeSwitchAttributes {
    /// Number of positions (default 3).
    #[serde(default = "default_positions")]
    pub position_count: u32,
    /// One label per position (default "position 0", "position 1", ...).
    #[serde(default)]
    pub labels: Vec<String>,
}

fn default_positions() -> u32 {
    3
}

impl crate::apis::Attributes for FakeSwitchAttributes {
    fn validate(&self) -> std::result::Result<(), String> {
        if !(2..=64).contains(&self.position_count) {
            return Err(format!(
                "position_count must be between 2 and 64, got {}",
                self.position_count
            ));
        }
        if !self.labels.is_empty() && self.labels.len() != self.position_count as usize {
            return Err(format!(
                "labels must have one entry per position ({}), got {}",
                self.position_count,
                self.labels.len()
            ));
        }
        Ok(())
    }
}

/// A simulated multi-position switch.
#[derive(Debug)]
pub struct FakeSwitch {
    history: History,
    position: Mutex<u32>,
    labels: Vec<String>,
}

impl FakeSwitch {
    /// A switch in position 0.
    pub fn new(name: &str, attributes: &FakeSwitchAttributes) -> Self {
        let labels = if attributes.labels.is_empty() {
            (0..attributes.position_count)
                .map(|i| format!("position {i}"))
                .collect()
        } else {
            attributes.labels.clone()
        };
        Self {
            history: History::new(name),
            position: Mutex::new(0),
            labels,
        }
    }
}

#[async_trait]
impl Component for FakeSwitch {
    async fn do_command(&self, command: Object) -> Result<Object> {
        crate::sim::do_command(&self.history, command)
    }
}

#[async_trait]
impl Switch for FakeSwitch {
    async fn set_position(&self, position: u32, _extra: &Object) -> Result<()> {
        let n = self.labels.len() as u32;
        if position >= n {
            return Err(ResourceError::InvalidArgument(format!(
                "position {position} does not exist; this switch has positions 0 to {}",
                n - 1
            )));
        }
        *lock(&self.position) = position;
        self.history
            .record("set_position", json!({"position": position}));
        Ok(())
    }

    async fn position(&self, _extra: &Object) -> Result<u32> {
        Ok(*lock(&self.position))
    }

    async fn number_of_positions(&self, _extra: &Object) -> Result<(u32, Vec<String>)> {
        Ok((self.labels.len() as u32, self.labels.clone()))
    }
}
