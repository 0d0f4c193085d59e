//! Typed error details: the `google.rpc` error model (`google/rpc/status.proto` and
//! `google/rpc/error_details.proto`) on [`Status`], as `tonic-types` offers it to tonic users.
//!
//! A status's [`details`](Status::details) bytes are, by gRPC convention, an encoded
//! `google.rpc.Status` ([`RpcStatus`]) whose `details` are `google.protobuf.Any`s holding the
//! standard detail messages: [`ErrorInfo`], [`RetryInfo`], [`DebugInfo`], [`QuotaFailure`],
//! [`PreconditionFailure`], [`BadRequest`], [`RequestInfo`], [`ResourceInfo`], [`Help`],
//! [`LocalizedMessage`]. Every gRPC implementation's rich-error support reads and writes this
//! form (grpc-go's `status.WithDetails`, grpcio's `grpcio-status`, tonic-types,
//! Kitex's `GRPCStatusIface`); the gRPC transport carries it in `grpc-status-details-bin`.
//!
//! Build one with [`Status::with_error_details`] (or [`Status::with_error_details_vec`]) and
//! read it with [`Status::get_error_details`] or one of the `get_details_*` accessors:
//!
//! ```
//! use std::time::Duration;
//! use rpc_core::error_details::ErrorDetails;
//! use rpc_core::{Code, Status};
//!
//! // A handler refusing a request, telling the client which fields are wrong and when to retry.
//! let mut details = ErrorDetails::with_bad_request_violation("name", "must not be empty");
//! details
//!     .add_bad_request_violation("age", "must be positive")
//!     .set_retry_info(Some(Duration::from_secs(2)));
//! let status = Status::with_error_details(Code::InvalidArgument, "bad request", details);
//!
//! // The client, on the other end of any transport that carries details.
//! let bad = status.get_details_bad_request().expect("a BadRequest");
//! assert_eq!(bad.field_violations[1].field, "age");
//! let retry = status.get_details_retry_info().expect("a RetryInfo");
//! assert_eq!(retry.retry_delay(), Some(Duration::from_secs(2)));
//! ```
//!
//! # Transports
//!
//! - **gRPC**: `grpc-status-details-bin`, both ways, with every gRPC peer.
//! - **TTHeader and TTHeader Streaming**: not carried. Kitex sends gRPC status details only
//!   over gRPC (its `GRPCStatusIface` status travels in `grpc-status-details-bin` of its HTTP/2
//!   transport); its TTHeader codecs carry a business status as `biz-status`, `biz-message` and
//!   `biz-extra` and nothing else, so there is no header a Kitex peer would read them from. Use
//!   a business status ([`Status::biz_error`], its `extra` map) for structured errors a Kitex
//!   client over TTHeader must see.
//!
//! The messages are prost 0.14 messages (`prost::Message`), with `google.protobuf.Any` and
//! `Duration` from prost-types, so they pass to tonic-types' or any other prost code as bytes
//! and to `prost_types::Any::to_msg`-style helpers as they are. This module is the
//! `error-details` feature of rpc-core (on by default; it adds only prost-types). It lives in
//! rpc-core, not in a separate crate, so the constructors and accessors are `Status`'s own
//! methods (no extension trait to import, unlike tonic-types' `StatusExt`) and read the same
//! on every transport's statuses.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use prost_types::Any;

use crate::status::{Code, Status};

/// The type URL prefix of every standard detail (`type.googleapis.com/<full name>`).
const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// A message of `google.rpc` with its fully qualified protobuf name.
pub trait DetailMessage: Message + Default {
    /// The full protobuf name, e.g. `google.rpc.BadRequest`.
    const NAME: &'static str;

    /// The type URL an `Any` holding it carries: `type.googleapis.com/<NAME>`.
    fn type_url() -> String {
        format!("{TYPE_URL_PREFIX}{}", Self::NAME)
    }

    /// Packs it into a `google.protobuf.Any`.
    fn to_any(&self) -> Any {
        Any {
            type_url: Self::type_url(),
            value: self.encode_to_vec(),
        }
    }

    /// Unpacks it from `any`: `Ok(None)` when `any` holds another type (the type URL's last
    /// path segment names the type, as protobuf's `Any.Is` reads it).
    fn from_any(any: &Any) -> Result<Option<Self>, prost::DecodeError> {
        let name = any.type_url.rsplit('/').next().unwrap_or_default();
        if name != Self::NAME {
            return Ok(None);
        }
        Self::decode(any.value.as_slice()).map(Some)
    }
}

/// `google.rpc.Status`: the whole error model in one message, what `grpc-status-details-bin`
/// holds. Its `code` and `message` repeat the status's own.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// The status code (a `google.rpc.Code` value).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// The details: any messages, usually the standard ones of this module.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

impl DetailMessage for RpcStatus {
    const NAME: &'static str = "google.rpc.Status";
}

/// `google.rpc.ErrorInfo`: why the error happened, as a machine-readable reason in a domain.
#[derive(Clone, PartialEq, Message)]
pub struct ErrorInfo {
    /// The reason, an UPPER_SNAKE_CASE constant unique within the domain.
    #[prost(string, tag = "1")]
    pub reason: String,
    /// The logical grouping the reason belongs to (usually the service's DNS name).
    #[prost(string, tag = "2")]
    pub domain: String,
    /// Further structured details (keys lowerCamelCase, at most 64 characters).
    #[prost(map = "string, string", tag = "3")]
    pub metadata: HashMap<String, String>,
}

