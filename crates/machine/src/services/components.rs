//! The component services: wire messages to resource trait calls and back.

use prost_types::Timestamp;
use tether_proto::viam::common::v1 as common;
use tether_proto::viam::component::{
    arm, base, button, camera, gantry, generic, gripper, motor, sensor, servo, switch,
};
use tonic::{Request, Response, Status};

use super::Api;
use crate::convert::{json_to_pb, struct_to_object};
use crate::resource::Subtype;

type R<T> = Result<Response<T>, Status>;

fn ok<T>(t: T) -> R<T> {
    Ok(Response::new(t))
}

#[tonic::async_trait]
impl motor::v1::motor_service_server::MotorService for Api {
    async fn set_power(
        &self,
        r: Request<motor::v1::SetPowerRequest>,
    ) -> R<motor::v1::SetPowerResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine
            .motor(&r.name)?
            .set_power(r.power_pct, &extra)
            .await?;
        ok(motor::v1::SetPowerResponse {})
    }

    async fn go_for(&self, r: Request<motor::v1::GoForRequest>) -> R<motor::v1::GoForResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine
            .motor(&r.name)?
            .go_for(r.rpm, r.revolutions, &extra)
            .await?;
        ok(motor::v1::GoForResponse {})
    }

    async fn go_to(&self, r: Request<motor::v1::GoToRequest>) -> R<motor::v1::GoToResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine
            .motor(&r.name)?
            .go_to(r.rpm, r.position_revolutions, &extra)
            .await?;
        ok(motor::v1::GoToResponse {})
    }

    async fn set_rpm(&self, r: Request<motor::v1::SetRpmRequest>) -> R<motor::v1::SetRpmResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine.motor(&r.name)?.set_rpm(r.rpm, &extra).await?;
        ok(motor::v1::SetRpmResponse {})
    }

    async fn reset_zero_position(
        &self,
        r: Request<motor::v1::ResetZeroPositionRequest>,
    ) -> R<motor::v1::ResetZeroPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine
            .motor(&r.name)?
            .reset_zero_position(r.offset, &extra)
            .await?;
        ok(motor::v1::ResetZeroPositionResponse {})
    }

    async fn get_position(
        &self,
        r: Request<motor::v1::GetPositionRequest>,
    ) -> R<motor::v1::GetPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let position = self.machine.motor(&r.name)?.position(&extra).await?;
        ok(motor::v1::GetPositionResponse { position })
    }

    async fn get_properties(
        &self,
        r: Request<motor::v1::GetPropertiesRequest>,
    ) -> R<motor::v1::GetPropertiesResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let position_reporting = self
            .machine
            .motor(&r.name)?
            .position_reporting(&extra)
            .await?;
        ok(motor::v1::GetPropertiesResponse { position_reporting })
    }

    async fn stop(&self, r: Request<motor::v1::StopRequest>) -> R<motor::v1::StopResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine.motor(&r.name)?.stop(&extra).await?;
        ok(motor::v1::StopResponse {})
    }

    async fn is_powered(
        &self,
        r: Request<motor::v1::IsPoweredRequest>,
    ) -> R<motor::v1::IsPoweredResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let (is_on, power_pct) = self.machine.motor(&r.name)?.is_powered(&extra).await?;
        ok(motor::v1::IsPoweredResponse { is_on, power_pct })
    }

    async fn is_moving(
        &self,
        r: Request<motor::v1::IsMovingRequest>,
    ) -> R<motor::v1::IsMovingResponse> {
        let is_moving = self.machine.motor(&r.get_ref().name)?.is_moving().await?;
        ok(motor::v1::IsMovingResponse { is_moving })
    }

    async fn do_command(
        &self,
        r: Request<common::DoCommandRequest>,
    ) -> R<common::DoCommandResponse> {
        Api::do_command(self, Subtype::Motor, r).await
    }

    async fn get_status(
        &self,
        r: Request<common::GetStatusRequest>,
    ) -> R<common::GetStatusResponse> {
        Api::get_status(self, Subtype::Motor, r).await
    }

    async fn get_geometries(
        &self,
        r: Request<common::GetGeometriesRequest>,
    ) -> R<common::GetGeometriesResponse> {
        Api::get_geometries(self, Subtype::Motor, r)
    }
}

