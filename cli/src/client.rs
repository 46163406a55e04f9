//! The HTTP side: talks to nginx, turns every failure into one line a person can act on.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

use crate::{credentials, stack, Context};

pub(crate) struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    email: String,
    /// The token came from `SHOPCTL_TOKEN`, not from a kept login.
    token_from_env: bool,
}

/// A token for scripts and CI, used instead of the kept login when set and not empty.
pub(crate) const TOKEN_VAR: &str = "SHOPCTL_TOKEN";

/// An answer the shop gave that was not a success.
#[derive(Debug, thiserror::Error)]
#[error("{message} (HTTP {status}, {code})")]
pub struct ApiError {
    pub(crate) status: u16,
    pub code: String,
    pub(crate) message: String,
}

/// No login that works: none is kept, the kept one is past its expiry, or the shop refused it
/// (expired or revoked: logout elsewhere, password change, account disabled). Exit code 4, as
/// `gh` gives, so scripts can tell "log in first" from other failures.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginNeeded {
    #[error("not logged in to {url}: run `shopctl login EMAIL`")]
    None { url: String },
    #[error("your login to {url} has expired: run `shopctl login {email}`")]
    Expired { url: String, email: String },
    #[error("your login to {url} is no longer valid (expired or revoked): run `shopctl login {email}`")]
    Refused { url: String, email: String },
    #[error("{TOKEN_VAR} was refused by {url} (expired, revoked, or not a token of this shop)")]
    EnvTokenRefused { url: String },
}

/// The gateway did not answer at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the shop at {url}: is the stack running? (scripts/up, or pass --url)")]
pub(crate) struct Unreachable {
    pub url: String,
}

/// The gateway answered over TLS with a certificate this client does not trust: issued by a CA
/// it does not know, expired, or for another name. Exit code 5: the stack runs, the trust does not.
#[derive(Debug, thiserror::Error)]
#[error(
    "the shop's certificate at {url} is not trusted: {problem}; pass --ca-file FILE (or SHOPCTL_CA_FILE) with the CA \
     that issued it, or fix the server's certificate"
)]
pub(crate) struct Untrusted {
    pub url: String,
    pub problem: String,
}

