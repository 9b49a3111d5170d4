//! callrelay delivers Twilio Voice call notifications to the callee's devices over APNs, FCM
//! and WebSockets, and keeps Twilio's other events (status callbacks, Event Streams) for app
//! backends, live and forwarded. `ARCHITECTURE.md` has the map; [`app::start`] is the entry point.

pub mod app;
pub mod auth;
pub mod channels;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod forward;
pub mod http;
pub mod metrics;
pub mod relay;
pub mod store;
pub mod telemetry;

pub use app::{App, Listeners, Options, StartError, start};
pub use config::Config;
