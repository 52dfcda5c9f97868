//! The provider's side of the market: what it sets up on its machine (folders and
//! nginx's routes), what it offers and tests at start-up, and the usage counters it is
//! paid by.
//! - `deploy`: the folders and files an activity needs before its node starts.
//! - `nginx`: the routes file nginx includes, and checks of the shipped site.
//! - `offer`: the offer template and the self-test ya-provider runs (`test`).
//! - `billing`: the usage counters the descriptor declares, reported to the ExeUnit.

pub mod billing;
pub mod deploy;
pub mod nginx;
pub mod offer;
