//! End-to-end: the standard gRPC health service and server reflection, as load balancers and
//! `grpcurl` use them, against a real `lockstep serve` on loopback.
//!
//! * Health answers SERVING for the server and for each service of the port, NOT_FOUND for what
//!   the port does not serve; a watch sees NOT_SERVING at a graceful shutdown and ends, and the
//!   shutdown is not held back by it.
//! * Reflection (v1 and v1alpha) lists every service of the port and describes lockstep's by
//!   symbol; with a separate Admin port, each port lists its own.

mod support;

use std::time::Duration;

use prost::Message;
use support::Server;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha;

const T: Duration = Duration::from_secs(20);

const LOCKSTEP_SERVICES: [&str; 9] = [
    "lockstep.v1.History",
    "lockstep.v1.Intake",
    "lockstep.v1.Lockstep",
    "lockstep.v1.Rounds",
    "lockstep.v1.SharedContext",
    "lockstep.v1.Streams",
    "lockstep.v1.Systems",
    "lockstep.v1.Tasks",
    "lockstep.v1.Traces",
];

const STANDARD: [&str; 3] =
    ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

async fn check(health: &mut HealthClient<Channel>, service: &str) -> Result<i32, tonic::Status> {
    Ok(health.check(HealthCheckRequest { service: service.into() }).await?.into_inner().status)
}

/// One reflection request on a v1 stream, and its answer.
async fn reflect(addr: &str, request: MessageRequest) -> Result<MessageResponse, tonic::Status> {
    let mut client = ServerReflectionClient::new(channel(addr).await);
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let mut answers = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    Ok(answers.next().await.expect("an answer")?.message_response.expect("a message"))
}

/// The services a port lists through reflection v1, sorted.
async fn listed(addr: &str) -> Vec<String> {
    let MessageResponse::ListServicesResponse(list) =
        reflect(addr, MessageRequest::ListServices(String::new())).await.unwrap()
    else {
        panic!("not a service list")
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn health_says_serving_until_a_graceful_shutdown_and_its_watch_ends_then() {
    let mut server = Server::start(&[]);
    let mut health = HealthClient::new(channel(&server.addr).await);
    let serving = ServingStatus::Serving as i32;
    assert_eq!(check(&mut health, "").await.unwrap(), serving);
    for service in LOCKSTEP_SERVICES.iter().chain(&["lockstep.v1.Admin"]).chain(&STANDARD) {
        assert_eq!(check(&mut health, service).await.unwrap(), serving, "{service}");
    }
    let unknown = check(&mut health, "lockstep.v1.Nothing").await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(unknown.message().contains("lockstep.v1.Lockstep"), "names what the port serves: {unknown:?}");

    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().status, serving);
    assert!(server.terminate(T), "SIGTERM with a health watch open still ends the server cleanly");
    let last = tokio::time::timeout(T, watch.next()).await.expect("told in time");
    assert_eq!(last.unwrap().unwrap().status, ServingStatus::NotServing as i32);
    assert!(tokio::time::timeout(T, watch.next()).await.expect("ends in time").is_none(), "the watch ends");
}

#[tokio::test]
async fn reflection_lists_and_describes_the_services_of_each_port() {
    let server = Server::start(&[]);
    let everything: Vec<&str> =
        LOCKSTEP_SERVICES.iter().chain(&["lockstep.v1.Admin"]).chain(&STANDARD).copied().collect();
    assert_eq!(listed(&server.addr).await, sorted(&everything));

    // A symbol's file describes it: lockstep.proto, with the Lockstep service and its methods.
    let symbol = MessageRequest::FileContainingSymbol("lockstep.v1.Lockstep".into());
    let MessageResponse::FileDescriptorResponse(files) = reflect(&server.addr, symbol).await.unwrap() else {
        panic!("not a file descriptor")
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.package(), "lockstep.v1");
    let service = file.service.iter().find(|s| s.name() == "Lockstep").expect("the Lockstep service");
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    assert!(methods.contains(&"Session") && methods.contains(&"ListAgents"), "{methods:?}");
    let unknown = MessageRequest::FileContainingSymbol("lockstep.v1.Nothing".into());
    let error = reflect(&server.addr, unknown).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound, "{error:?}");

    // v1alpha, which older tools ask, lists the same.
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel(&server.addr).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut answers = alpha.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list")
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, sorted(&everything));
}

#[tokio::test]
async fn a_separate_admin_port_serves_health_and_reflection_of_its_own() {
    let server = Server::start(&["--admin-listen", "127.0.0.1:0"]);
    assert_ne!(server.addr, server.admin_addr);
    let agents: Vec<&str> = LOCKSTEP_SERVICES.iter().chain(&STANDARD).copied().collect();
    let admin: Vec<&str> = ["lockstep.v1.Admin"].iter().chain(&STANDARD).copied().collect();
    assert_eq!(listed(&server.addr).await, sorted(&agents));
    assert_eq!(listed(&server.admin_addr).await, sorted(&admin));
    let mut health = HealthClient::new(channel(&server.admin_addr).await);
    assert_eq!(check(&mut health, "lockstep.v1.Admin").await.unwrap(), ServingStatus::Serving as i32);
    let elsewhere = check(&mut health, "lockstep.v1.Lockstep").await.unwrap_err();
    assert_eq!(elsewhere.code(), tonic::Code::NotFound, "the agents' service is on the other port");
}
