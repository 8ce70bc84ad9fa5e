//! Client-visible errors and the one table that maps them to gRPC.
//!
//! etcd clients do not branch on gRPC codes: clientv3 looks the *message*
//! up in a string table (`rpctypes.errStringToError`) to recover a typed
//! error. A message that differs by one byte becomes an untyped error and
//! breaks `errors.Is(err, rpctypes.ErrCompacted)` in Kubernetes and
//! operators. So every message here is etcd's, byte for byte, and the code
//! is the one etcd v3.5 sends.

use thiserror::Error;

/// gRPC status codes, numbered as in the gRPC spec. `core` may not import
/// tonic, so the edge converts with `tonic::Code::from(code as i32)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum GrpcCode {
    /// Not an error.
    Ok = 0,
    /// The operation was cancelled.
    Cancelled = 1,
    /// Unknown error.
    Unknown = 2,
    /// The client sent an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired.
    DeadlineExceeded = 4,
    /// Some entity was not found.
    NotFound = 5,
    /// Some entity already exists.
    AlreadyExists = 6,
    /// The caller lacks permission.
    PermissionDenied = 7,
    /// A resource is exhausted.
    ResourceExhausted = 8,
    /// The system is not in the state the operation needs.
    FailedPrecondition = 9,
    /// The operation was aborted.
    Aborted = 10,
    /// Out of the valid range.
    OutOfRange = 11,
    /// Not implemented.
    Unimplemented = 12,
    /// Internal error.
    Internal = 13,
    /// The service is unavailable.
    Unavailable = 14,
    /// Unrecoverable data loss.
    DataLoss = 15,
    /// Not authenticated.
    Unauthenticated = 16,
}

/// Errors of the KV family (Range, Put, DeleteRange, Txn, Compact) that a
/// client can see. Display is etcd's exact message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
pub enum KvError {
    /// A request key was empty.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a missing key, or an empty `RequestOp`.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A txn with more compares or ops than `--max-txn-ops`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// Two writes of one key (or a put inside a deleted range) in one txn.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A read or compaction below the compaction point.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read or compaction above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    /// A put that attaches a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A request larger than `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// The store is over its space quota.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// Applied index lags committed index too far (backpressure).
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// LeaseGrant with an id already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// LeaseGrant with a TTL above etcd's `MaxLeaseTTL`.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
}

impl KvError {
    /// The gRPC code etcd v3.5 sends with this error (`toGRPCErrorMap`).
    #[must_use]
    pub fn code(self) -> GrpcCode {
        match self {
            KvError::EmptyKey
            | KvError::KeyNotFound
            | KvError::ValueProvided
            | KvError::LeaseProvided
            | KvError::TooManyOps
            | KvError::DuplicateKey
            | KvError::RequestTooLarge => GrpcCode::InvalidArgument,
            KvError::Compacted | KvError::FutureRev => GrpcCode::OutOfRange,
            KvError::LeaseNotFound => GrpcCode::NotFound,
            KvError::LeaseExists => GrpcCode::FailedPrecondition,
            KvError::LeaseTtlTooLarge => GrpcCode::OutOfRange,
            KvError::NoSpace | KvError::TooManyRequests => GrpcCode::ResourceExhausted,
        }
    }

    /// etcd's message, as a static string.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            KvError::EmptyKey => "etcdserver: key is not provided",
            KvError::KeyNotFound => "etcdserver: key not found",
            KvError::ValueProvided => "etcdserver: value is provided",
            KvError::LeaseProvided => "etcdserver: lease is provided",
            KvError::TooManyOps => "etcdserver: too many operations in txn request",
            KvError::DuplicateKey => "etcdserver: duplicate key given in txn request",
            KvError::Compacted => "etcdserver: mvcc: required revision has been compacted",
            KvError::FutureRev => "etcdserver: mvcc: required revision is a future revision",
            KvError::LeaseNotFound => "etcdserver: requested lease not found",
            KvError::LeaseExists => "etcdserver: lease already exists",
            KvError::LeaseTtlTooLarge => "etcdserver: too large lease TTL",
            KvError::RequestTooLarge => "etcdserver: request is too large",
            KvError::NoSpace => "etcdserver: mvcc: database space exceeded",
            KvError::TooManyRequests => "etcdserver: too many requests",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [KvError; 12] = [
        KvError::EmptyKey,
        KvError::KeyNotFound,
        KvError::ValueProvided,
        KvError::LeaseProvided,
        KvError::TooManyOps,
        KvError::DuplicateKey,
        KvError::Compacted,
        KvError::FutureRev,
        KvError::LeaseNotFound,
        KvError::RequestTooLarge,
        KvError::NoSpace,
        KvError::TooManyRequests,
    ];

    #[test]
    fn display_is_the_message() {
        for e in ALL {
            assert_eq!(e.to_string(), e.message());
            assert!(e.message().starts_with("etcdserver: "));
        }
    }

    #[test]
    fn codes_match_etcd() {
        assert_eq!(KvError::Compacted.code() as i32, 11);
        assert_eq!(KvError::FutureRev.code(), GrpcCode::OutOfRange);
        assert_eq!(KvError::LeaseNotFound.code() as i32, 5);
        assert_eq!(KvError::EmptyKey.code() as i32, 3);
        assert_eq!(KvError::TooManyRequests.code() as i32, 8);
        assert_eq!(
            KvError::Compacted.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
    }
}
