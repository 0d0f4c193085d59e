//! Routing: from the names a transport read off the wire to a hosted method, in O(1).
//!
//! Built once when the server is built: services by fully-qualified and bare name, methods by
//! name within a service, and every gRPC `:path` (`/pkg.Service/Method` and
//! `/Service/Method`). A miss is a typed [`RouteError`] that tells an unknown service from an
//! unknown method, so each transport answers in its own terms (a ttstream Trailer exception of
//! type 20 or 1, gRPC `UNIMPLEMENTED`).
//!
//! The tables hash names with foldhash (a folded multiply, the hasher hashbrown uses), not
//! std's SipHash: every key is a name the server
//! registered when it was built, and nothing a peer sends is ever inserted, so a peer cannot grow
//! a bucket; a name crafted to collide only makes its own lookup compare against the few
//! routes in one bucket (at most every route the server hosts). SipHash's flooding resistance
//! buys nothing here and cost about 370 instructions per call (two lookups for TTHeader).

use std::collections::HashMap;

use crate::context::{MethodDesc, Mode, PayloadKind, ServiceDesc};
use crate::status::Status;

/// The result of routing a service and method name.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub(crate) service_index: usize,
    pub(crate) method_index: usize,
    pub(crate) method: &'static MethodDesc,
}

/// The `service_index` of a route to the server's unknown-method handler.
pub(crate) const FALLBACK_INDEX: usize = usize::MAX;

impl Route {
    /// The resolved method.
    pub fn method(&self) -> &'static MethodDesc {
        self.method
    }

    /// A route to the unknown-method handler for `method` (a generic descriptor).
    pub(crate) fn fallback(method: &'static MethodDesc) -> Route {
        Route {
            service_index: FALLBACK_INDEX,
            method_index: 0,
            method,
        }
    }

    /// Whether this route goes to the server's
    /// [unknown-method handler](crate::ServerBuilder::unknown_method_handler).
    pub fn is_unknown_method(&self) -> bool {
        self.service_index == FALLBACK_INDEX
    }

    /// For a transport whose framing says the call is unary (TTHeader unary, a Thrift
    /// CALL): a route to the unknown-method handler then runs its unary handler instead
    /// of the bidi one it gets when the mode is not known. Other routes are returned as they
    /// are (their mode is the IDL's).
    pub fn framed_as_unary(self) -> Route {
        if !self.is_unknown_method() || self.method.mode == Mode::Unary {
            return self;
        }
        let m = self.method;
        match crate::interned::method(m.full_service, m.name, Mode::Unary, m.payload) {
            Ok(method) => Route { method, ..self },
            Err(_) => self,
        }
    }
}

/// Splits a gRPC `:path` into service and method (`/pkg.Service/Method`), when well formed.
pub(crate) fn split_path(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'))
}

/// Why a stream could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// No hosted service has this name.
    #[error("unknown service {0}")]
    UnknownService(String),
    /// The service is hosted but has no such method (for this payload kind).
    #[error("unknown method {method} of service {service}")]
    UnknownMethod {
        /// The service name as given (may be empty when the protocol carries none).
        service: String,
        /// The method name as given.
        method: String,
    },
    /// The service name was empty and several hosted services have the method.
    #[error("ambiguous: more than one service has method {0}")]
    Ambiguous(String),
    /// A gRPC `:path` that is not `/Service/Method`.
    #[error("malformed path {0:?}")]
    MalformedPath(String),
}

impl RouteError {
    /// Whether the service itself is unknown (vs. a method of a known service).
    pub fn is_unknown_service(&self) -> bool {
        matches!(self, RouteError::UnknownService(_))
    }
}

impl From<RouteError> for Status {
    fn from(e: RouteError) -> Status {
        Status::unimplemented(e.to_string())
    }
}

/// Candidates for one name: usually one; two when the thrift and protobuf flavours of a service
/// are hosted side by side.
type Candidates = Vec<Route>;

/// The router's tables: foldhash (see the [module docs](self) for why it is safe here).
type NameMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The routing tables of one server.
#[derive(Debug, Default)]
pub(crate) struct Router {
    /// Service name (full and bare) → method name → routes.
    services: NameMap<&'static str, NameMap<&'static str, Candidates>>,
    /// Method name → routes, for protocols without a service name.
    methods: NameMap<&'static str, Candidates>,
    /// gRPC path → routes.
    paths: NameMap<Box<str>, Candidates>,
}

fn pick(routes: &[Route], payload: Option<PayloadKind>) -> Option<Result<Route, ()>> {
    let mut found = None;
    for r in routes {
        if payload.is_none_or(|p| r.method.payload == p) {
            if found.is_some() {
                return Some(Err(()));
            }
            found = Some(*r);
        }
    }
    found.map(Ok)
}

