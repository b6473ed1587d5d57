//! The plugin runtime's integration tests, one binary: real compiled
//! components (the example plugins and the test guests under `guests/`),
//! loaded by a real wasmtime engine. `./dev test` builds the components first.

mod example_plugins;
mod faults;
mod hot_reload;
mod util;
