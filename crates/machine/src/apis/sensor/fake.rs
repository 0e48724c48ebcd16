//! The fake sensor: temperature and humidity that drift slowly with time.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::Sensor;
use crate::resource::{Component, Object, Result};
use crate::sim::History;

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

impl crate::apis::Attributes for FakeSensorAttributes {
    fn validate(&self) -> std::result::Result<(), String> {
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
        crate::sim::do_command(&self.history, command)
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
