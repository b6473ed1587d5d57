//! A valid WebAssembly component that exports an unrelated interface, so the
//! host must refuse it as "does not implement the hookhost plugin contract".

wit_bindgen::generate!({
    inline: "
        package other:thing@1.0.0;
        interface greeter { greet: func(name: string) -> string; }
        world wrong { export greeter; }
    ",
});

struct Wrong;

impl exports::other::thing::greeter::Guest for Wrong {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Wrong);
