//! The camera API (`rdk:component:camera`, `viam.component.camera.v1.CameraService`): a camera: images from its sources and its properties.
//!
//! Its trait, its models (`fake`, in [`fake`]) and the adapter from the generated service to
//! the trait.

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use prost_types::Timestamp;
use tether_proto::viam::common::v1 as common;
use tether_proto::viam::component::camera;
use tonic::{Request, Status};

use crate::apis::{
    Adapter, Build, Model, Registration, Reply, check_attributes, limited, ok, shared_methods,
};
use crate::convert::struct_to_object;
use crate::machine::Machine;
use crate::resource::{ApiName, Component, Object, Resource, Result};

/// `rdk:component:camera`.
pub const API: ApiName = ApiName::component("camera");

/// The camera API's entry in the registry.
pub static REGISTRATION: Registration = Registration {
    api: API,
    proto_service: "viam.component.camera.v1.CameraService",
    models: &[Model {
        name: "fake",
        check: check_attributes::<fake::FakeCameraAttributes>,
        build: build_fake,
    }],
    serve,
};

/// One image from a camera.
#[derive(Debug, Clone)]
pub struct Image {
    pub source_name: String,
    pub mime_type: String,
    pub bytes: Vec<u8>,
}

/// What a camera says about itself.
#[derive(Debug, Clone)]
pub struct CameraProperties {
    pub width_px: u32,
    pub height_px: u32,
    pub mime_types: Vec<String>,
    pub frame_rate: Option<f32>,
}

/// A camera (`rdk:component:camera`).
#[async_trait]
pub trait Camera: Component {
    /// Current images, from the named sources (all sources if empty).
    async fn images(&self, filter_source_names: &[String], extra: &Object) -> Result<Vec<Image>>;
    /// Properties.
    async fn properties(&self) -> Result<CameraProperties>;
}

/// A resource serving this API from `model`.
pub fn resource<M: Camera>(model: Arc<M>) -> Resource {
    Resource::new(model.clone() as Arc<dyn Camera>, model.clone(), None, model)
}

fn build_fake(b: &Build<'_>) -> std::result::Result<Resource, String> {
    let attributes = b.attributes::<fake::FakeCameraAttributes>()?;
    Ok(resource(Arc::new(fake::FakeCamera::new(
        b.name,
        &attributes,
    ))))
}

fn serve(routes: &mut tonic::service::RoutesBuilder, machine: Arc<Machine>) {
    routes.add_service(limited!(
        camera::v1::camera_service_server::CameraServiceServer::new(Adapter::new(machine))
    ));
}

impl Adapter {
    fn camera(&self, name: &str) -> std::result::Result<Arc<dyn Camera>, Status> {
        self.typed::<dyn Camera>(&API, name)
    }
}

#[tonic::async_trait]
impl camera::v1::camera_service_server::CameraService for Adapter {
    async fn get_images(
        &self,
        r: Request<camera::v1::GetImagesRequest>,
    ) -> Reply<camera::v1::GetImagesResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let images = self
            .camera(&r.name)?
            .images(&r.filter_source_names, &extra)
            .await?;
        ok(camera::v1::GetImagesResponse {
            images: images
                .into_iter()
                .map(|i| camera::v1::Image {
                    source_name: i.source_name,
                    image: i.bytes,
                    mime_type: i.mime_type,
                    annotations: None,
                })
                .collect(),
            response_metadata: Some(common::ResponseMetadata {
                captured_at: Some(Timestamp::from(std::time::SystemTime::now())),
            }),
        })
    }

    async fn get_properties(
        &self,
        r: Request<camera::v1::GetPropertiesRequest>,
    ) -> Reply<camera::v1::GetPropertiesResponse> {
        let p = self.camera(&r.get_ref().name)?.properties().await?;
        ok(camera::v1::GetPropertiesResponse {
            supports_pcd: false,
            intrinsic_parameters: Some(camera::v1::IntrinsicParameters {
                width_px: p.width_px,
                height_px: p.height_px,
                focal_x_px: 0.0,
                focal_y_px: 0.0,
                center_x_px: f64::from(p.width_px) / 2.0,
                center_y_px: f64::from(p.height_px) / 2.0,
            }),
            distortion_parameters: None,
            mime_types: p.mime_types,
            frame_rate: p.frame_rate,
            extrinsic_parameters: None,
            default_reference_frame: String::new(),
        })
    }

    shared_methods!(API, do_command, get_status, get_geometries);
}