#[tonic::async_trait]
impl base::v1::base_service_server::BaseService for Api {
    async fn move_straight(
        &self,
        r: Request<base::v1::MoveStraightRequest>,
    ) -> R<base::v1::MoveStraightResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine
            .base(&r.name)?
            .move_straight(r.distance_mm, r.mm_per_sec, &extra)
            .await?;
        ok(base::v1::MoveStraightResponse {})
    }

    async fn spin(&self, r: Request<base::v1::SpinRequest>) -> R<base::v1::SpinResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine
            .base(&r.name)?
            .spin(r.angle_deg, r.degs_per_sec, &extra)
            .await?;
        ok(base::v1::SpinResponse {})
    }

    async fn set_power(
        &self,
        r: Request<base::v1::SetPowerRequest>,
    ) -> R<base::v1::SetPowerResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine
            .base(&r.name)?
            .set_power(
                r.linear.unwrap_or_default(),
                r.angular.unwrap_or_default(),
                &extra,
            )
            .await?;
        ok(base::v1::SetPowerResponse {})
    }

    async fn set_velocity(
        &self,
        r: Request<base::v1::SetVelocityRequest>,
    ) -> R<base::v1::SetVelocityResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine
            .base(&r.name)?
            .set_velocity(
                r.linear.unwrap_or_default(),
                r.angular.unwrap_or_default(),
                &extra,
            )
            .await?;
        ok(base::v1::SetVelocityResponse {})
    }

    async fn stop(&self, r: Request<base::v1::StopRequest>) -> R<base::v1::StopResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine.base(&r.name)?.stop(&extra).await?;
        ok(base::v1::StopResponse {})
    }

    async fn is_moving(
        &self,
        r: Request<base::v1::IsMovingRequest>,
    ) -> R<base::v1::IsMovingResponse> {
        let is_moving = self.machine.base(&r.get_ref().name)?.is_moving().await?;
        ok(base::v1::IsMovingResponse { is_moving })
    }

    async fn get_properties(
        &self,
        r: Request<base::v1::GetPropertiesRequest>,
    ) -> R<base::v1::GetPropertiesResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let p = self.machine.base(&r.name)?.properties(&extra).await?;
        ok(base::v1::GetPropertiesResponse {
            width_meters: p.width_meters,
            turning_radius_meters: p.turning_radius_meters,
            wheel_circumference_meters: p.wheel_circumference_meters,
        })
    }

    async fn do_command(
        &self,
        r: Request<common::DoCommandRequest>,
    ) -> R<common::DoCommandResponse> {
        Api::do_command(self, Subtype::Base, r).await
    }

    async fn get_status(
        &self,
        r: Request<common::GetStatusRequest>,
    ) -> R<common::GetStatusResponse> {
        Api::get_status(self, Subtype::Base, r).await
    }

    async fn get_geometries(
        &self,
        r: Request<common::GetGeometriesRequest>,
    ) -> R<common::GetGeometriesResponse> {
        Api::get_geometries(self, Subtype::Base, r)
    }
}

#[tonic::async_trait]
impl arm::v1::arm_service_server::ArmService for Api {
    async fn get_end_position(
        &self,
        r: Request<arm::v1::GetEndPositionRequest>,
    ) -> R<arm::v1::GetEndPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let pose = self.machine.arm(&r.name)?.end_position(&extra).await?;
        ok(arm::v1::GetEndPositionResponse { pose: Some(pose) })
    }

    async fn move_to_position(
        &self,
        r: Request<arm::v1::MoveToPositionRequest>,
    ) -> R<arm::v1::MoveToPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let to = r
            .to
            .ok_or_else(|| Status::invalid_argument("MoveToPosition needs a target pose `to`"))?;
        self.machine
            .arm(&r.name)?
            .move_to_position(to, &extra)
            .await?;
        ok(arm::v1::MoveToPositionResponse {})
    }

    async fn get_joint_positions(
        &self,
        r: Request<arm::v1::GetJointPositionsRequest>,
    ) -> R<arm::v1::GetJointPositionsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let values = self.machine.arm(&r.name)?.joint_positions(&extra).await?;
        ok(arm::v1::GetJointPositionsResponse {
            positions: Some(arm::v1::JointPositions { values }),
        })
    }

    async fn move_to_joint_positions(
        &self,
        r: Request<arm::v1::MoveToJointPositionsRequest>,
    ) -> R<arm::v1::MoveToJointPositionsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let values = r.positions.map(|p| p.values).unwrap_or_default();
        self.machine
            .arm(&r.name)?
            .move_to_joint_positions(values, &extra)
            .await?;
        ok(arm::v1::MoveToJointPositionsResponse {})
    }

    async fn move_through_joint_positions(
        &self,
        r: Request<arm::v1::MoveThroughJointPositionsRequest>,
    ) -> R<arm::v1::MoveThroughJointPositionsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let path = r.positions.into_iter().map(|p| p.values).collect();
        self.machine
            .arm(&r.name)?
            .move_through_joint_positions(path, &extra)
            .await?;
        ok(arm::v1::MoveThroughJointPositionsResponse {})
    }

    async fn stop(&self, r: Request<arm::v1::StopRequest>) -> R<arm::v1::StopResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine.arm(&r.name)?.stop(&extra).await?;
        ok(arm::v1::StopResponse {})
    }

    async fn is_moving(
        &self,
        r: Request<arm::v1::IsMovingRequest>,
    ) -> R<arm::v1::IsMovingResponse> {
        let is_moving = self.machine.arm(&r.get_ref().name)?.is_moving().await?;
        ok(arm::v1::IsMovingResponse { is_moving })
    }

    async fn get_properties(
        &self,
        r: Request<arm::v1::GetPropertiesRequest>,
    ) -> R<arm::v1::GetPropertiesResponse> {
        self.machine.arm(&r.get_ref().name)?;
        ok(arm::v1::GetPropertiesResponse {
            support_manual_mode: false,
            support_cartesian_commands: true,
        })
    }

    async fn do_command(
        &self,
        r: Request<common::DoCommandRequest>,
    ) -> R<common::DoCommandResponse> {
        Api::do_command(self, Subtype::Arm, r).await
    }

    async fn get_status(
        &self,
        r: Request<common::GetStatusRequest>,
    ) -> R<common::GetStatusResponse> {
        Api::get_status(self, Subtype::Arm, r).await
    }

    async fn get_geometries(
        &self,
        r: Request<common::GetGeometriesRequest>,
    ) -> R<common::GetGeometriesResponse> {
        Api::get_geometries(self, Subtype::Arm, r)
    }
}

