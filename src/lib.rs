//! callrelay delivers Twilio Voice call notifications to the callee's devices over APNs, FCM
//! and WebSockets. See ARCHITECTURE.md for the map.

pub mod config;
pub mod domain;
pub mod auth;
pub mod store;
