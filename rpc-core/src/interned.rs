//! Method descriptors made at run time, for generic calls ([`crate::generic`]) and the
//! server's unknown-method routing: interned so every layer can keep taking
//! `&'static MethodDesc`, and bounded.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::context::{MethodDesc, Mode, PayloadKind};
use crate::status::Status;

/// How many distinct (service, method, payload kind) names [`method`] describes in one
/// process. Descriptors are `&'static` (every layer of the core and every transport takes
/// one), so they are made once and kept: the cap bounds that memory (at most
/// `MAX_GENERIC_METHODS` × about 4 × [`MAX_GENERIC_NAME_BYTES`], ~16 MiB worst case, a few
/// hundred KiB for real services). A proxy relays a finite set of IDLs; 4096 methods covers
/// large ones with room to spare, and once it is spent new names are refused
/// (`RESOURCE_EXHAUSTED` from [`method`]; an unknown-method handler's server answers them as
/// unknown methods) while the names already seen keep working.
pub const MAX_GENERIC_METHODS: usize = 4096;

/// The longest service or method name [`method`] accepts, in bytes. Longer than any real IDL
/// name; bounds what one descriptor keeps (see [`MAX_GENERIC_METHODS`]).
pub const MAX_GENERIC_NAME_BYTES: usize = 1024;

/// Descriptors by service, then method name; one per mode and payload kind.
type Table = HashMap<Box<str>, HashMap<Box<str>, [Option<&'static [MethodDesc; 4]>; 2]>>;

struct Interned {
    table: Table,
    count: usize,
}

static INTERNED: RwLock<Option<Interned>> = RwLock::new(None);

fn mode_index(mode: Mode) -> usize {
    match mode {
        Mode::Unary => 0,
        Mode::ClientStreaming => 1,
        Mode::ServerStreaming => 2,
        Mode::Bidi => 3,
    }
}

fn payload_index(payload: PayloadKind) -> usize {
    match payload {
        PayloadKind::Thrift => 1,
        _ => 0,
    }
}

fn lookup(
    t: &Interned,
    service: &str,
    name: &str,
    payload: PayloadKind,
) -> Option<&'static [MethodDesc; 4]> {
    t.table.get(service)?.get(name)?[payload_index(payload)]
}

/// The descriptor of `service`'s method `name` in `mode` with `payload` messages, made at run
/// time: for [`GenericClient`](crate::generic::GenericClient), hand-written clients of methods known only by name, and the
/// server's unknown-method routing. `service` is the fully-qualified name (`echo.TestService`;
/// the package is what comes before the last `.`), and may be empty for protocols that route
/// by method alone; the gRPC path is `/service/name`.
///
/// The same names give the same `&'static` descriptor. At most [`MAX_GENERIC_METHODS`] names
/// of at most [`MAX_GENERIC_NAME_BYTES`] each are described per process; past that this fails
/// with `RESOURCE_EXHAUSTED` (too long: `INVALID_ARGUMENT`).
pub fn method(
    service: &str,
    name: &str,
    mode: Mode,
    payload: PayloadKind,
) -> Result<&'static MethodDesc, Status> {
    if service.len() > MAX_GENERIC_NAME_BYTES || name.len() > MAX_GENERIC_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "generic method names are limited to {MAX_GENERIC_NAME_BYTES} bytes"
        )));
    }
    if name.is_empty() {
        return Err(Status::invalid_argument("a generic method needs a name"));
    }
    let read = |g: &Option<Interned>| g.as_ref().and_then(|t| lookup(t, service, name, payload));
    if let Some(descs) = read(&INTERNED.read().unwrap_or_else(|e| e.into_inner())) {
        return Ok(&descs[mode_index(mode)]);
    }
    let mut guard = INTERNED.write().unwrap_or_else(|e| e.into_inner());
    let t = guard.get_or_insert_with(|| Interned {
        table: HashMap::new(),
        count: 0,
    });
    Ok(&intern(t, MAX_GENERIC_METHODS, service, name, payload)?[mode_index(mode)])
}

