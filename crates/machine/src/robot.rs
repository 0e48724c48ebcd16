//! `viam.robot.v1.RobotService`: the machine as a whole — its resources, version, status
//! (machine status; the older `GetStatus` and its server stream `StreamStatus`), operations,
//! sessions, and StopAll. Declared methods this build does not serve (frame system, modules,
//! tunnels, logs, traces, cloud metadata, data upload) answer UNIMPLEMENTED through the
//! generated default stubs.

use prost_types::{Struct, Timestamp};
use tether_proto::viam::robot::v1 as robot;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::machine::Machine;
use crate::operations::CurrentOperation;
use crate::sessions::{PeerInfo, PeerKind, session_expired, session_span};
use tether_rpc::context::owner_of;

/// Serves `viam.robot.v1.RobotService` for one machine.
#[derive(Clone)]
pub struct RobotApi {
    machine: std::sync::Arc<Machine>,
}

impl RobotApi {
    /// The robot service of `machine`.
    pub fn new(machine: std::sync::Arc<Machine>) -> Self {
        Self { machine }
    }
}

/// The Viam API version our `.proto` files follow.
pub const API_VERSION: &str = "v0.1.601";

fn parse_operation_id(id: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(id)
        .map_err(|e| Status::invalid_argument(format!("operation id {id:?} is not a UUID: {e}")))
}

fn current<T>(r: &Request<T>) -> Option<Uuid> {
    r.extensions().get::<CurrentOperation>().map(|c| c.0)
}

/// Shortest `every` of `StreamStatus`.
const MIN_STATUS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

