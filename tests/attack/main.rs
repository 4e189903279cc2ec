//! The attack suite: the whole gateway against hostile input and a bad day on the floor
//! (issue #15). One module per component.

#[path = "../common/mod.rs"]
mod common;

mod store;