/// Finds or makes the descriptors of a name in `t`, which holds at most `cap` names.
fn intern(
    t: &mut Interned,
    cap: usize,
    service: &str,
    name: &str,
    payload: PayloadKind,
) -> Result<&'static [MethodDesc; 4], Status> {
    if let Some(descs) = lookup(t, service, name, payload) {
        return Ok(descs);
    }
    if t.count >= cap {
        return Err(Status::resource_exhausted(format!(
            "no more than {cap} generic methods per process"
        )));
    }
    let descs = leak_descs(service, name, payload);
    t.table
        .entry(service.into())
        .or_default()
        .entry(name.into())
        .or_default()[payload_index(payload)] = Some(descs);
    t.count += 1;
    Ok(descs)
}

/// Makes the four descriptors (one per mode) of a name, kept for the life of the process
/// (bounded by [`MAX_GENERIC_METHODS`]).
fn leak_descs(service: &str, name: &str, payload: PayloadKind) -> &'static [MethodDesc; 4] {
    let full_service: &'static str = Box::leak(service.into());
    let name: &'static str = Box::leak(name.into());
    let path: &'static str = Box::leak(format!("/{full_service}/{name}").into_boxed_str());
    let (package, bare) = match full_service.rsplit_once('.') {
        Some((p, s)) => (p, s),
        None => ("", full_service),
    };
    let desc = |mode| MethodDesc {
        package,
        service: bare,
        full_service,
        name,
        path,
        mode,
        payload,
    };
    Box::leak(Box::new([
        desc(Mode::Unary),
        desc(Mode::ClientStreaming),
        desc(Mode::ServerStreaming),
        desc(Mode::Bidi),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_names_give_the_same_descriptor() {
        let a = method("demo.v1.Svc", "Call", Mode::Bidi, PayloadKind::Thrift).unwrap();
        let b = method("demo.v1.Svc", "Call", Mode::Bidi, PayloadKind::Thrift).unwrap();
        assert!(std::ptr::eq(a, b));
        assert_eq!(a.package, "demo.v1");
        assert_eq!(a.service, "Svc");
        assert_eq!(a.full_service, "demo.v1.Svc");
        assert_eq!(a.path, "/demo.v1.Svc/Call");
        let p = method("demo.v1.Svc", "Call", Mode::Unary, PayloadKind::Thrift).unwrap();
        assert_eq!(p.mode, Mode::Unary);
        assert!(std::ptr::eq(p.path, a.path), "one set of names per method");
        let pb = method("demo.v1.Svc", "Call", Mode::Bidi, PayloadKind::Protobuf).unwrap();
        assert_eq!(pb.payload, PayloadKind::Protobuf);
        let bare = method("", "Call", Mode::Bidi, PayloadKind::Thrift).unwrap();
        assert_eq!((bare.package, bare.service, bare.path), ("", "", "//Call"));
    }

    #[test]
    fn names_too_long_or_empty_are_refused() {
        let long = "x".repeat(MAX_GENERIC_NAME_BYTES + 1);
        let e = method(&long, "M", Mode::Bidi, PayloadKind::Thrift).unwrap_err();
        assert_eq!(e.code(), crate::Code::InvalidArgument);
        let e = method("S", "", Mode::Bidi, PayloadKind::Thrift).unwrap_err();
        assert_eq!(e.code(), crate::Code::InvalidArgument);
    }

    #[test]
    fn the_table_is_bounded_and_keeps_what_it_holds() {
        let mut t = Interned {
            table: HashMap::new(),
            count: 0,
        };
        let a = intern(&mut t, 2, "S", "a", PayloadKind::Thrift).unwrap();
        intern(&mut t, 2, "S", "b", PayloadKind::Thrift).unwrap();
        let e = intern(&mut t, 2, "S", "c", PayloadKind::Thrift).unwrap_err();
        assert_eq!(e.code(), crate::Code::ResourceExhausted);
        let again = intern(&mut t, 2, "S", "a", PayloadKind::Thrift).unwrap();
        assert!(
            std::ptr::eq(a, again),
            "names already described keep working"
        );
    }
}
