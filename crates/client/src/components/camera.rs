//! The typed client of the camera API (`rdk:component:camera`).

use tether_proto::viam::component::camera::v1 as camera;

use crate::{ClientError, RobotChannel};

/// One image from a camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedImage {
    /// The camera source it came from.
    pub source_name: String,
    /// Its MIME type, e.g. `image/png`.
    pub mime_type: String,
    /// The encoded image.
    pub data: Vec<u8>,
}

component!(
    /// A camera on the machine.
    Camera,
    camera::camera_service_client::CameraServiceClient<RobotChannel>
);

impl Camera {
    /// One image from each of the camera's sources.
    pub async fn images(&mut self) -> Result<Vec<NamedImage>, ClientError> {
        Ok(self
            .client
            .get_images(camera::GetImagesRequest {
                name: self.name.clone(),
                filter_source_names: vec![],
                extra: None,
            })
            .await?
            .into_inner()
            .images
            .into_iter()
            .map(|image| NamedImage {
                source_name: image.source_name,
                mime_type: image.mime_type,
                data: image.image,
            })
            .collect())
    }

    /// Intrinsics, supported MIME types and whether it produces point clouds.
    pub async fn properties(&mut self) -> Result<camera::GetPropertiesResponse, ClientError> {
        Ok(self
            .client
            .get_properties(camera::GetPropertiesRequest {
                name: self.name.clone(),
            })
            .await?
            .into_inner())
    }
}