impl DetailMessage for ErrorInfo {
    const NAME: &'static str = "google.rpc.ErrorInfo";
}

/// `google.rpc.RetryInfo`: when the client may retry.
#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    /// How long to wait before retrying.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<prost_types::Duration>,
}

impl RetryInfo {
    /// The delay as a `std::time::Duration` (`None` when absent or negative).
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_delay.and_then(|d| Duration::try_from(d).ok())
    }
}

impl DetailMessage for RetryInfo {
    const NAME: &'static str = "google.rpc.RetryInfo";
}

/// `google.rpc.DebugInfo`: debugging information (a stack trace and a detail text).
#[derive(Clone, PartialEq, Message)]
pub struct DebugInfo {
    /// The stack trace entries.
    #[prost(string, repeated, tag = "1")]
    pub stack_entries: Vec<String>,
    /// Further debugging information.
    #[prost(string, tag = "2")]
    pub detail: String,
}

impl DetailMessage for DebugInfo {
    const NAME: &'static str = "google.rpc.DebugInfo";
}

/// `google.rpc.QuotaFailure`: which quotas were exceeded.
#[derive(Clone, PartialEq, Message)]
pub struct QuotaFailure {
    /// The quota violations.
    #[prost(message, repeated, tag = "1")]
    pub violations: Vec<QuotaViolation>,
}

impl DetailMessage for QuotaFailure {
    const NAME: &'static str = "google.rpc.QuotaFailure";
}

/// `google.rpc.QuotaFailure.Violation`.
#[derive(Clone, PartialEq, Message)]
pub struct QuotaViolation {
    /// The subject the quota applies to (e.g. `"clientip:<ip>"` or `"project:<id>"`).
    #[prost(string, tag = "1")]
    pub subject: String,
    /// How the quota was exceeded.
    #[prost(string, tag = "2")]
    pub description: String,
}

/// `google.rpc.PreconditionFailure`: which preconditions failed.
#[derive(Clone, PartialEq, Message)]
pub struct PreconditionFailure {
    /// The precondition violations.
    #[prost(message, repeated, tag = "1")]
    pub violations: Vec<PreconditionViolation>,
}

impl DetailMessage for PreconditionFailure {
    const NAME: &'static str = "google.rpc.PreconditionFailure";
}

/// `google.rpc.PreconditionFailure.Violation`.
#[derive(Clone, PartialEq, Message)]
pub struct PreconditionViolation {
    /// The kind of precondition, service-specific (e.g. `"TOS"`).
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// The subject that failed it, relative to the type.
    #[prost(string, tag = "2")]
    pub subject: String,
    /// How it failed.
    #[prost(string, tag = "3")]
    pub description: String,
}

/// `google.rpc.BadRequest`: which fields of the request are invalid.
#[derive(Clone, PartialEq, Message)]
pub struct BadRequest {
    /// The field violations.
    #[prost(message, repeated, tag = "1")]
    pub field_violations: Vec<FieldViolation>,
}

impl DetailMessage for BadRequest {
    const NAME: &'static str = "google.rpc.BadRequest";
}

/// `google.rpc.BadRequest.FieldViolation`.
#[derive(Clone, PartialEq, Message)]
pub struct FieldViolation {
    /// A path to the field (e.g. `"items[2].name"`).
    #[prost(string, tag = "1")]
    pub field: String,
    /// Why the value is invalid.
    #[prost(string, tag = "2")]
    pub description: String,
    /// The reason, an UPPER_SNAKE_CASE constant (newer `error_details.proto` revisions).
    #[prost(string, tag = "3")]
    pub reason: String,
    /// A localized version of the description.
    #[prost(message, optional, tag = "4")]
    pub localized_message: Option<LocalizedMessage>,
}

/// `google.rpc.RequestInfo`: which request failed, for a bug report.
#[derive(Clone, PartialEq, Message)]
pub struct RequestInfo {
    /// An opaque id of the request in the service's logs.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// Any data that was used to serve it (e.g. an encrypted stack trace).
    #[prost(string, tag = "2")]
    pub serving_data: String,
}

impl DetailMessage for RequestInfo {
    const NAME: &'static str = "google.rpc.RequestInfo";
}

/// `google.rpc.ResourceInfo`: which resource is involved.
#[derive(Clone, PartialEq, Message)]
pub struct ResourceInfo {
    /// The resource's type (e.g. `"sql table"` or a type URL).
    #[prost(string, tag = "1")]
    pub resource_type: String,
    /// The resource's name.
    #[prost(string, tag = "2")]
    pub resource_name: String,
    /// Its owner, if any.
    #[prost(string, tag = "3")]
    pub owner: String,
    /// What went wrong with it.
    #[prost(string, tag = "4")]
    pub description: String,
}

impl DetailMessage for ResourceInfo {
    const NAME: &'static str = "google.rpc.ResourceInfo";
}

/// `google.rpc.Help`: links to documentation.
#[derive(Clone, PartialEq, Message)]
pub struct Help {
    /// The links.
    #[prost(message, repeated, tag = "1")]
    pub links: Vec<HelpLink>,
}

impl DetailMessage for Help {
    const NAME: &'static str = "google.rpc.Help";
}

