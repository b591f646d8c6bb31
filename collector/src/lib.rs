//! The FourEyes collector as a library, so tests run the real server in-process (`server::start`
//! on port 0) and `main.rs` stays a thin flag parser.

pub mod alerts;
pub mod api;
pub mod ca;
pub mod config;
pub mod correlator;
pub mod dev;
pub mod link;
pub mod metrics;
pub mod otlp;
pub mod pathcheck;
pub mod peers;
pub mod rpki;
pub mod server;
pub mod state;
pub mod stream;
pub mod tls;
pub mod update;
pub mod validate;
pub mod web;
