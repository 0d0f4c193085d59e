//! Generated code included the way `rpc_core::include_generated!` includes it — at the root of
//! a crate that denies warnings and a strict set of lints — compiles cleanly although this
//! crate uses one method of one client and nothing else (so every other item is dead code).
#![deny(
    warnings,
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    trivial_casts,
    trivial_numeric_casts,
    unused_extern_crates,
    unused_import_braces,
    unused_lifetimes,
    unused_qualifications,
    unused_results,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::nursery
)]

mod thrift_stubs {
    include!("golden/echo_thrift.rs");
}

mod proto_stubs {
    include!("golden/echo_proto.rs");
}

mod sink_stubs {
    include!("golden/kitchen_sink_thrift.rs");
}

mod sink_proto_stubs {
    include!("golden/sink_proto.rs");
}

mod collision_stubs {
    include!("golden/collisions_thrift.rs");
}

mod collision_proto_stubs {
    include!("golden/collisions_proto.rs");
}

/// A client that only ever calls `ping_pong`.
async fn call_one(client: &thrift_stubs::TestServiceClient) -> Option<String> {
    let req = thrift_stubs::Request {
        message: "hi".into(),
        ..Default::default()
    };
    client.ping_pong(req).await.ok().map(|r| r.message)
}

#[test]
fn one_method_of_one_client_is_enough() {
    let client = thrift_stubs::TestServiceClient::new(rpc_core::Client::new(
        rpc_core::inproc::InProcTransport::new(rpc_core::Server::builder().build()),
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // No service is registered: the call fails, which is all this test needs.
    assert_eq!(rt.block_on(call_one(&client)), None);
}
