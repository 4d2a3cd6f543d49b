//! The network edge: what stands between a client on the internet and the
//! handlers. Caps on connections (per client address, and in total from the
//! open-files limit), the client's address behind trusted proxies, the
//! per-account throttle of failed logins, and rate-limited logging of what
//! misbehaving clients cause.

pub mod connections;
pub mod forwarded;
pub mod log_limit;
pub mod login_throttle;

pub use connections::{ConnectionLimits, Slot};
pub use forwarded::TrustedProxies;
pub use log_limit::LogLimiter;
pub use login_throttle::{Attempt, LoginThrottle};
