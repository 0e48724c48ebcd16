//! The fake gantry: linear axes of configured lengths, each moving at its commanded speed.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::Gantry;
use crate::resource::{Object, ResourceError, Result};
use crate::sim::{Axes, slowest};

/// Attributes of a fake gantry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeGantryAttributes {
    /// Axis lengths in mm (default three axes: 500, 500, 250).
    #[serde(default = "default_lengths")]
    pub lengths_mm: Vec<f64>,
    /// Speed of an axis when the caller gives none, in mm/s (default 200).
    #[serde(default = "default_speed")]
    pub default_speed_mm_per_sec: f64,
}

fn default_lengths() -> Vec<f64> {
    vec![500.0, 500.0, 250.0]
}
fn default_speed() -> f64 {
    200.0
}

impl crate::apis::Attributes for FakeGantryAttributes {
    fn validate(&self) -> std::result::Result<(), String> {
        if self.lengths_mm.is_empty() || self.lengths_mm.len() > 16 {
            return Err("lengths_mm must list between 1 and 16 axes".into());
        }
        if let Some(bad) = self
            .lengths_mm
            .iter()
            .find(|l| !(l.is_finite() && **l > 0.0))
        {
            return Err(format!("lengths_mm must be positive numbers, got {bad}"));
        }
        let v = self.default_speed_mm_per_sec;
        if !(v.is_finite() && v > 0.0) {
            return Err(format!(
                "default_speed_mm_per_sec must be a positive number, got {v}"
            ));
        }
        Ok(())
    }
}

/// A simulated gantry.
#[derive(Debug)]
pub struct FakeGantry {
    axes: Axes,
    lengths: Vec<f64>,
    default_speed: f64,
}

impl FakeGantry {
    /// A gantry at its home position (all axes at 0).
    pub fn new(name: &str, attributes: &FakeGantryAttributes) -> Self {
        Self {
            axes: Axes::new(name, vec![0.0; attributes.lengths_mm.len()]),
            lengths: attributes.lengths_mm.clone(),
            default_speed: attributes.default_speed_mm_per_sec,
        }
    }
}

crate::sim::axes_actuator!(FakeGantry, axes);

#[async_trait]
impl Gantry for FakeGantry {
    async fn position(&self, _extra: &Object) -> Result<Vec<f64>> {
        Ok(self.axes.position())
    }

    async fn move_to_position(
        &self,
        positions_mm: Vec<f64>,
        speeds_mm_per_sec: Vec<f64>,
        _extra: &Object,
    ) -> Result<()> {
        let n = self.lengths.len();
        if positions_mm.len() != n {
            return Err(ResourceError::InvalidArgument(format!(
                "this gantry has {n} axes, got {} positions",
                positions_mm.len()
            )));
        }
        for (i, (p, len)) in positions_mm.iter().zip(&self.lengths).enumerate() {
            if !(p.is_finite() && (0.0..=*len).contains(p)) {
                return Err(ResourceError::InvalidArgument(format!(
                    "axis {i} position {p} mm is outside [0, {len}] mm"
                )));
            }
        }
        let speeds = match speeds_mm_per_sec.len() {
            0 => vec![self.default_speed; n],
            m if m == n => speeds_mm_per_sec,
            m => {
                return Err(ResourceError::InvalidArgument(format!(
                    "this gantry has {n} axes, got {m} speeds"
                )));
            }
        };
        if let Some(bad) = speeds.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(ResourceError::InvalidArgument(format!(
                "speeds must be positive numbers, got {bad}"
            )));
        }
        let args = json!({"positions_mm": positions_mm, "speeds_mm_per_sec": speeds});
        self.axes
            .move_to("move_to_position", args, positions_mm, |a, b| {
                slowest(a, b, &speeds)
            })
            .await
    }

    async fn home(&self, _extra: &Object) -> Result<bool> {
        let speeds = vec![self.default_speed; self.lengths.len()];
        let home = vec![0.0; self.lengths.len()];
        self.axes
            .move_to("home", json!({}), home, |a, b| slowest(a, b, &speeds))
            .await?;
        Ok(true)
    }

    async fn lengths(&self, _extra: &Object) -> Result<Vec<f64>> {
        Ok(self.lengths.clone())
    }
}
