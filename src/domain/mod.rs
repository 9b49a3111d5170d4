//! The vocabulary of callrelay: identifiers, bindings, call notifications and socket presences,
//! each parsed once at the edge.

mod binding;
mod event;
mod ids;
pub mod ledger;
mod notification;
mod presence;
pub mod ringing;
pub mod trace;

pub use binding::{
    ApnsEnvironment, Binding, BindingRequest, DEFAULT_TTL_SECONDS, InvalidBinding, PushChannel,
    PushType, check_app_name, valid_device_id, whole_millis,
};
pub use event::{
    CloudEvent, Envelope, Family, InvalidEvent, StatusCallback, StatusEvent, type_matches,
};
pub use ids::{AccountSid, ApiKeySid, BindingId, CallSid, Identity, InvalidId, RoomSid};
pub use notification::{CallNotification, InvalidNotification};
pub use presence::SocketPresence;

/// What is kept of a free-form string from Twilio's payloads and events (a caller id, an
/// event type): at most 128 characters.
pub(crate) fn clipped(text: &str) -> String {
    text.chars().take(128).collect()
}