#[tonic::async_trait]
impl gantry::v1::gantry_service_server::GantryService for Api {
    async fn get_position(
        &self,
        r: Request<gantry::v1::GetPositionRequest>,
    ) -> R<gantry::v1::GetPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let positions_mm = self.machine.gantry(&r.name)?.position(&extra).await?;
        ok(gantry::v1::GetPositionResponse { positions_mm })
    }

    async fn move_to_position(
        &self,
        r: Request<gantry::v1::MoveToPositionRequest>,
    ) -> R<gantry::v1::MoveToPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine
            .gantry(&r.name)?
            .move_to_position(r.positions_mm, r.speeds_mm_per_sec, &extra)
            .await?;
        ok(gantry::v1::MoveToPositionResponse {})
    }

    async fn home(&self, r: Request<gantry::v1::HomeRequest>) -> R<gantry::v1::HomeResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let homed = self.machine.gantry(&r.name)?.home(&extra).await?;
        ok(gantry::v1::HomeResponse { homed })
    }

    async fn get_lengths(
        &self,
        r: Request<gantry::v1::GetLengthsRequest>,
    ) -> R<gantry::v1::GetLengthsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let lengths_mm = self.machine.gantry(&r.name)?.lengths(&extra).await?;
        ok(gantry::v1::GetLengthsResponse { lengths_mm })
    }

    async fn stop(&self, r: Request<gantry::v1::StopRequest>) -> R<gantry::v1::StopResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine.gantry(&r.name)?.stop(&extra).await?;
        ok(gantry::v1::StopResponse {})
    }

    async fn is_moving(
        &self,
        r: Request<gantry::v1::IsMovingRequest>,
    ) -> R<gantry::v1::IsMovingResponse> {
        let is_moving = self.machine.gantry(&r.get_ref().name)?.is_moving().await?;
        ok(gantry::v1::IsMovingResponse { is_moving })
    }

    async fn do_command(
        &self,
        r: Request<common::DoCommandRequest>,
    ) -> R<common::DoCommandResponse> {
        Api::do_command(self, Subtype::Gantry, r).await
    }

    async fn get_status(
        &self,
        r: Request<common::GetStatusRequest>,
    ) -> R<common::GetStatusResponse> {
        Api::get_status(self, Subtype::Gantry, r).await
    }

    async fn get_geometries(
        &self,
        r: Request<common::GetGeometriesRequest>,
    ) -> R<common::GetGeometriesResponse> {
        Api::get_geometries(self, Subtype::Gantry, r)
    }
}

