//! The fakes that do not move: button, switch, sensor and generic.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::{History, lock};
use crate::resource::{Button, Component, Object, ResourceError, Result, Sensor, Switch};

/// For models that take no attributes: any attribute is an error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoAttributes {}

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
        super::do_command(&self.history, command)
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

impl FakeSwitchAttributes {
    /// Checks values serde cannot.
    pub fn validate(&self) -> std::result::Result<(), String> {
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
        super::do_command(&self.history, command)
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

/// Attributes of a fake sensor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeSensorAttributes {
    /// Mean temperature in °C (default 21).
    #[serde(default = "default_temperature")]
    pub temperature_c: f64,
}

fn default_temperature() -> f64 {
    21.0
}

impl FakeSensorAttributes {
    /// Checks values serde cannot.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !self.temperature_c.is_finite() {
            return Err("temperature_c must be a finite number".into());
        }
        Ok(())
    }
}

/// A simulated environment sensor: temperature and humidity drift slowly with time, and every
/// reading carries its sequence number and the sensor's uptime.
#[derive(Debug)]
pub struct FakeSensor {
    started: Instant,
    mean_temperature: f64,
    samples: AtomicU64,
    history: History,
}

impl FakeSensor {
    /// A sensor that starts now.
    pub fn new(name: &str, attributes: &FakeSensorAttributes) -> Self {
        Self {
            started: Instant::now(),
            mean_temperature: attributes.temperature_c,
            samples: AtomicU64::new(0),
            history: History::new(name),
        }
    }
}

#[async_trait]
impl Component for FakeSensor {
    async fn do_command(&self, command: Object) -> Result<Object> {
        super::do_command(&self.history, command)
    }
}

#[async_trait]
impl Sensor for FakeSensor {
    async fn readings(&self, _extra: &Object) -> Result<Object> {
        let t = self.started.elapsed().as_secs_f64();
        let phase = t * std::f64::consts::TAU / 60.0;
        let sample = self.samples.fetch_add(1, Ordering::Relaxed) + 1;
        let mut o = Object::new();
        o.insert(
            "temperature_c".into(),
            json!(self.mean_temperature + 1.5 * phase.sin()),
        );
        o.insert("humidity_pct".into(), json!(45.0 + 5.0 * phase.cos()));
        o.insert("uptime_s".into(), json!(t));
        o.insert("sample".into(), json!(sample));
        Ok(o)
    }
}

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
        super::do_command(&self.history, command)
    }
}