/// `google.rpc.Help.Link`.
#[derive(Clone, PartialEq, Message)]
pub struct HelpLink {
    /// What the link offers.
    #[prost(string, tag = "1")]
    pub description: String,
    /// The URL.
    #[prost(string, tag = "2")]
    pub url: String,
}

/// `google.rpc.LocalizedMessage`: the error message in the user's language.
#[derive(Clone, PartialEq, Message)]
pub struct LocalizedMessage {
    /// The locale (BCP 47, e.g. `"en-US"`).
    #[prost(string, tag = "1")]
    pub locale: String,
    /// The message in that locale.
    #[prost(string, tag = "2")]
    pub message: String,
}

impl DetailMessage for LocalizedMessage {
    const NAME: &'static str = "google.rpc.LocalizedMessage";
}

/// One standard detail, for the ordered form ([`Status::with_error_details_vec`],
/// [`Status::get_error_details_vec`]) that keeps repeats and order as they are on the wire.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ErrorDetail {
    /// [`ErrorInfo`].
    ErrorInfo(ErrorInfo),
    /// [`RetryInfo`].
    RetryInfo(RetryInfo),
    /// [`DebugInfo`].
    DebugInfo(DebugInfo),
    /// [`QuotaFailure`].
    QuotaFailure(QuotaFailure),
    /// [`PreconditionFailure`].
    PreconditionFailure(PreconditionFailure),
    /// [`BadRequest`].
    BadRequest(BadRequest),
    /// [`RequestInfo`].
    RequestInfo(RequestInfo),
    /// [`ResourceInfo`].
    ResourceInfo(ResourceInfo),
    /// [`Help`].
    Help(Help),
    /// [`LocalizedMessage`].
    LocalizedMessage(LocalizedMessage),
}

impl ErrorDetail {
    /// Packs it into a `google.protobuf.Any`.
    pub fn to_any(&self) -> Any {
        match self {
            ErrorDetail::ErrorInfo(m) => m.to_any(),
            ErrorDetail::RetryInfo(m) => m.to_any(),
            ErrorDetail::DebugInfo(m) => m.to_any(),
            ErrorDetail::QuotaFailure(m) => m.to_any(),
            ErrorDetail::PreconditionFailure(m) => m.to_any(),
            ErrorDetail::BadRequest(m) => m.to_any(),
            ErrorDetail::RequestInfo(m) => m.to_any(),
            ErrorDetail::ResourceInfo(m) => m.to_any(),
            ErrorDetail::Help(m) => m.to_any(),
            ErrorDetail::LocalizedMessage(m) => m.to_any(),
        }
    }

    /// Unpacks a standard detail from `any`: `Ok(None)` for a type that is not one of them.
    pub fn from_any(any: &Any) -> Result<Option<ErrorDetail>, prost::DecodeError> {
        fn try_as<M: DetailMessage>(
            any: &Any,
            wrap: fn(M) -> ErrorDetail,
        ) -> Result<Option<ErrorDetail>, prost::DecodeError> {
            Ok(M::from_any(any)?.map(wrap))
        }
        let name = any.type_url.rsplit('/').next().unwrap_or_default();
        match name {
            ErrorInfo::NAME => try_as(any, ErrorDetail::ErrorInfo),
            RetryInfo::NAME => try_as(any, ErrorDetail::RetryInfo),
            DebugInfo::NAME => try_as(any, ErrorDetail::DebugInfo),
            QuotaFailure::NAME => try_as(any, ErrorDetail::QuotaFailure),
            PreconditionFailure::NAME => try_as(any, ErrorDetail::PreconditionFailure),
            BadRequest::NAME => try_as(any, ErrorDetail::BadRequest),
            RequestInfo::NAME => try_as(any, ErrorDetail::RequestInfo),
            ResourceInfo::NAME => try_as(any, ErrorDetail::ResourceInfo),
            Help::NAME => try_as(any, ErrorDetail::Help),
            LocalizedMessage::NAME => try_as(any, ErrorDetail::LocalizedMessage),
            _ => Ok(None),
        }
    }
}

macro_rules! from_detail {
    ($($t:ident),*) => {$(
        impl From<$t> for ErrorDetail {
            fn from(m: $t) -> ErrorDetail {
                ErrorDetail::$t(m)
            }
        }
    )*};
}

from_detail!(
    ErrorInfo,
    RetryInfo,
    DebugInfo,
    QuotaFailure,
    PreconditionFailure,
    BadRequest,
    RequestInfo,
    ResourceInfo,
    Help,
    LocalizedMessage
);

/// At most one of each standard detail, with builders in `tonic-types`' names
/// (`ErrorDetails::with_bad_request_violation(..)`, `.add_bad_request_violation(..)`,
/// `.set_retry_info(..)`, ...) and public fields to read. Reading a status keeps the last of
/// each type that appears more than once; [`Status::get_error_details_vec`] keeps them all.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ErrorDetails {
    /// [`ErrorInfo`].
    pub error_info: Option<ErrorInfo>,
    /// [`RetryInfo`].
    pub retry_info: Option<RetryInfo>,
    /// [`DebugInfo`].
    pub debug_info: Option<DebugInfo>,
    /// [`QuotaFailure`].
    pub quota_failure: Option<QuotaFailure>,
    /// [`PreconditionFailure`].
    pub precondition_failure: Option<PreconditionFailure>,
    /// [`BadRequest`].
    pub bad_request: Option<BadRequest>,
    /// [`RequestInfo`].
    pub request_info: Option<RequestInfo>,
    /// [`ResourceInfo`].
    pub resource_info: Option<ResourceInfo>,
    /// [`Help`].
    pub help: Option<Help>,
    /// [`LocalizedMessage`].
    pub localized_message: Option<LocalizedMessage>,
}