#[tonic::async_trait]
impl gripper::v1::gripper_service_server::GripperService for Api {
    async fn open(&self, r: Request<gripper::v1::OpenRequest>) -> R<gripper::v1::OpenResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine.gripper(&r.name)?.open(&extra).await?;
        ok(gripper::v1::OpenResponse {})
    }

    async fn grab(&self, r: Request<gripper::v1::GrabRequest>) -> R<gripper::v1::GrabResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let success = self.machine.gripper(&r.name)?.grab(&extra).await?;
        ok(gripper::v1::GrabResponse {
            success,
            extra: None,
        })
    }

    async fn stop(&self, r: Request<gripper::v1::StopRequest>) -> R<gripper::v1::StopResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine.gripper(&r.name)?.stop(&extra).await?;
        ok(gripper::v1::StopResponse {})
    }

    async fn is_moving(
        &self,
        r: Request<gripper::v1::IsMovingRequest>,
    ) -> R<gripper::v1::IsMovingResponse> {
        let is_moving = self.machine.gripper(&r.get_ref().name)?.is_moving().await?;
        ok(gripper::v1::IsMovingResponse { is_moving })
    }

    async fn is_holding_something(
        &self,
        r: Request<gripper::v1::IsHoldingSomethingRequest>,
    ) -> R<gripper::v1::IsHoldingSomethingResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let holding = self
            .machine
            .gripper(&r.name)?
            .is_holding_something(&extra)
            .await?;
        ok(gripper::v1::IsHoldingSomethingResponse {
            is_holding_something: holding,
            meta: None,
        })
    }

    async fn get_current_inputs(
        &self,
        r: Request<gripper::v1::GetCurrentInputsRequest>,
    ) -> R<gripper::v1::GetCurrentInputsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let values = self
            .machine
            .gripper(&r.name)?
            .current_inputs(&extra)
            .await?;
        ok(gripper::v1::GetCurrentInputsResponse { values })
    }

    async fn go_to_inputs(
        &self,
        r: Request<gripper::v1::GoToInputsRequest>,
    ) -> R<gripper::v1::GoToInputsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine
            .gripper(&r.name)?
            .go_to_inputs(r.values, &extra)
            .await?;
        ok(gripper::v1::GoToInputsResponse {})
    }

    async fn do_command(
        &self,
        r: Request<common::DoCommandRequest>,
    ) -> R<common::DoCommandResponse> {
        Api::do_command(self, Subtype::Gripper, r).await
    }

    async fn get_status(
        &self,
        r: Request<common::GetStatusRequest>,
    ) -> R<common::GetStatusResponse> {
        Api::get_status(self, Subtype::Gripper, r).await
    }

    async fn get_geometries(
        &self,
        r: Request<common::GetGeometriesRequest>,
    ) -> R<common::GetGeometriesResponse> {
        Api::get_geometries(self, Subtype::Gripper, r)
    }
}

#[tonic::async_trait]
impl servo::v1::servo_service_server::ServoService for Api {
    async fn r#move(&self, r: Request<servo::v1::MoveRequest>) -> R<servo::v1::MoveResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine
            .servo(&r.name)?
            .move_to(r.angle_deg, &extra)
            .await?;
        ok(servo::v1::MoveResponse {})
    }

    async fn get_position(
        &self,
        r: Request<servo::v1::GetPositionRequest>,
    ) -> R<servo::v1::GetPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let position_deg = self.machine.servo(&r.name)?.position(&extra).await?;
        ok(servo::v1::GetPositionResponse { position_deg })
    }

    async fn stop(&self, r: Request<servo::v1::StopRequest>) -> R<servo::v1::StopResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine.servo(&r.name)?.stop(&extra).await?;
        ok(servo::v1::StopResponse {})
    }

    async fn is_moving(
        &self,
        r: Request<servo::v1::IsMovingRequest>,
    ) -> R<servo::v1::IsMovingResponse> {
        let is_moving = self.machine.servo(&r.get_ref().name)?.is_moving().await?;
        ok(servo::v1::IsMovingResponse { is_moving })
    }

    async fn do_command(
        &self,
        r: Request<common::DoCommandRequest>,
    ) -> R<common::DoCommandResponse> {
        Api::do_command(self, Subtype::Servo, r).await
    }

    async fn get_status(
        &self,
        r: Request<common::GetStatusRequest>,
    ) -> R<common::GetStatusResponse> {
        Api::get_status(self, Subtype::Servo, r).await
    }

    async fn get_geometries(
        &self,
        r: Request<common::GetGeometriesRequest>,
    ) -> R<common::GetGeometriesResponse> {
        Api::get_geometries(self, Subtype::Servo, r)
    }
}