impl Client {
    pub fn new(ctx: &Context) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("shopctl/", env!("CARGO_PKG_VERSION")));
        for ca in private_cas(ctx)? {
            builder = builder.add_root_certificate(ca);
        }
        let http = builder.build().context("cannot set up HTTP")?;
        Ok(Self { base: stack::base_url(ctx), http, token: None, email: String::new(), token_from_env: false })
    }

    /// A client that sends `SHOPCTL_TOKEN` if it is set, else the kept login's token.
    pub(crate) fn logged_in(ctx: &Context) -> anyhow::Result<Self> {
        let mut c = Self::new(ctx)?;
        if let Some(token) = std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty()) {
            c.token = Some(token);
            c.token_from_env = true;
            return Ok(c);
        }
        let cred = credentials::get(&c.base)?.ok_or_else(|| LoginNeeded::None { url: c.base.clone() })?;
        if cred.expires_at <= now() {
            return Err(LoginNeeded::Expired { url: c.base, email: cred.email }.into());
        }
        c.token = Some(cred.access_token);
        c.email = cred.email;
        Ok(c)
    }

    /// A client that sends this token, whatever its age (logout revokes it).
    pub(crate) fn with_token(ctx: &Context, token: String, email: String) -> anyhow::Result<Self> {
        let mut c = Self::new(ctx)?;
        c.token = Some(token);
        c.email = email;
        Ok(c)
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The email of the kept login whose token this client sends; `None` for `SHOPCTL_TOKEN`
    /// or no token.
    pub(crate) fn kept_email(&self) -> Option<&str> {
        Some(self.email.as_str()).filter(|e| !e.is_empty() && !self.token_from_env && self.token.is_some())
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn send(&self, rb: RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
        let resp = rb.send().await.map_err(|e| -> anyhow::Error {
            if let Some(problem) = certificate_problem(&e) {
                Untrusted { url: self.base.clone(), problem }.into()
            } else if e.is_connect() || e.is_timeout() {
                Unreachable { url: self.base.clone() }.into()
            } else {
                anyhow::anyhow!("request to {} failed: {}", self.base, e.without_url())
            }
        })?;
        let status = resp.status();
        // How long the shop asks to wait (429 after too many failed logins, 503 while busy).
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = resp.bytes().await.context("reading the answer")?;
        let body: Value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        if status.is_success() {
            return Ok((status, body));
        }
        let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        let code = field("error").unwrap_or_else(|| "error".into());
        let mut message = field("message")
            .or_else(|| field("error_description"))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("request failed").to_lowercase());
        if let Some(secs) = retry_after.filter(|_| status == StatusCode::TOO_MANY_REQUESTS) {
            message.push_str(&format!("; try again in {secs} s"));
        }
        if status == StatusCode::UNAUTHORIZED && self.token_from_env {
            return Err(LoginNeeded::EnvTokenRefused { url: self.base.clone() }.into());
        }
        if status == StatusCode::UNAUTHORIZED && self.token.is_some() {
            let email = if self.email.is_empty() { "EMAIL".to_owned() } else { self.email.clone() };
            return Err(LoginNeeded::Refused { url: self.base.clone(), email }.into());
        }
        Err(ApiError { status: status.as_u16(), code, message }.into())
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.send(self.request(Method::GET, path)).await?.1)
    }

    pub(crate) async fn post_json(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> anyhow::Result<Value> {
        let mut rb = self.request(Method::POST, path).json(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        Ok(self.send(rb).await?.1)
    }

    /// [`Client::post_json`] that also says which success it was (201 created, 200 there already).
    pub(crate) async fn post_json_status(&self, path: &str, body: &Value) -> anyhow::Result<(StatusCode, Value)> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub(crate) async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<Value> {
        Ok(self.send(self.request(Method::POST, path).form(form)).await?.1)
    }
}

/// The CAs of `--ca-file` (every certificate in the PEM file), trusted besides the system's.
fn private_cas(ctx: &Context) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let Some(path) = &ctx.ca_file else { return Ok(Vec::new()) };
    let pem = std::fs::read(path).with_context(|| format!("cannot read --ca-file {}", path.display()))?;
    let cas = reqwest::Certificate::from_pem_bundle(&pem)
        .ok()
        .filter(|cas| !cas.is_empty())
        .with_context(|| format!("--ca-file {} holds no PEM certificate", path.display()))?;
    Ok(cas)
}

/// What is wrong with the server's certificate, if that is why the request failed: rustls's
/// verdict, found among the causes. An `io::Error` hides the error it wraps from `source()`, and
/// hyper's connector wraps tokio-rustls's `io::Error` in another, so those are opened by hand.
fn certificate_problem(e: &reqwest::Error) -> Option<String> {
    use rustls::CertificateError as C;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(mut err) = cause {
        cause = err.source();
        while let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            err = inner;
        }
        let Some(rustls::Error::InvalidCertificate(cert)) = err.downcast_ref::<rustls::Error>() else { continue };
        return Some(match cert {
            C::UnknownIssuer => "it is issued by a CA this client does not know".to_owned(),
            // A trusted CA has the issuer's name but did not sign it: another CA of that name.
            C::BadSignature => "its signature is not that of the trusted CA of its issuer's name".to_owned(),
            C::Expired | C::ExpiredContext { .. } => "it has expired".to_owned(),
            C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".to_owned(),
            C::NotValidForName | C::NotValidForNameContext { .. } => "it is not valid for this host name".to_owned(),
            other => format!("{other:?}"),
        });
    }
    None
}

pub use shopgate_core::time::unix_now as now;
