//! callrelay's integration tests: the real service on port 0, a private redis-server, real
//! WebSocket clients. Set TEST_LOG=1 to see callrelay's logs.

mod helpers;

mod admin;
mod apns;
mod architecture;
mod bindings;
mod calls;
mod chaos;
mod claims;
mod cli;
mod clients;
mod cluster;
mod console;
mod events;
mod fcm;
mod limits;
mod logs;
mod migrate;
mod mixed;
mod monitoring;
mod openapi;
mod properties;
mod redis_tls;
mod replicas;
mod ringing;
mod rooms;
mod schema;
mod secrets;
mod sentinel;
mod store;
mod store_faults;
mod token_index;
mod traces;
mod webhook;
mod websocket;