impl Router {
    pub(crate) fn new(descs: &[&'static ServiceDesc]) -> Router {
        let mut router = Router::default();
        for (service_index, desc) in descs.iter().enumerate() {
            for (method_index, method) in desc.methods.iter().enumerate() {
                let route = Route {
                    service_index,
                    method_index,
                    method,
                };
                let mut names = vec![desc.full_name];
                if desc.name != desc.full_name {
                    names.push(desc.name);
                }
                for name in names {
                    let by_method = router.services.entry(name).or_default();
                    by_method.entry(method.name).or_default().push(route);
                    router
                        .paths
                        .entry(format!("/{name}/{}", method.name).into_boxed_str())
                        .or_default()
                        .push(route);
                }
                router.methods.entry(method.name).or_default().push(route);
            }
            // A service without methods is still known by name.
            router.services.entry(desc.full_name).or_default();
            router.services.entry(desc.name).or_default();
        }
        // A full name and a bare name can coincide across services (`Echo` and `Echo` in no
        // package): keep each route once per key.
        for list in router
            .services
            .values_mut()
            .flat_map(|m| m.values_mut())
            .chain(router.paths.values_mut())
        {
            list.dedup_by(|a, b| {
                a.service_index == b.service_index && a.method_index == b.method_index
            });
        }
        router
    }

    /// Routes by service and method name. The full name (`echo.TestService`) wins over a bare
    /// name (`TestService`) that another service might share.
    pub(crate) fn resolve(
        &self,
        service: &str,
        method: &str,
        payload: Option<PayloadKind>,
    ) -> Result<Route, RouteError> {
        let unknown_method = || RouteError::UnknownMethod {
            service: service.to_owned(),
            method: method.to_owned(),
        };
        if service.is_empty() {
            return match self.methods.get(method).and_then(|r| pick(r, payload)) {
                Some(Ok(r)) => Ok(r),
                Some(Err(())) => Err(RouteError::Ambiguous(method.to_owned())),
                None => Err(unknown_method()),
            };
        }
        let Some(methods) = self.services.get(service) else {
            return Err(RouteError::UnknownService(service.to_owned()));
        };
        match methods.get(method).and_then(|r| pick(r, payload)) {
            Some(Ok(r)) => Ok(r),
            Some(Err(())) => Err(RouteError::Ambiguous(method.to_owned())),
            None => Err(unknown_method()),
        }
    }

    /// Routes a gRPC `:path` (`/pkg.Service/Method` or `/Service/Method`) with one hash lookup.
    pub(crate) fn resolve_path(
        &self,
        path: &str,
        payload: Option<PayloadKind>,
    ) -> Result<Route, RouteError> {
        if let Some(Ok(r)) = self.paths.get(path).and_then(|r| pick(r, payload)) {
            return Ok(r);
        }
        // Slow path, errors only: say what is wrong.
        let Some((service, method)) = split_path(path) else {
            return Err(RouteError::MalformedPath(path.to_owned()));
        };
        self.resolve(service, method, payload)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::*;

    fn hash(s: &str) -> u64 {
        foldhash::fast::FixedState::default().hash_one(s)
    }

    #[test]
    fn names_that_differ_anywhere_hash_apart() {
        // Every prefix of a long name, names one byte apart, and names padded with zero bytes.
        let long = "/echo.v1.TestService/BidirectionalStreamingEchoWithMetadata";
        let mut names: Vec<String> = (0..=long.len()).map(|n| long[..n].to_owned()).collect();
        names.extend((b'a'..=b'z').map(|c| format!("/echo.TestService/Ping{}", c as char)));
        names.extend((1..=9).map(|n| format!("ab{}", "\0".repeat(n))));
        let hashes: HashSet<u64> = names.iter().map(|n| hash(n)).collect();
        assert_eq!(hashes.len(), names.len());
        // hashbrown's control byte comes from the top 7 bits: they vary too.
        let tops: HashSet<u64> = names.iter().map(|n| hash(n) >> 57).collect();
        assert!(tops.len() > 32, "top bits poorly spread: {}", tops.len());
    }

    #[test]
    fn routes_resolve_by_name_and_by_path() {
        static METHODS: [MethodDesc; 2] = [
            MethodDesc {
                package: "demo",
                service: "Upper",
                full_service: "demo.Upper",
                name: "Call",
                path: "/demo.Upper/Call",
                mode: crate::context::Mode::Unary,
                payload: PayloadKind::Protobuf,
            },
            MethodDesc {
                package: "demo",
                service: "Upper",
                full_service: "demo.Upper",
                name: "Stream",
                path: "/demo.Upper/Stream",
                mode: crate::context::Mode::Bidi,
                payload: PayloadKind::Protobuf,
            },
        ];
        static DESC: ServiceDesc = ServiceDesc {
            package: "demo",
            name: "Upper",
            full_name: "demo.Upper",
            methods: &METHODS,
        };
        let router = Router::new(&[&DESC]);
        for service in ["demo.Upper", "Upper"] {
            let r = router.resolve(service, "Stream", None).unwrap();
            assert_eq!(r.method_index, 1);
        }
        assert_eq!(router.resolve("", "Call", None).unwrap().method_index, 0);
        assert_eq!(
            router
                .resolve_path("/Upper/Call", None)
                .unwrap()
                .method_index,
            0
        );
        assert!(matches!(
            router.resolve("demo.Upper", "Nope", None),
            Err(RouteError::UnknownMethod { .. })
        ));
        assert!(matches!(
            router.resolve("demo.Lower", "Call", None),
            Err(RouteError::UnknownService(_))
        ));
    }
}
