//! API errors: a stable code (`quorate_core::ErrorCode`) plus a message that
//! says what to do. They map to gRPC status codes in one place, here.
//! Denials are not errors and never pass through this type.

use quorate_core::ErrorCode;
use quorate_proto::CODE_METADATA_KEY;
use tonic::{Code, Status};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidArgument, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    /// The gRPC code for this error's stable code.
    pub fn grpc_code(&self) -> Code {
        match self.code {
            ErrorCode::InvalidArgument | ErrorCode::InvalidPolicy => Code::InvalidArgument,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::FailedPrecondition => Code::FailedPrecondition,
            ErrorCode::PermissionDenied => Code::PermissionDenied,
            ErrorCode::ResourceExhausted => Code::ResourceExhausted,
            ErrorCode::Unavailable | ErrorCode::Contained => Code::Unavailable,
            ErrorCode::CommitTimeout => Code::DeadlineExceeded,
            _ => Code::Internal,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let mut s = Status::new(e.grpc_code(), e.message.clone());
        if let Ok(v) = e.code.code().parse() {
            s.metadata_mut().insert(CODE_METADATA_KEY, v);
        }
        s
    }
}

/// Recovers an ApiError from a Status received from another node.
pub fn from_status(s: &Status) -> ApiError {
    let code = s
        .metadata()
        .get(CODE_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| {
            [
                ErrorCode::InvalidArgument,
                ErrorCode::InvalidPolicy,
                ErrorCode::NotFound,
                ErrorCode::FailedPrecondition,
                ErrorCode::PermissionDenied,
                ErrorCode::ResourceExhausted,
                ErrorCode::Unavailable,
                ErrorCode::CommitTimeout,
                ErrorCode::Contained,
                ErrorCode::Internal,
            ]
            .into_iter()
            .find(|k| k.code() == c)
        })
        .unwrap_or(match s.code() {
            Code::InvalidArgument => ErrorCode::InvalidArgument,
            Code::NotFound => ErrorCode::NotFound,
            Code::DeadlineExceeded => ErrorCode::CommitTimeout,
            Code::Unavailable => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        });
    ApiError::new(code, s.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_survive_a_round_trip_through_status() {
        for code in [
            ErrorCode::InvalidArgument,
            ErrorCode::InvalidPolicy,
            ErrorCode::NotFound,
            ErrorCode::Unavailable,
            ErrorCode::CommitTimeout,
            ErrorCode::Contained,
            ErrorCode::Internal,
        ] {
            let e = ApiError::new(code, "m");
            let s: Status = e.clone().into();
            assert_eq!(from_status(&s), e);
        }
    }
}
