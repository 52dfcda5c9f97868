//! Who may call an activity's endpoint, and through which door: the per-activity user
//! and password, the files nginx checks them against, and the seats (kept-alive
//! gateway sockets) an activity's traffic arrives on.
//!
//! Everything here is written so that another activity's entry is never lost and a
//! revoked one never works again; the files are shared by every runtime on the
//! machine, so each change is locked and atomic.
//! - `credentials`: a fresh user and password, valid while the activity runs, and
//!   revoked when the value is dropped.
//! - `htpasswd`: the activities' folder: each activity's password file, its owner
//!   record and its gateway's socket.
//! - `hash`: how a password is stored, and what each scheme costs nginx per request.
//! - `seat`: the fixed set of gateway sockets nginx keeps connections alive to.

pub mod credentials;
pub mod hash;
pub mod htpasswd;
pub mod seat;
