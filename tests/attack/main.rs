//! The attack suite: each finding of the hardening review (a hostile device, a hostile
//! dashboard, a bad day on the floor) as a test against the real gateway. One module per area.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod broker;
mod devices;
mod logs;
mod store;
