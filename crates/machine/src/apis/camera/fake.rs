//! The fake camera: renders a real PNG per request — a colour gradient with a bar that sweeps
//! across the frame over time and a frame counter in the pixels, so consecutive images differ.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::time::Instant;

use super::{Camera, CameraProperties, Image};
use crate::resource::{Component, Object, ResourceError, Result};
use crate::sim::History;

/// Attributes of a fake camera.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeCameraAttributes {
    /// Image width in pixels (default 320).
    #[serde(default = "default_width")]
    pub width: u32,
    /// Image height in pixels (default 240).
    #[serde(default = "default_height")]
    pub height: u32,
}

fn default_width() -> u32 {
    320
}
fn default_height() -> u32 {
    240
}

impl crate::apis::Attributes for FakeCameraAttributes {
    fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=4096).contains(&self.width) || !(1..=4096).contains(&self.height) {
            return Err(format!(
                "width and height must be between 1 and 4096 pixels, got {}x{}",
                self.width, self.height
            ));
        }
        Ok(())
    }
}

/// A simulated camera.
#[derive(Debug)]
pub struct FakeCamera {
    name: String,
    width: u32,
    height: u32,
    started: Instant,
    frames: AtomicU64,
    history: History,
}

impl FakeCamera {
    /// A camera producing `width`×`height` PNG frames.
    pub fn new(name: &str, attributes: &FakeCameraAttributes) -> Self {
        Self {
            name: name.to_string(),
            width: attributes.width,
            height: attributes.height,
            started: Instant::now(),
            frames: AtomicU64::new(0),
            history: History::new(name),
        }
    }

    /// Renders frame `n` at `t` seconds as RGB8 pixels.
    fn render(&self, n: u64, t: f64) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let bar = ((t * 0.25).fract() * w as f64) as usize;
        let mut pixels = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let on_bar = x.abs_diff(bar) < 4;
                let counter_row = y < 4 && x < 64 && (n >> (x / 4)) & 1 == 1;
                if on_bar || counter_row {
                    pixels.extend_from_slice(&[255, 255, 255]);
                } else {
                    pixels.extend_from_slice(&[
                        (x * 255 / w.max(1)) as u8,
                        (y * 255 / h.max(1)) as u8,
                        128,
                    ]);
                }
            }
        }
        pixels
    }

    fn encode_png(&self, pixels: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let fail =
            |e: png::EncodingError| ResourceError::Internal(format!("PNG encoding failed: {e}"));
        let mut writer = encoder.write_header().map_err(fail)?;
        writer.write_image_data(pixels).map_err(fail)?;
        writer.finish().map_err(fail)?;
        Ok(out)
    }
}

#[async_trait]
impl Component for FakeCamera {
    async fn do_command(&self, command: Object) -> Result<Object> {
        crate::sim::do_command(&self.history, command)
    }
}

#[async_trait]
impl Camera for FakeCamera {
    async fn images(&self, filter_source_names: &[String], _extra: &Object) -> Result<Vec<Image>> {
        if !filter_source_names.is_empty() && !filter_source_names.contains(&self.name) {
            return Ok(Vec::new());
        }
        let n = self.frames.fetch_add(1, Ordering::Relaxed);
        let pixels = self.render(n, self.started.elapsed().as_secs_f64());
        Ok(vec![Image {
            source_name: self.name.clone(),
            mime_type: "image/png".into(),
            bytes: self.encode_png(&pixels)?,
        }])
    }

    async fn properties(&self) -> Result<CameraProperties> {
        Ok(CameraProperties {
            width_px: self.width,
            height_px: self.height,
            mime_types: vec!["image/png".into()],
            frame_rate: None,
        })
    }
}