#[tonic::async_trait]
impl switch::v1::switch_service_server::SwitchService for Api {
    async fn set_position(
        &self,
        r: Request<switch::v1::SetPositionRequest>,
    ) -> R<switch::v1::SetPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine
            .switch(&r.name)?
            .set_position(r.position, &extra)
            .await?;
        ok(switch::v1::SetPositionResponse {})
    }

    async fn get_position(
        &self,
        r: Request<switch::v1::GetPositionRequest>,
    ) -> R<switch::v1::GetPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let position = self.machine.switch(&r.name)?.position(&extra).await?;
        ok(switch::v1::GetPositionResponse { position })
    }

    async fn get_number_of_positions(
        &self,
        r: Request<switch::v1::GetNumberOfPositionsRequest>,
    ) -> R<switch::v1::GetNumberOfPositionsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let (number_of_positions, labels) = self
            .machine
            .switch(&r.name)?
            .number_of_positions(&extra)
            .await?;
        ok(switch::v1::GetNumberOfPositionsResponse {
            number_of_positions,
            labels,
        })
    }

    async fn do_command(
        &self,
        r: Request<common::DoCommandRequest>,
    ) -> R<common::DoCommandResponse> {
        Api::do_command(self, Subtype::Switch, r).await
    }

    async fn get_status(
        &self,
        r: Request<common::GetStatusRequest>,
    ) -> R<common::GetStatusResponse> {
        Api::get_status(self, Subtype::Switch, r).await
    }
}

#[tonic::async_trait]
impl button::v1::button_service_server::ButtonService for Api {
    async fn push(&self, r: Request<button::v1::PushRequest>) -> R<button::v1::PushResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.machine.button(&r.name)?.push(&extra).await?;
        ok(button::v1::PushResponse {})
    }

    async fn do_command(
        &self,
        r: Request<common::DoCommandRequest>,
    ) -> R<common::DoCommandResponse> {
        Api::do_command(self, Subtype::Button, r).await
    }

    async fn get_status(
        &self,
        r: Request<common::GetStatusRequest>,
    ) -> R<common::GetStatusResponse> {
        Api::get_status(self, Subtype::Button, r).await
    }
}

#[tonic::async_trait]
impl sensor::v1::sensor_service_server::SensorService for Api {
    async fn get_readings(
        &self,
        r: Request<common::GetReadingsRequest>,
    ) -> R<common::GetReadingsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let readings = self.machine.sensor(&r.name)?.readings(&extra).await?;
        ok(common::GetReadingsResponse {
            readings: readings
                .into_iter()
                .map(|(k, v)| (k, json_to_pb(v)))
                .collect(),
        })
    }

    async fn do_command(
        &self,
        r: Request<common::DoCommandRequest>,
    ) -> R<common::DoCommandResponse> {
        Api::do_command(self, Subtype::Sensor, r).await
    }

    async fn get_status(
        &self,
        r: Request<common::GetStatusRequest>,
    ) -> R<common::GetStatusResponse> {
        Api::get_status(self, Subtype::Sensor, r).await
    }

    async fn get_geometries(
        &self,
        r: Request<common::GetGeometriesRequest>,
    ) -> R<common::GetGeometriesResponse> {
        Api::get_geometries(self, Subtype::Sensor, r)
    }
}

#[tonic::async_trait]
impl camera::v1::camera_service_server::CameraService for Api {
    async fn get_images(
        &self,
        r: Request<camera::v1::GetImagesRequest>,
    ) -> R<camera::v1::GetImagesResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let images = self
            .machine
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
    ) -> R<camera::v1::GetPropertiesResponse> {
        let p = self.machine.camera(&r.get_ref().name)?.properties().await?;
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

    async fn do_command(
        &self,
        r: Request<common::DoCommandRequest>,
    ) -> R<common::DoCommandResponse> {
        Api::do_command(self, Subtype::Camera, r).await
    }

    async fn get_status(
        &self,
        r: Request<common::GetStatusRequest>,
    ) -> R<common::GetStatusResponse> {
        Api::get_status(self, Subtype::Camera, r).await
    }

    async fn get_geometries(
        &self,
        r: Request<common::GetGeometriesRequest>,
    ) -> R<common::GetGeometriesResponse> {
        Api::get_geometries(self, Subtype::Camera, r)
    }
}

#[tonic::async_trait]
impl generic::v1::generic_service_server::GenericService for Api {
    async fn do_command(
        &self,
        r: Request<common::DoCommandRequest>,
    ) -> R<common::DoCommandResponse> {
        Api::do_command(self, Subtype::Generic, r).await
    }

    async fn get_status(
        &self,
        r: Request<common::GetStatusRequest>,
    ) -> R<common::GetStatusResponse> {
        Api::get_status(self, Subtype::Generic, r).await
    }

    async fn get_geometries(
        &self,
        r: Request<common::GetGeometriesRequest>,
    ) -> R<common::GetGeometriesResponse> {
        Api::get_geometries(self, Subtype::Generic, r)
    }
}
