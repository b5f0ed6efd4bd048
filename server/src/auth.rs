//! Bearer-token authentication: a tower layer in front of every service.
//!
//! With no token configured it lets everything through. Otherwise a call needs
//! `authorization: Bearer <token>` with a user or an admin token (else
//! `UNAUTHENTICATED`); the admin RPCs ([`ADMIN_RPCS`]) need an admin token (a user
//! token gets `PERMISSION_DENIED`). Health checks and reflection stay open, for load
//! balancers and probes. Tokens are compared in constant time, every configured token
//! each time.

use crate::config::Auth;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use subtle::{Choice, ConstantTimeEq};
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

/// Paths of the RPCs that need an admin token.
pub const ADMIN_RPCS: [&str; 8] = [
    "/marquee.v1.ModelService/LoadModel",
    "/marquee.v1.ModelService/UnloadModel",
    "/marquee.v1.RetrievalService/DeleteCollection",
    "/marquee.v1.RetrievalService/RepairCollection",
    "/marquee.v1.RetrievalService/ReembedCollection",
    "/marquee.v1.TrainingService/FineTune",
    "/marquee.v1.GenerationService/LoadAdapter",
    "/marquee.v1.GenerationService/UnloadAdapter",
];

/// Path prefixes open without a token.
const OPEN_PREFIXES: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Every RPC but the admin ones.
    User,
    /// Every RPC.
    Admin,
}

/// The configured tokens.
#[derive(Default)]
pub struct Tokens {
    user: Vec<Vec<u8>>,
    admin: Vec<Vec<u8>>,
}

/// Tokens of a file: one per line, blank lines and `#` comments skipped.
fn read_token_file(path: &Path) -> Result<Vec<String>> {
    if path.as_os_str().is_empty() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

fn checked(tokens: Vec<String>, what: &str) -> Result<Vec<Vec<u8>>> {
    tokens
        .into_iter()
        .map(|t| {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                bail!("[auth]: {what} must be non-empty printable ASCII without spaces");
            }
            Ok(t.into_bytes())
        })
        .collect()
}

impl Tokens {
    /// The tokens of `[auth]`: the lists, then the files.
    pub fn load(auth: &Auth) -> Result<Self> {
        let mut user = auth.tokens.clone();
        user.extend(read_token_file(&auth.tokens_file)?);
        let mut admin = auth.admin_tokens.clone();
        admin.extend(read_token_file(&auth.admin_tokens_file)?);
        Ok(Self {
            user: checked(user, "tokens")?,
            admin: checked(admin, "admin tokens")?,
        })
    }

    /// Whether authentication is on.
    pub fn enabled(&self) -> bool {
        !self.user.is_empty() || !self.admin.is_empty()
    }

    /// The role of a presented token, comparing it with every token in constant time
    /// (only the lengths may show through timing).
    pub fn role(&self, presented: &[u8]) -> Option<Role> {
        let any = |list: &[Vec<u8>]| {
            list.iter().fold(Choice::from(0), |hit, t| {
                hit | t.as_slice().ct_eq(presented)
            })
        };
        let (admin, user) = (any(&self.admin), any(&self.user));
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(user) {
            Some(Role::User)
        } else {
            None
        }
    }

    /// Whether a request with these headers may go on, `needs_admin` for the admin
    /// calls. Shared by the gRPC layer and the HTTP API.
    pub fn authorize(&self, headers: &http::HeaderMap, needs_admin: bool) -> Result<(), Denied> {
        if !self.enabled() {
            return Ok(());
        }
        let value = headers
            .get(http::header::AUTHORIZATION)
            .ok_or(Denied::Missing)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(Denied::Malformed)?;
        match self.role(token.as_bytes()) {
            None => Err(Denied::Invalid),
            Some(Role::User) if needs_admin => Err(Denied::NeedsAdmin),
            Some(_) => Ok(()),
        }
    }

    /// Whether a call to `path` with these headers may go on.
    pub fn check(&self, path: &str, headers: &http::HeaderMap) -> Result<(), Status> {
        if OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Ok(());
        }
        self.authorize(headers, ADMIN_RPCS.contains(&path))
            .map_err(|denied| match denied {
                Denied::Missing => Status::unauthenticated(
                    "missing credentials: send the metadata `authorization: Bearer <token>`",
                ),
                Denied::Malformed => {
                    Status::unauthenticated("the authorization metadata is not `Bearer <token>`")
                }
                Denied::Invalid => Status::unauthenticated("invalid token"),
                Denied::NeedsAdmin => Status::permission_denied(format!(
                    "{} needs an admin token",
                    path.trim_start_matches('/')
                )),
            })
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No `authorization` header.
    Missing,
    /// An `authorization` header that is not `Bearer <token>`.
    Malformed,
    /// A token that is not configured.
    Invalid,
    /// A user token on an admin call.
    NeedsAdmin,
}

/// The layer checking tokens.
#[derive(Clone)]
pub struct AuthLayer {
    tokens: Arc<Tokens>,
}

impl AuthLayer {
    /// A layer checking `tokens`.
    pub fn new(tokens: Arc<Tokens>) -> Self {
        Self { tokens }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            tokens: Arc::clone(&self.tokens),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    tokens: Arc<Tokens>,
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        futures::future::Ready<Result<http::Response<Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        match self.tokens.check(path, request.headers()) {
            Ok(()) => futures::future::Either::Left(self.inner.call(request)),
            Err(status) => {
                crate::metrics::record_rejected(path, status.code());
                tracing::debug!(path, code = ?status.code(), "call refused by authentication");
                futures::future::Either::Right(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::load(&Auth {
            tokens: vec!["user-token".into()],
            admin_tokens: vec!["admin-token".into()],
            ..Default::default()
        })
        .unwrap()
    }

    fn headers(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn roles_and_statuses() {
        let t = tokens();
        let embed = "/marquee.v1.EmbeddingService/Embed";
        let load = "/marquee.v1.ModelService/LoadModel";
        let code = |path, h: &http::HeaderMap| t.check(path, h).err().map(|s| s.code());
        assert_eq!(
            code(embed, &http::HeaderMap::new()),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(embed, &headers("Bearer nope")),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(embed, &headers("Basic user-token")),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(code(embed, &headers("Bearer user-token")), None);
        assert_eq!(code(embed, &headers("bearer admin-token")), None);
        assert_eq!(
            code(load, &headers("Bearer user-token")),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(code(load, &headers("Bearer admin-token")), None);
        // Probes and reflection need no token.
        assert_eq!(
            code("/grpc.health.v1.Health/Check", &http::HeaderMap::new()),
            None
        );
        assert_eq!(
            code(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                &http::HeaderMap::new()
            ),
            None
        );
        // A prefix or extension of a token is not the token.
        assert_eq!(t.role(b"user-toke"), None);
        assert_eq!(t.role(b"user-token2"), None);
    }

    #[test]
    fn token_files_and_off_without_tokens() {
        assert!(!Tokens::load(&Auth::default()).unwrap().enabled());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin");
        std::fs::write(&file, "# rotated monthly\n\n  from-file  \n").unwrap();
        let t = Tokens::load(&Auth {
            admin_tokens_file: file,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.role(b"from-file"), Some(Role::Admin));
        let spaced = Auth {
            tokens: vec!["two words".into()],
            ..Default::default()
        };
        assert!(Tokens::load(&spaced).is_err());
    }
}
