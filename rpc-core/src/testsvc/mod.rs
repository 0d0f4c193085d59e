//! A small service for the balance and resilience tests, served in process: `Call` answers
//! with the server's name (after `sleep:MS`, or failing with `fail:CODE`), `Bidi` echoes each
//! message prefixed with the server's name.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::inproc::InProcTransport;
use crate::transport::BoxFuture;
use crate::{
    Code, IncomingCall, MethodDesc, Mode, PayloadKind, ProstCodec, Server, Service, ServiceDesc,
    Status,
};

pub(crate) static METHODS: [MethodDesc; 2] = [
    MethodDesc {
        package: "t",
        service: "Named",
        full_service: "t.Named",
        name: "Call",
        path: "/t.Named/Call",
        mode: Mode::Unary,
        payload: PayloadKind::Protobuf,
    },
    MethodDesc {
        package: "t",
        service: "Named",
        full_service: "t.Named",
        name: "Bidi",
        path: "/t.Named/Bidi",
        mode: Mode::Bidi,
        payload: PayloadKind::Protobuf,
    },
];
static DESC: ServiceDesc = ServiceDesc {
    package: "t",
    name: "Named",
    full_name: "t.Named",
    methods: &METHODS,
};

pub(crate) const CALL: &MethodDesc = &METHODS[0];
pub(crate) const BIDI: &MethodDesc = &METHODS[1];

/// The service: its name, and how many calls reached its handler.
#[derive(Clone)]
pub(crate) struct Named {
    pub(crate) name: String,
    pub(crate) calls: Arc<AtomicUsize>,
}

impl Service for Named {
    fn descriptor(&self) -> &'static ServiceDesc {
        &DESC
    }
    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        let this = self.clone();
        this.calls.fetch_add(1, Ordering::SeqCst);
        if call.method_index() == 1 {
            return Box::pin(call.bidi::<ProstCodec, String, String, _, _>(
                move |_ctx, mut s| async move {
                    while let Some(m) = s.recv().await? {
                        s.send(format!("{}:{m}", this.name)).await?;
                    }
                    Ok(())
                },
            ));
        }
        Box::pin(call.unary::<ProstCodec, String, String, _, _>(
            move |_ctx, req: String| async move {
                if let Some(ms) = req.strip_prefix("sleep:") {
                    let ms = ms.parse().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                if let Some(code) = req.strip_prefix("fail:") {
                    let code = Code::from_i32(code.parse().unwrap_or(2));
                    return Err(Status::new(code, "asked to fail"));
                }
                Ok(this.name.clone())
            },
        ))
    }
}

/// A server named `name` and its in-process transport.
pub(crate) fn named(name: &str) -> (Named, InProcTransport) {
    let svc = Named {
        name: name.to_owned(),
        calls: Arc::default(),
    };
    let server = Server::builder().add_service(svc.clone()).build();
    (svc, InProcTransport::new(server))
}