impl RobotApi {
    /// The status of each named resource (every resource when none is named).
    async fn statuses(
        &self,
        names: &[tether_proto::viam::common::v1::ResourceName],
    ) -> Result<Vec<robot::Status>, Status> {
        let started = Some(Timestamp::from(self.machine.started()));
        let mut selected = Vec::new();
        if names.is_empty() {
            for (name, resource) in self.machine.resources().iter() {
                selected.push((name.to_proto(), resource.component()));
            }
        } else {
            for n in names {
                let component = crate::apis::find(&n.namespace, &n.r#type, &n.subtype)
                    .and_then(|r| self.machine.component(&r.api, &n.name).ok())
                    .ok_or_else(|| {
                        Status::not_found(format!(
                            "resource {}:{}:{}/{} not found",
                            n.namespace, n.r#type, n.subtype, n.name
                        ))
                    })?;
                selected.push((n.clone(), component));
            }
        }
        let mut out = Vec::with_capacity(selected.len());
        for (name, component) in selected {
            out.push(robot::Status {
                name: Some(name),
                status: Some(crate::convert::object_to_struct(component.status().await?)),
                last_reconfigured: started,
            });
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl robot::robot_service_server::RobotService for RobotApi {
    async fn get_status(
        &self,
        r: Request<robot::GetStatusRequest>,
    ) -> Result<Response<robot::GetStatusResponse>, Status> {
        let status = self.statuses(&r.into_inner().resource_names).await?;
        Ok(Response::new(robot::GetStatusResponse { status }))
    }

    async fn stream_status(
        &self,
        r: Request<robot::StreamStatusRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<robot::StreamStatusResponse>>, Status> {
        let r = r.into_inner();
        let every = r
            .every
            .and_then(|d| std::time::Duration::try_from(d).ok())
            .filter(|d| *d >= MIN_STATUS_INTERVAL)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "every must be a duration of at least {MIN_STATUS_INTERVAL:?}"
                ))
            })?;
        // Unknown names fail the call at once rather than the first message.
        self.statuses(&r.resource_names).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let api = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    // The caller went away: stop at once, not at the next tick.
                    _ = tx.closed() => return,
                }
                let message = api
                    .statuses(&r.resource_names)
                    .await
                    .map(|status| robot::StreamStatusResponse { status });
                let last = message.is_err();
                if tx.send(message).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
        ))))
    }

    async fn resource_names(
        &self,
        _r: Request<robot::ResourceNamesRequest>,
    ) -> Result<Response<robot::ResourceNamesResponse>, Status> {
        let resources = self
            .machine
            .resources()
            .iter()
            .map(|(n, _)| n.to_proto())
            .collect();
        Ok(Response::new(robot::ResourceNamesResponse { resources }))
    }

    async fn resource_rpc_subtypes(
        &self,
        _r: Request<robot::ResourceRpcSubtypesRequest>,
    ) -> Result<Response<robot::ResourceRpcSubtypesResponse>, Status> {
        let present: std::collections::BTreeSet<_> = self
            .machine
            .resources()
            .iter()
            .map(|(n, _)| n.api)
            .collect();
        let resource_rpc_subtypes = crate::apis::REGISTERED
            .iter()
            .filter(|r| present.contains(&r.api))
            .map(|r| robot::ResourceRpcSubtype {
                subtype: Some(r.api.to_proto()),
                proto_service: r.proto_service.into(),
            })
            .collect();
        Ok(Response::new(robot::ResourceRpcSubtypesResponse {
            resource_rpc_subtypes,
        }))
    }

    async fn get_version(
        &self,
        _r: Request<robot::GetVersionRequest>,
    ) -> Result<Response<robot::GetVersionResponse>, Status> {
        Ok(Response::new(robot::GetVersionResponse {
            platform: "tether".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: API_VERSION.into(),
        }))
    }

    async fn get_machine_status(
        &self,
        _r: Request<robot::GetMachineStatusRequest>,
    ) -> Result<Response<robot::GetMachineStatusResponse>, Status> {
        let started = Some(Timestamp::from(self.machine.started()));
        let revision = self.machine.revision().to_string();
        let resources = self
            .machine
            .resources()
            .iter()
            .map(|(n, _)| robot::ResourceStatus {
                name: Some(n.to_proto()),
                state: robot::resource_status::State::Ready as i32,
                last_updated: started,
                revision: revision.clone(),
                error: String::new(),
                cloud_metadata: None,
                reachability: robot::resource_status::Reachability::Reachable as i32,
                remote: None,
            })
            .collect();
        Ok(Response::new(robot::GetMachineStatusResponse {
            resources,
            config: Some(robot::ConfigStatus {
                revision,
                last_updated: started,
            }),
            state: robot::get_machine_status_response::State::Running as i32,
            job_statuses: vec![],
            modules: vec![],
            packages: vec![],
        }))
    }

    async fn get_operations(
        &self,
        r: Request<robot::GetOperationsRequest>,
    ) -> Result<Response<robot::GetOperationsResponse>, Status> {
        let own = current(&r);
        let owner = owner_of(r.extensions());
        let operations = self
            .machine
            .operations()
            .list()
            .into_iter()
            .filter(|op| Some(op.id) != own && op.owner == owner)
            .map(|op| robot::Operation {
                id: op.id.to_string(),
                method: op.method.clone(),
                arguments: Some(Struct::default()),
                started: Some(Timestamp::from(op.started)),
                session_id: crate::sync::lock(&op.session_id).clone(),
            })
            .collect();
        Ok(Response::new(robot::GetOperationsResponse { operations }))
    }

    async fn cancel_operation(
        &self,
        r: Request<robot::CancelOperationRequest>,
    ) -> Result<Response<robot::CancelOperationResponse>, Status> {
        let id = parse_operation_id(&r.get_ref().id)?;
        // Anyone may stop any resource (Stop, StopAll), but nobody may end another caller's
        // call: that is acting as them.
        if let Some(op) = self.machine.operations().get(id)
            && op.owner != owner_of(r.extensions())
        {
            return Err(Status::permission_denied(format!(
                "operation {id} is another caller's; stop the resource it drives instead"
            )));
        }
        // As in viam-server, cancelling an operation that no longer exists is not an error.
        self.machine.operations().cancel(id);
        Ok(Response::new(robot::CancelOperationResponse {}))
    }

    async fn block_for_operation(
        &self,
        r: Request<robot::BlockForOperationRequest>,
    ) -> Result<Response<robot::BlockForOperationResponse>, Status> {
        let id = parse_operation_id(&r.get_ref().id)?;
        if Some(id) == current(&r) {
            return Err(Status::invalid_argument(
                "an operation cannot block for itself",
            ));
        }
        self.machine.operations().wait(id).await;
        Ok(Response::new(robot::BlockForOperationResponse {}))
    }

    async fn start_session(
        &self,
        r: Request<robot::StartSessionRequest>,
    ) -> Result<Response<robot::StartSessionResponse>, Status> {
        let resume = match r.get_ref().resume.as_str() {
            "" => None,
            s => Some(Uuid::parse_str(s).map_err(|e| {
                Status::invalid_argument(format!("resume {s:?} is not a session id: {e}"))
            })?),
        };
        let peer = r.extensions().get::<PeerInfo>().cloned();
        let owner = owner_of(r.extensions());
        let started = self
            .machine
            .sessions()
            .start(&owner, resume, peer.clone())
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        session_span(&started.id, &owner).in_scope(|| {
            tracing::info!(
                resumed = started.resumed,
                window = ?started.window,
                "session started"
            );
        });
        let window = prost_types::Duration::try_from(started.window)
            .map_err(|e| Status::internal(format!("heartbeat window: {e}")))?;
        let mut response = Response::new(robot::StartSessionResponse {
            id: started.id.to_string(),
            heartbeat_window: Some(window),
        });
        // A direct caller may also heartbeat over UDP (WebRTC has its own datagram channel).
        if peer.as_ref().is_some_and(|p| p.kind == PeerKind::Grpc)
            && let Some(key) = self.machine.sessions().datagram_key(&started.id)
            && let Ok(value) = key.to_header().parse()
        {
            response
                .metadata_mut()
                .insert(tether_rpc::heartbeat::udp::KEY_HEADER, value);
        }
        Ok(response)
    }

    async fn send_session_heartbeat(
        &self,
        r: Request<robot::SendSessionHeartbeatRequest>,
    ) -> Result<Response<robot::SendSessionHeartbeatResponse>, Status> {
        // A malformed id cannot name a live session: the client should start a new one.
        let id = Uuid::parse_str(&r.get_ref().id).map_err(|_| session_expired())?;
        let peer = r.extensions().get::<PeerInfo>().cloned();
        let via = if r
            .extensions()
            .get::<crate::telemetry::FromDatagram>()
            .is_some()
        {
            crate::telemetry::HeartbeatVia::webrtc_datagram
        } else {
            crate::telemetry::HeartbeatVia::call
        };
        // Tether's client says when it sent the heartbeat: the window counts from then.
        let sent_us = r
            .metadata()
            .get(tether_rpc::heartbeat::SENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        self.machine
            .sessions()
            .heartbeat(id, &owner_of(r.extensions()), peer, sent_us, via)
            .map_err(|_| session_expired())?;
        Ok(Response::new(robot::SendSessionHeartbeatResponse {}))
    }

    async fn get_sessions(
        &self,
        r: Request<robot::GetSessionsRequest>,
    ) -> Result<Response<robot::GetSessionsResponse>, Status> {
        // A caller sees its own sessions only: another owner's session ids are what it would
        // need to heartbeat them (keep them alive) or ride on them.
        let sessions = self
            .machine
            .sessions()
            .list_owned_by(&owner_of(r.extensions()))
            .into_iter()
            .map(|(id, peer)| robot::Session {
                id: id.to_string(),
                peer_connection_info: peer.map(|p| robot::PeerConnectionInfo {
                    r#type: match p.kind {
                        PeerKind::Grpc => robot::PeerConnectionType::Grpc,
                        PeerKind::WebRtc => robot::PeerConnectionType::Webrtc,
                    } as i32,
                    remote_address: p.remote.map(|a| a.to_string()),
                    local_address: p.local.map(|a| a.to_string()),
                }),
            })
            .collect();
        Ok(Response::new(robot::GetSessionsResponse { sessions }))
    }

    async fn stop_all(
        &self,
        r: Request<robot::StopAllRequest>,
    ) -> Result<Response<robot::StopAllResponse>, Status> {
        let failures = self.machine.stop_all(current(&r)).await;
        if failures.is_empty() {
            Ok(Response::new(robot::StopAllResponse {}))
        } else {
            Err(Status::internal(failures.join("; ")))
        }
    }
}