fn retry_delay(d: Option<Duration>) -> Option<prost_types::Duration> {
    // A delay past prost's range (about 292 billion years) saturates.
    d.map(|d| {
        prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
            seconds: i64::MAX,
            nanos: 999_999_999,
        })
    })
}

impl ErrorDetails {
    /// No details.
    pub fn new() -> ErrorDetails {
        ErrorDetails::default()
    }

    /// Details with an [`ErrorInfo`].
    pub fn with_error_info(
        reason: impl Into<String>,
        domain: impl Into<String>,
        metadata: impl IntoIterator<Item = (String, String)>,
    ) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.set_error_info(reason, domain, metadata);
        d
    }

    /// Details with a [`RetryInfo`] (`None`: no delay given).
    pub fn with_retry_info(retry_delay: Option<Duration>) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.set_retry_info(retry_delay);
        d
    }

    /// Details with a [`DebugInfo`].
    pub fn with_debug_info(
        stack_entries: impl IntoIterator<Item = String>,
        detail: impl Into<String>,
    ) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.set_debug_info(stack_entries, detail);
        d
    }

    /// Details with a [`QuotaFailure`] of these violations.
    pub fn with_quota_failure(
        violations: impl IntoIterator<Item = QuotaViolation>,
    ) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.set_quota_failure(violations);
        d
    }

    /// Details with a [`QuotaFailure`] of one violation.
    pub fn with_quota_failure_violation(
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.add_quota_failure_violation(subject, description);
        d
    }

    /// Details with a [`PreconditionFailure`] of these violations.
    pub fn with_precondition_failure(
        violations: impl IntoIterator<Item = PreconditionViolation>,
    ) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.set_precondition_failure(violations);
        d
    }

    /// Details with a [`PreconditionFailure`] of one violation.
    pub fn with_precondition_failure_violation(
        violation_type: impl Into<String>,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.add_precondition_failure_violation(violation_type, subject, description);
        d
    }

    /// Details with a [`BadRequest`] of these violations.
    pub fn with_bad_request(violations: impl IntoIterator<Item = FieldViolation>) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.set_bad_request(violations);
        d
    }

    /// Details with a [`BadRequest`] of one violation.
    pub fn with_bad_request_violation(
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.add_bad_request_violation(field, description);
        d
    }

    /// Details with a [`RequestInfo`].
    pub fn with_request_info(
        request_id: impl Into<String>,
        serving_data: impl Into<String>,
    ) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.set_request_info(request_id, serving_data);
        d
    }

    /// Details with a [`ResourceInfo`].
    pub fn with_resource_info(
        resource_type: impl Into<String>,
        resource_name: impl Into<String>,
        owner: impl Into<String>,
        description: impl Into<String>,
    ) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.set_resource_info(resource_type, resource_name, owner, description);
        d
    }

    /// Details with a [`Help`] of these links.
    pub fn with_help(links: impl IntoIterator<Item = HelpLink>) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.set_help(links);
        d
    }

    /// Details with a [`Help`] of one link.
    pub fn with_help_link(description: impl Into<String>, url: impl Into<String>) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.add_help_link(description, url);
        d
    }

    /// Details with a [`LocalizedMessage`].
    pub fn with_localized_message(
        locale: impl Into<String>,
        message: impl Into<String>,
    ) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        d.set_localized_message(locale, message);
        d
    }

    /// Sets the [`ErrorInfo`].
    pub fn set_error_info(
        &mut self,
        reason: impl Into<String>,
        domain: impl Into<String>,
        metadata: impl IntoIterator<Item = (String, String)>,
    ) -> &mut Self {
        self.error_info = Some(ErrorInfo {
            reason: reason.into(),
            domain: domain.into(),
            metadata: metadata.into_iter().collect(),
        });
        self
    }

    /// Sets the [`RetryInfo`].
    pub fn set_retry_info(&mut self, retry_delay: Option<Duration>) -> &mut Self {
        self.retry_info = Some(RetryInfo {
            retry_delay: self::retry_delay(retry_delay),
        });
        self
    }

    /// Sets the [`DebugInfo`].
    pub fn set_debug_info(
        &mut self,
        stack_entries: impl IntoIterator<Item = String>,
        detail: impl Into<String>,
    ) -> &mut Self {
        self.debug_info = Some(DebugInfo {
            stack_entries: stack_entries.into_iter().collect(),
            detail: detail.into(),
        });
        self
    }

    /// Sets the [`QuotaFailure`] to these violations.
    pub fn set_quota_failure(
        &mut self,
        violations: impl IntoIterator<Item = QuotaViolation>,
    ) -> &mut Self {
        self.quota_failure = Some(QuotaFailure {
            violations: violations.into_iter().collect(),
        });
        self
    }

    /// Adds a violation to the [`QuotaFailure`] (made when absent).
    pub fn add_quota_failure_violation(
        &mut self,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> &mut Self {
        self.quota_failure
            .get_or_insert_with(QuotaFailure::default)
            .violations
            .push(QuotaViolation {
                subject: subject.into(),
                description: description.into(),
            });
        self
    }

    /// Whether the [`QuotaFailure`] has violations.
    pub fn has_quota_failure_violations(&self) -> bool {
        self.quota_failure
            .as_ref()
            .is_some_and(|q| !q.violations.is_empty())
    }

    /// Sets the [`PreconditionFailure`] to these violations.
    pub fn set_precondition_failure(
        &mut self,
        violations: impl IntoIterator<Item = PreconditionViolation>,
    ) -> &mut Self {
        self.precondition_failure = Some(PreconditionFailure {
            violations: violations.into_iter().collect(),
        });
        self
    }

    /// Adds a violation to the [`PreconditionFailure`] (made when absent).
    pub fn add_precondition_failure_violation(
        &mut self,
        violation_type: impl Into<String>,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> &mut Self {
        self.precondition_failure
            .get_or_insert_with(PreconditionFailure::default)
            .violations
            .push(PreconditionViolation {
                r#type: violation_type.into(),
                subject: subject.into(),
                description: description.into(),
            });
        self
    }

    /// Whether the [`PreconditionFailure`] has violations.
    pub fn has_precondition_failure_violations(&self) -> bool {
        self.precondition_failure
            .as_ref()
            .is_some_and(|p| !p.violations.is_empty())
    }

    /// Sets the [`BadRequest`] to these violations.
    pub fn set_bad_request(
        &mut self,
        violations: impl IntoIterator<Item = FieldViolation>,
    ) -> &mut Self {
        self.bad_request = Some(BadRequest {
            field_violations: violations.into_iter().collect(),
        });
        self
    }

    /// Adds a field violation to the [`BadRequest`] (made when absent).
    pub fn add_bad_request_violation(
        &mut self,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> &mut Self {
        self.bad_request
            .get_or_insert_with(BadRequest::default)
            .field_violations
            .push(FieldViolation {
                field: field.into(),
                description: description.into(),
                ..FieldViolation::default()
            });
        self
    }

    /// Whether the [`BadRequest`] has field violations.
    pub fn has_bad_request_violations(&self) -> bool {
        self.bad_request
            .as_ref()
            .is_some_and(|b| !b.field_violations.is_empty())
    }

    /// Sets the [`RequestInfo`].
    pub fn set_request_info(
        &mut self,
        request_id: impl Into<String>,
        serving_data: impl Into<String>,
    ) -> &mut Self {
        self.request_info = Some(RequestInfo {
            request_id: request_id.into(),
            serving_data: serving_data.into(),
        });
        self
    }

    /// Sets the [`ResourceInfo`].
    pub fn set_resource_info(
        &mut self,
        resource_type: impl Into<String>,
        resource_name: impl Into<String>,
        owner: impl Into<String>,
        description: impl Into<String>,
    ) -> &mut Self {
        self.resource_info = Some(ResourceInfo {
            resource_type: resource_type.into(),
            resource_name: resource_name.into(),
            owner: owner.into(),
            description: description.into(),
        });
        self
    }

    /// Sets the [`Help`] to these links.
    pub fn set_help(&mut self, links: impl IntoIterator<Item = HelpLink>) -> &mut Self {
        self.help = Some(Help {
            links: links.into_iter().collect(),
        });
        self
    }

    /// Adds a link to the [`Help`] (made when absent).
    pub fn add_help_link(
        &mut self,
        description: impl Into<String>,
        url: impl Into<String>,
    ) -> &mut Self {
        self.help
            .get_or_insert_with(Help::default)
            .links
            .push(HelpLink {
                description: description.into(),
                url: url.into(),
            });
        self
    }

    /// Sets the [`LocalizedMessage`].
    pub fn set_localized_message(
        &mut self,
        locale: impl Into<String>,
        message: impl Into<String>,
    ) -> &mut Self {
        self.localized_message = Some(LocalizedMessage {
            locale: locale.into(),
            message: message.into(),
        });
        self
    }

    /// The [`ErrorInfo`], if set (tonic-types' accessor name; the field is public too).
    pub fn error_info(&self) -> Option<&ErrorInfo> {
        self.error_info.as_ref()
    }

    /// The [`RetryInfo`], if set.
    pub fn retry_info(&self) -> Option<&RetryInfo> {
        self.retry_info.as_ref()
    }

    /// The [`DebugInfo`], if set.
    pub fn debug_info(&self) -> Option<&DebugInfo> {
        self.debug_info.as_ref()
    }

    /// The [`QuotaFailure`], if set.
    pub fn quota_failure(&self) -> Option<&QuotaFailure> {
        self.quota_failure.as_ref()
    }

    /// The [`PreconditionFailure`], if set.
    pub fn precondition_failure(&self) -> Option<&PreconditionFailure> {
        self.precondition_failure.as_ref()
    }

    /// The [`BadRequest`], if set.
    pub fn bad_request(&self) -> Option<&BadRequest> {
        self.bad_request.as_ref()
    }

    /// The [`RequestInfo`], if set.
    pub fn request_info(&self) -> Option<&RequestInfo> {
        self.request_info.as_ref()
    }

    /// The [`ResourceInfo`], if set.
    pub fn resource_info(&self) -> Option<&ResourceInfo> {
        self.resource_info.as_ref()
    }

    /// The [`Help`], if set.
    pub fn help(&self) -> Option<&Help> {
        self.help.as_ref()
    }

    /// The [`LocalizedMessage`], if set.
    pub fn localized_message(&self) -> Option<&LocalizedMessage> {
        self.localized_message.as_ref()
    }

    /// Whether no detail is set.
    pub fn is_empty(&self) -> bool {
        self == &ErrorDetails::default()
    }

    /// The details in the order of this struct's fields (the order tonic-types writes them).
    pub fn to_vec(&self) -> Vec<ErrorDetail> {
        let mut v = Vec::new();
        macro_rules! push {
            ($($field:ident => $variant:ident),*) => {$(
                if let Some(m) = &self.$field {
                    v.push(ErrorDetail::$variant(m.clone()));
                }
            )*};
        }
        push!(
            error_info => ErrorInfo,
            retry_info => RetryInfo,
            debug_info => DebugInfo,
            quota_failure => QuotaFailure,
            precondition_failure => PreconditionFailure,
            bad_request => BadRequest,
            request_info => RequestInfo,
            resource_info => ResourceInfo,
            help => Help,
            localized_message => LocalizedMessage
        );
        v
    }

    fn put(&mut self, d: ErrorDetail) {
        match d {
            ErrorDetail::ErrorInfo(m) => self.error_info = Some(m),
            ErrorDetail::RetryInfo(m) => self.retry_info = Some(m),
            ErrorDetail::DebugInfo(m) => self.debug_info = Some(m),
            ErrorDetail::QuotaFailure(m) => self.quota_failure = Some(m),
            ErrorDetail::PreconditionFailure(m) => self.precondition_failure = Some(m),
            ErrorDetail::BadRequest(m) => self.bad_request = Some(m),
            ErrorDetail::RequestInfo(m) => self.request_info = Some(m),
            ErrorDetail::ResourceInfo(m) => self.resource_info = Some(m),
            ErrorDetail::Help(m) => self.help = Some(m),
            ErrorDetail::LocalizedMessage(m) => self.localized_message = Some(m),
        }
    }
}

impl FromIterator<ErrorDetail> for ErrorDetails {
    fn from_iter<I: IntoIterator<Item = ErrorDetail>>(iter: I) -> ErrorDetails {
        let mut d = ErrorDetails::new();
        for e in iter {
            d.put(e);
        }
        d
    }
}

/// The `google.rpc.Status` of `code`, `message` and `details`, encoded.
fn encode_status(code: Code, message: &str, details: impl IntoIterator<Item = Any>) -> Bytes {
    RpcStatus {
        code: code.as_i32(),
        message: message.to_owned(),
        details: details.into_iter().collect(),
    }
    .encode_to_vec()
    .into()
}

impl Status {
    /// A status whose details are a `google.rpc.Status` holding `details` (tonic-types'
    /// `Status::with_error_details`).
    pub fn with_error_details(
        code: Code,
        message: impl Into<String>,
        details: ErrorDetails,
    ) -> Status {
        Status::with_error_details_vec(code, message, details.to_vec())
    }

    /// A status whose details are a `google.rpc.Status` holding `details` in this order
    /// (repeats allowed).
    pub fn with_error_details_vec(
        code: Code,
        message: impl Into<String>,
        details: impl IntoIterator<Item = ErrorDetail>,
    ) -> Status {
        let message = message.into();
        let bytes = encode_status(code, &message, details.into_iter().map(|d| d.to_any()));
        Status::new(code, message).with_details(bytes)
    }

    /// A status whose details are a `google.rpc.Status` holding any messages (standard or
    /// your own, e.g. `ErrorInfo::default().to_any()` or a `prost_types::Any` you packed).
    pub fn with_details_any(
        code: Code,
        message: impl Into<String>,
        details: impl IntoIterator<Item = Any>,
    ) -> Status {
        let message = message.into();
        let bytes = encode_status(code, &message, details);
        Status::new(code, message).with_details(bytes)
    }

    /// The details as a `google.rpc.Status`: `Ok(None)` when there are none, an error when
    /// they are not one.
    pub fn check_rpc_status(&self) -> Result<Option<RpcStatus>, prost::DecodeError> {
        if self.details().is_empty() {
            return Ok(None);
        }
        RpcStatus::decode(self.details().as_ref()).map(Some)
    }

    /// The standard details, in order: an error when the details bytes are not a
    /// `google.rpc.Status` or a standard detail in it does not decode. Messages of other types
    /// are skipped (read them from [`Status::check_rpc_status`]).
    pub fn check_error_details_vec(&self) -> Result<Vec<ErrorDetail>, prost::DecodeError> {
        let Some(status) = self.check_rpc_status()? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(status.details.len());
        for any in &status.details {
            if let Some(d) = ErrorDetail::from_any(any)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// The standard details, at most one of each type (see [`ErrorDetails`]): an error as
    /// [`Status::check_error_details_vec`] says.
    pub fn check_error_details(&self) -> Result<ErrorDetails, prost::DecodeError> {
        self.check_error_details_vec()
            .map(|v| v.into_iter().collect())
    }

    /// The standard details, in order; empty when there are none or they do not decode.
    pub fn get_error_details_vec(&self) -> Vec<ErrorDetail> {
        self.check_error_details_vec().unwrap_or_default()
    }

    /// The standard details (see [`ErrorDetails`]); empty when there are none or they do not
    /// decode.
    pub fn get_error_details(&self) -> ErrorDetails {
        self.check_error_details().unwrap_or_default()
    }

    /// The first detail of type `M` (a standard one, or any [`DetailMessage`] of your own);
    /// `None` when there is none or the details do not decode.
    pub fn get_details<M: DetailMessage>(&self) -> Option<M> {
        let status = self.check_rpc_status().ok()??;
        status
            .details
            .iter()
            .find_map(|any| M::from_any(any).ok().flatten())
    }

    /// The [`ErrorInfo`] detail, if any.
    pub fn get_details_error_info(&self) -> Option<ErrorInfo> {
        self.get_details()
    }

    /// The [`RetryInfo`] detail, if any.
    pub fn get_details_retry_info(&self) -> Option<RetryInfo> {
        self.get_details()
    }

    /// The [`DebugInfo`] detail, if any.
    pub fn get_details_debug_info(&self) -> Option<DebugInfo> {
        self.get_details()
    }

    /// The [`QuotaFailure`] detail, if any.
    pub fn get_details_quota_failure(&self) -> Option<QuotaFailure> {
        self.get_details()
    }

    /// The [`PreconditionFailure`] detail, if any.
    pub fn get_details_precondition_failure(&self) -> Option<PreconditionFailure> {
        self.get_details()
    }

    /// The [`BadRequest`] detail, if any.
    pub fn get_details_bad_request(&self) -> Option<BadRequest> {
        self.get_details()
    }

    /// The [`RequestInfo`] detail, if any.
    pub fn get_details_request_info(&self) -> Option<RequestInfo> {
        self.get_details()
    }

    /// The [`ResourceInfo`] detail, if any.
    pub fn get_details_resource_info(&self) -> Option<ResourceInfo> {
        self.get_details()
    }

    /// The [`Help`] detail, if any.
    pub fn get_details_help(&self) -> Option<Help> {
        self.get_details()
    }

    /// The [`LocalizedMessage`] detail, if any.
    pub fn get_details_localized_message(&self) -> Option<LocalizedMessage> {
        self.get_details()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every detail type: built, packed into a status, read back equal, by type and in order.
    fn round_trip(detail: ErrorDetail) {
        let status = Status::with_error_details_vec(Code::Aborted, "m", [detail.clone()]);
        assert_eq!(status.code(), Code::Aborted);
        assert_eq!(status.message(), "m");
        let rpc = status.check_rpc_status().unwrap().unwrap();
        assert_eq!((rpc.code, rpc.message.as_str()), (10, "m"));
        assert_eq!(rpc.details.len(), 1);
        assert!(rpc.details[0]
            .type_url
            .starts_with("type.googleapis.com/google.rpc."));
        assert_eq!(
            status.check_error_details_vec().unwrap(),
            vec![detail.clone()]
        );
        let details = status.get_error_details();
        assert_eq!(details.to_vec(), vec![detail]);
        let set = [
            details.error_info().is_some(),
            details.retry_info().is_some(),
            details.debug_info().is_some(),
            details.quota_failure().is_some(),
            details.precondition_failure().is_some(),
            details.bad_request().is_some(),
            details.request_info().is_some(),
            details.resource_info().is_some(),
            details.help().is_some(),
            details.localized_message().is_some(),
        ];
        assert_eq!(set.iter().filter(|s| **s).count(), 1);
    }

    #[test]
    fn error_info_round_trips() {
        let d = ErrorDetails::with_error_info(
            "QUOTA",
            "example.com",
            [("zone".to_owned(), "eu".to_owned())],
        );
        round_trip(ErrorDetail::ErrorInfo(d.error_info.clone().unwrap()));
        let s = Status::with_error_details(Code::ResourceExhausted, "x", d);
        let info = s.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("QUOTA", "example.com")
        );
        assert_eq!(info.metadata["zone"], "eu");
    }

    #[test]
    fn retry_info_round_trips() {
        let d = ErrorDetails::with_retry_info(Some(Duration::from_millis(1500)));
        round_trip(ErrorDetail::RetryInfo(d.retry_info.clone().unwrap()));
        let s = Status::with_error_details(Code::Unavailable, "x", d);
        let r = s.get_details_retry_info().unwrap();
        assert_eq!(r.retry_delay(), Some(Duration::from_millis(1500)));
        assert_eq!(
            r.retry_delay,
            Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        let none = ErrorDetails::with_retry_info(None);
        round_trip(ErrorDetail::RetryInfo(none.retry_info.unwrap()));
    }

    #[test]
    fn debug_info_round_trips() {
        let d = ErrorDetails::with_debug_info(["a.rs:1".to_owned(), "b.rs:2".to_owned()], "boom");
        round_trip(ErrorDetail::DebugInfo(d.debug_info.clone().unwrap()));
        let s = Status::with_error_details(Code::Internal, "x", d);
        assert_eq!(s.get_details_debug_info().unwrap().stack_entries.len(), 2);
    }

    #[test]
    fn quota_failure_round_trips() {
        let mut d = ErrorDetails::with_quota_failure_violation("clientip:1.2.3.4", "daily limit");
        d.add_quota_failure_violation("project:p", "per minute");
        assert!(d.has_quota_failure_violations());
        round_trip(ErrorDetail::QuotaFailure(d.quota_failure.clone().unwrap()));
        let s = Status::with_error_details(Code::ResourceExhausted, "x", d);
        assert_eq!(
            s.get_details_quota_failure().unwrap().violations[1].subject,
            "project:p"
        );
    }

    #[test]
    fn precondition_failure_round_trips() {
        let d = ErrorDetails::with_precondition_failure_violation("TOS", "user:1", "not accepted");
        assert!(d.has_precondition_failure_violations());
        round_trip(ErrorDetail::PreconditionFailure(
            d.precondition_failure.clone().unwrap(),
        ));
        let s = Status::with_error_details(Code::FailedPrecondition, "x", d);
        assert_eq!(
            s.get_details_precondition_failure().unwrap().violations[0].r#type,
            "TOS"
        );
    }

    #[test]
    fn bad_request_round_trips() {
        let mut d = ErrorDetails::with_bad_request_violation("name", "empty");
        d.add_bad_request_violation("age", "negative");
        assert!(d.has_bad_request_violations());
        let mut with_newer_fields = d.bad_request.clone().unwrap();
        with_newer_fields.field_violations[0].reason = "EMPTY".into();
        with_newer_fields.field_violations[0].localized_message = Some(LocalizedMessage {
            locale: "fr".into(),
            message: "vide".into(),
        });
        round_trip(ErrorDetail::BadRequest(with_newer_fields));
        let s = Status::with_error_details(Code::InvalidArgument, "x", d);
        let b = s.get_details_bad_request().unwrap();
        assert_eq!(b.field_violations[1].field, "age");
    }

    #[test]
    fn request_info_round_trips() {
        let d = ErrorDetails::with_request_info("req-1", "trace");
        round_trip(ErrorDetail::RequestInfo(d.request_info.clone().unwrap()));
        let s = Status::with_error_details(Code::Internal, "x", d);
        assert_eq!(s.get_details_request_info().unwrap().request_id, "req-1");
    }

    #[test]
    fn resource_info_round_trips() {
        let d = ErrorDetails::with_resource_info("table", "users", "team", "missing");
        round_trip(ErrorDetail::ResourceInfo(d.resource_info.clone().unwrap()));
        let s = Status::with_error_details(Code::NotFound, "x", d);
        assert_eq!(
            s.get_details_resource_info().unwrap().resource_name,
            "users"
        );
    }

    #[test]
    fn help_round_trips() {
        let mut d = ErrorDetails::with_help_link("docs", "https://example.com/docs");
        d.add_help_link("faq", "https://example.com/faq");
        round_trip(ErrorDetail::Help(d.help.clone().unwrap()));
        let s = Status::with_error_details(Code::Unknown, "x", d);
        assert_eq!(
            s.get_details_help().unwrap().links[1].url,
            "https://example.com/faq"
        );
    }

    #[test]
    fn localized_message_round_trips() {
        let d = ErrorDetails::with_localized_message("de-DE", "Fehler");
        round_trip(ErrorDetail::LocalizedMessage(
            d.localized_message.clone().unwrap(),
        ));
        let s = Status::with_error_details(Code::Unknown, "x", d);
        assert_eq!(s.get_details_localized_message().unwrap().message, "Fehler");
    }

    #[test]
    fn all_together_in_order_with_a_foreign_any() {
        let mut d = ErrorDetails::with_bad_request_violation("f", "d");
        d.set_retry_info(Some(Duration::from_secs(1)))
            .set_request_info("r", "s")
            .set_help([HelpLink {
                description: "h".into(),
                url: "u".into(),
            }])
            .set_localized_message("en", "m")
            .set_error_info("R", "D", [])
            .set_debug_info([], "dbg")
            .set_quota_failure([])
            .set_precondition_failure([])
            .set_resource_info("t", "n", "o", "d");
        let all = d.to_vec();
        assert_eq!(all.len(), 10);
        let foreign = Any {
            type_url: "type.googleapis.com/my.Thing".into(),
            value: vec![1, 2, 3],
        };
        let anys: Vec<Any> = std::iter::once(foreign.clone())
            .chain(all.iter().map(ErrorDetail::to_any))
            .collect();
        let s = Status::with_details_any(Code::Internal, "all", anys);
        assert_eq!(s.check_error_details_vec().unwrap(), all);
        assert_eq!(s.get_error_details(), d);
        assert_eq!(s.check_rpc_status().unwrap().unwrap().details[0], foreign);
    }

    #[test]
    fn no_details_and_bad_details() {
        let s = Status::internal("plain");
        assert!(s.check_rpc_status().unwrap().is_none());
        assert!(s.get_error_details().is_empty());
        assert!(s.get_details_bad_request().is_none());
        let junk = Status::internal("junk").with_details(Bytes::from_static(b"\xff\xff\xff"));
        assert!(junk.check_error_details().is_err());
        assert!(junk.get_error_details().is_empty());
        assert!(junk.get_details_bad_request().is_none());
        // A standard type URL over bytes that are not that message.
        let lying = Status::with_details_any(
            Code::Internal,
            "lying",
            [Any {
                type_url: BadRequest::type_url(),
                value: vec![0x0a, 0xff],
            }],
        );
        assert!(lying.check_error_details_vec().is_err());
        assert!(lying.get_details_bad_request().is_none());
    }
}
