//! hookhost's end-to-end tests, one binary: the real `hookhost` binary or a
//! real server, real compiled plugins, real HTTP over loopback, real sled
//! files and real process kills. `./dev test` builds the binary and the
//! plugins first.

mod aggregation;
mod api;
mod backlog;
mod catalog;
mod cli;
mod cluster;
mod connections;
mod crash;
mod database_tls;
mod delivery;
mod disk;
mod examples;
mod languages;
mod ordering;
mod pipeline;
mod receivers;
mod retention;
mod serve;
mod shadow;
mod store;
mod ui;
mod upload;
