//! callrelay-testkit: local stand-ins for Apple's and Google's push services, over the real
//! protocols (HTTP/2 over TLS with certificates the tests generate), shared by the integration
//! tests (`tests/it/`) and the benchmark harness (`benches/relay/`); and an OpenTelemetry
//! collector's OTLP/HTTP trace endpoint.

pub mod apns;
pub mod fcm;
pub mod otlp;
pub mod tls;
