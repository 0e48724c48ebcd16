//! Robot-service helpers on [`RobotClient`]: version, status, operations, sessions.

use tether_proto::viam::robot::v1 as robot;

use crate::{ClientError, RobotClient};

/// Robot-service helpers.
impl RobotClient {
    /// The machine's platform, version and API version.
    pub async fn version(&self) -> Result<robot::GetVersionResponse, ClientError> {
        Ok(self
            .robot()
            .get_version(robot::GetVersionRequest {})
            .await?
            .into_inner())
    }

    /// The machine's state and each resource's status.
    pub async fn machine_status(&self) -> Result<robot::GetMachineStatusResponse, ClientError> {
        Ok(self
            .robot()
            .get_machine_status(robot::GetMachineStatusRequest {})
            .await?
            .into_inner())
    }

    /// The calls running on the machine now.
    pub async fn operations(&self) -> Result<Vec<robot::Operation>, ClientError> {
        Ok(self
            .robot()
            .get_operations(robot::GetOperationsRequest {})
            .await?
            .into_inner()
            .operations)
    }

    /// Cancels the running operation `id`; its call fails with `CANCELLED`.
    pub async fn cancel_operation(&self, id: &str) -> Result<(), ClientError> {
        self.robot()
            .cancel_operation(robot::CancelOperationRequest { id: id.to_string() })
            .await?;
        Ok(())
    }

    /// Waits until operation `id` has finished.
    pub async fn block_for_operation(&self, id: &str) -> Result<(), ClientError> {
        self.robot()
            .block_for_operation(robot::BlockForOperationRequest { id: id.to_string() })
            .await?;
        Ok(())
    }

    /// The machine's active sessions.
    pub async fn sessions(&self) -> Result<Vec<robot::Session>, ClientError> {
        Ok(self
            .robot()
            .get_sessions(robot::GetSessionsRequest {})
            .await?
            .into_inner()
            .sessions)
    }
}
