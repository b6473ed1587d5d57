//! The WIT contract's bindings, one module per world. Each world's export
//! macro is public, so a plugin crate exports exactly the roles it names
//! (wit-bindgen then puts only those roles into the component). The WIT is
//! read from the repository's `wit/` at build time: a path or git
//! dependency on this crate needs no copy of it in the plugin.

pub mod filter {
    wit_bindgen::generate!({
        world: "filter-plugin",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "hookhost_plugin::bindings::filter",
    });
}

pub mod transform {
    wit_bindgen::generate!({
        world: "transform-plugin",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "hookhost_plugin::bindings::transform",
    });
}

pub mod router {
    wit_bindgen::generate!({
        world: "router-plugin",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "hookhost_plugin::bindings::router",
    });
}
