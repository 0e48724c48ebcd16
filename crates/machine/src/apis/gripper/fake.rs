//! The fake gripper: one jaw that opens and closes at a bounded speed. Closing stops at the
//! configured object's width, if there is an object; then the gripper is holding it.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Gripper;
use crate::resource::{Object, ResourceError, Result};
use crate::sim::{Axes, travel_time};

/// Attributes of a fake gripper.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeGripperAttributes {
    /// Fully open jaw width in mm (default 85).
    #[serde(default = "default_max_opening")]
    pub max_opening_mm: f64,
    /// Width of the object between the jaws, in mm; 0 means nothing to grab (default 30).
    #[serde(default = "default_object")]
    pub object_width_mm: f64,
    /// Jaw speed in mm/s (default 400).
    #[serde(default = "default_speed")]
    pub speed_mm_per_sec: f64,
}

fn default_max_opening() -> f64 {
    85.0
}
fn default_object() -> f64 {
    30.0
}
fn default_speed() -> f64 {
    400.0
}

impl crate::apis::Attributes for FakeGripperAttributes {
    fn validate(&self) -> std::result::Result<(), String> {
        if !(self.max_opening_mm.is_finite() && self.max_opening_mm > 0.0) {
            return Err("max_opening_mm must be a positive number".into());
        }
        if !(self.object_width_mm.is_finite()
            && (0.0..self.max_opening_mm).contains(&self.object_width_mm))
        {
            return Err("object_width_mm must be in [0, max_opening_mm)".into());
        }
        if !(self.speed_mm_per_sec.is_finite() && self.speed_mm_per_sec > 0.0) {
            return Err("speed_mm_per_sec must be a positive number".into());
        }
        Ok(())
    }
}

/// A simulated gripper.
#[derive(Debug)]
pub struct FakeGripper {
    jaw: Axes,
    holding: AtomicBool,
    max_opening: f64,
    object_width: f64,
    speed: f64,
}

impl FakeGripper {
    /// A fully open gripper.
    pub fn new(name: &str, attributes: &FakeGripperAttributes) -> Self {
        Self {
            jaw: Axes::new(name, vec![attributes.max_opening_mm]),
            holding: AtomicBool::new(false),
            max_opening: attributes.max_opening_mm,
            object_width: attributes.object_width_mm,
            speed: attributes.speed_mm_per_sec,
        }
    }

    async fn move_jaw(&self, what: &'static str, args: Value, width: f64) -> Result<()> {
        let speed = self.speed;
        self.holding.store(false, Ordering::SeqCst);
        self.jaw
            .move_to(what, args, vec![width], |a, b| {
                travel_time((b[0] - a[0]).abs(), speed)
            })
            .await
    }
}

crate::sim::axes_actuator!(FakeGripper, jaw);

#[async_trait]
impl Gripper for FakeGripper {
    async fn open(&self, _extra: &Object) -> Result<()> {
        self.move_jaw("open", json!({}), self.max_opening).await
    }

    async fn grab(&self, _extra: &Object) -> Result<bool> {
        self.move_jaw("grab", json!({}), self.object_width).await?;
        let grabbed = self.object_width > 0.0;
        self.holding.store(grabbed, Ordering::SeqCst);
        Ok(grabbed)
    }

    async fn is_holding_something(&self, _extra: &Object) -> Result<bool> {
        Ok(self.holding.load(Ordering::SeqCst))
    }

    async fn current_inputs(&self, _extra: &Object) -> Result<Vec<f64>> {
        Ok(self.jaw.position())
    }

    async fn go_to_inputs(&self, values: Vec<f64>, _extra: &Object) -> Result<()> {
        let [width] = values[..] else {
            return Err(ResourceError::InvalidArgument(format!(
                "this gripper has 1 input (jaw width in mm), got {}",
                values.len()
            )));
        };
        if !(width.is_finite() && (self.object_width..=self.max_opening).contains(&width)) {
            return Err(ResourceError::InvalidArgument(format!(
                "jaw width {width} mm is outside [{}, {}] mm",
                self.object_width, self.max_opening
            )));
        }
        self.move_jaw("go_to_inputs", json!({"values": values}), width)
            .await
    }
}
