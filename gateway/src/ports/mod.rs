//! What listens on each port: the front ends mounted side by side. The REST port
//! dispatches by prefix (`rest.rs`); the gRPC listeners serve TF Serving's services and
//! V2's in one set of routes (`grpc.rs`). The only place that knows every front end.

pub mod grpc;
pub mod rest;
